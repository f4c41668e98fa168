"""The idx format of MNIST's raw files (http://yann.lecun.com/exdb/mnist/): a big-endian
magic ``0x00 0x00 <type> <ndim>``, ``ndim`` big-endian uint32 sizes, then the values.
Only unsigned bytes (type ``0x08``) occur in MNIST, and only they are read or written."""

from __future__ import annotations

import struct
from typing import Optional

import numpy as np

from ..errors import DatasetError

_UBYTE = 0x08


class IdxError(DatasetError, ValueError):
    """The bytes are not a valid idx ubyte array; the text names the cause (callers add the fix)."""


def encode_idx(array: np.ndarray) -> bytes:
    """An array of any number of dimensions as idx ubyte bytes."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = struct.pack(f">HBB{array.ndim}I", 0, _UBYTE, array.ndim, *array.shape)
    return header + array.tobytes()


def decode_idx(data: bytes, *, ndim: Optional[int] = None) -> np.ndarray:
    """The uint8 array in ``data`` (a read-only view); ``ndim``: the number of dimensions expected."""
    if len(data) < 4:
        raise IdxError(f"truncated ({len(data)} bytes)")
    magic = struct.unpack(">I", data[:4])[0]
    zero, dtype_code, dims = struct.unpack(">HBB", data[:4])
    if zero != 0 or dtype_code != _UBYTE or dims < 1:
        raise IdxError(f"not an idx ubyte file (magic {magic:#x})")
    if ndim is not None and dims != ndim:
        raise IdxError(f"has {dims} dimensions, expected {ndim}")
    if len(data) < 4 + 4 * dims:
        raise IdxError(f"truncated ({len(data)} bytes)")
    shape = struct.unpack(f">{dims}I", data[4:4 + 4 * dims])
    body = np.frombuffer(data, np.uint8, offset=4 + 4 * dims)
    if body.size != int(np.prod(shape)):
        raise IdxError(f"header says {shape} but holds {body.size} values")
    return body.reshape(shape)


__all__ = ["IdxError", "encode_idx", "decode_idx"]
