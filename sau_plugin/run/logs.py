"""The run's log: records are buffered until the log folder exists (inputs are checked
before anything is written), then go to ``log/<timestamp>.log``; with ``console`` also to stderr."""

import logging
import logging.handlers
import sys
import time
from pathlib import Path
from typing import List, Optional

from ..config import cli

log = logging.getLogger("sau_plugin")
LOG_LEVELS = {name: getattr(logging, name.upper()) for name in cli.LOG_LEVELS}  # the --log_level choices


class LogSession:
    FORMAT = logging.Formatter("%(asctime)s [%(levelname)-8s] [%(name)s] %(message)s", "%Y-%m-%d:%H:%M:%S")

    def __init__(self, console: bool, level: str = "info"):
        self.buffer = logging.handlers.MemoryHandler(capacity=1 << 20, flushLevel=logging.CRITICAL + 1)
        self.handlers: List[logging.Handler] = [self.buffer]
        if console:
            stream = logging.StreamHandler(sys.stderr)
            stream.setFormatter(self.FORMAT)
            self.handlers.append(stream)
        self.level = log.level
        log.setLevel(LOG_LEVELS[level])
        for h in self.handlers:
            log.addHandler(h)
        self.file: Optional[Path] = None

    def to_file(self, log_dir: Path) -> Path:
        self.file = log_dir / (time.strftime("%Y_%m_%d_%H_%M_%S", time.localtime()) + ".log")
        handler = logging.FileHandler(self.file)
        handler.setFormatter(self.FORMAT)
        self.buffer.setTarget(handler)
        self.buffer.flush()
        log.removeHandler(self.buffer)
        log.addHandler(handler)
        self.handlers.append(handler)
        return self.file

    def close(self) -> None:
        for h in self.handlers:
            log.removeHandler(h)
            h.close()
        log.setLevel(self.level)
