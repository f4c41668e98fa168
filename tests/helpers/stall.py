"""Test helper (not collected): run ``defend`` and park it after a chosen batch so a test can
signal it there, through a callback of ``Unlearner.fit`` (no hook in the package).

    python tests/helpers/stall.py [--until-stop] EPOCH BATCH MARKER defend --result_file ... (any defend arguments)

EPOCH and BATCH are 1-based; MARKER is written once the run is parked. Parked for good (for
SIGKILL), or with ``--until-stop`` until another callback asks to stop (the preemption guard,
once SIGTERM / SIGINT came; at most a minute), so the run goes on as it would after that batch.
"""

import functools
import sys
import time
from pathlib import Path

from sau_plugin import cli
from sau_plugin.backdoorbench import defense
from sau_plugin.core import Callback


class StallAt(Callback):
    def __init__(self, epoch: int, batch: int, marker: str, until_stop: bool = False):
        self.epoch, self.batch, self.marker, self.until_stop = epoch, batch, Path(marker), until_stop

    def on_batch_end(self, u, epoch, batch, stats):
        if (epoch + 1, batch) == (self.epoch, self.batch):
            self.marker.write_text(f"{epoch + 1}:{batch}\n")
            deadline = time.monotonic() + 60
            while not (self.until_stop and (u._callbacks.should_stop(u) or time.monotonic() > deadline)):
                time.sleep(0.05)  # short steps: a signal handler runs between them


def main(argv):
    until_stop = argv[0] == "--until-stop"
    epoch, batch, marker, *defend = argv[1:] if until_stop else argv
    # `defend` as the command line runs it (errors, exit codes), with the callback added to its run
    defense.run_defense = functools.partial(defense.run_defense, callbacks=[StallAt(int(epoch), int(batch), marker,
                                                                                     until_stop)])
    return cli.main(defend)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
