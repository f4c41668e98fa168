"""Atomic file writes: a reader (or a table script) never sees half a file.

Each writer goes to a temporary file in the destination folder, is flushed and
fsynced, then renamed over the target (``os.replace`` is atomic on POSIX and Windows).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Callable, Iterator, Union

from .errors import OutputError

PathLike = Union[str, os.PathLike]


@contextlib.contextmanager
def atomic_path(target: PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``target``; on success it replaces ``target``."""
    target = Path(target)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    except OSError as exc:
        raise OutputError(f"cannot write in {str(target.parent)!r} ({exc.strerror}); choose a writable output folder") from None
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp_path, target)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def atomic_write_bytes(target: PathLike, data: bytes) -> None:
    with atomic_path(target) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(target: PathLike, text: str) -> None:
    atomic_write_bytes(target, text.encode("utf-8"))


def atomic_save(target: PathLike, save: Callable[[Path], None]) -> None:
    """``save(tmp_path)`` writes the file (e.g. ``lambda p: torch.save(obj, p)``)."""
    with atomic_path(target) as tmp:
        save(tmp)
