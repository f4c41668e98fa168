"""Test helper (not collected): run ``defend`` and park it after a chosen batch so a test can
SIGKILL it there, through a callback of ``Unlearner.fit`` (no hook in the package).

    python tests/stall.py EPOCH BATCH MARKER defend --result_file ... (any defend arguments)

EPOCH and BATCH are 1-based; MARKER is written once the run is parked.
"""

import sys
import time
from pathlib import Path

from sau_plugin.backdoorbench.defense import config_from_args, dataset_from_record, run_defense  # as `defend`
from sau_plugin.cli import build_parser
from sau_plugin.core import Callback


class StallAt(Callback):
    def __init__(self, epoch: int, batch: int, marker: str):
        self.epoch, self.batch, self.marker = epoch, batch, Path(marker)

    def on_batch_end(self, u, epoch, batch, stats):
        if (epoch + 1, batch) == (self.epoch, self.batch):
            self.marker.write_text(f"{epoch + 1}:{batch}\n")
            while True:
                time.sleep(1)


def main(argv):
    epoch, batch, marker, *defend = argv
    args = build_parser(defend).parse_args(defend)
    cfg, record = dataset_from_record(args, config_from_args(args))  # as `defend` does
    run_defense(cfg, progress=False, log_level=args.log_level, record=record,
                callbacks=[StallAt(int(epoch), int(batch), marker)])


if __name__ == "__main__":
    main(sys.argv[1:])
