"""The globals an untrusted pickle may name, per kind of file.

Found by pickling PIL images and numpy arrays with ``torch.save`` and listing the pickle's
GLOBAL opcodes:

* ``numpy._core.multiarray._reconstruct``, ``numpy.ndarray``, ``numpy.dtype`` (+ the
  concrete ``numpy.dtypes.*DType`` classes the pickle BUILDs), ``numpy._core.multiarray.scalar``
  (and their ``numpy.core`` names, written by NumPy 1.x);
* ``PIL.Image.Image`` and the ``*ImageFile`` classes an opened image pickles as. These
  names map to :class:`SafeImage`, which checks the pickled size against the pixel
  bytes before PIL allocates anything;
* torch's own list (:func:`torch_globals`), rebuilt for torch versions without it.

Least privilege: attack results and checkpoints (numpy RNG state) get numpy + PIL
(:func:`attack_allowlist`); ``defense_result.pt`` and ``info.pickle`` get torch's own list
only; CIFAR batches get numpy only (:func:`dataset_allowlist`).
"""

from __future__ import annotations

import codecs
import collections
import functools
import importlib
from typing import Any, Dict, List, Tuple

import numpy as np
import torch
from PIL import Image

from ..errors import RecordError

_PIXEL_BITS = {"1": 1, "L": 8, "P": 8, "I;16": 16, "I;16L": 16, "I;16B": 16, "LA": 16, "PA": 16, "La": 16,
               "RGB": 24, "YCbCr": 24, "LAB": 24, "HSV": 24, "RGBA": 32, "RGBa": 32, "RGBX": 32, "CMYK": 32,
               "I": 32, "F": 32}
_PIL_IMAGE_NAMES = ("PIL.Image.Image", "PIL.PngImagePlugin.PngImageFile", "PIL.JpegImagePlugin.JpegImageFile",
                    "PIL.PpmImagePlugin.PpmImageFile", "PIL.BmpImagePlugin.BmpImageFile",
                    "PIL.TiffImagePlugin.TiffImageFile", "PIL.WebPImagePlugin.WebPImageFile",
                    "PIL.GifImagePlugin.GifImageFile")


class SafeImage(Image.Image):
    """Stands in for every pickled PIL image class; validates before PIL allocates.

    PIL's ``__setstate__`` allocates ``size`` pixels before it notices missing data, so
    a flipped byte in a size field could ask for gigabytes; here the size must agree
    with the bytes actually present. Extra state of ``ImageFile`` subclasses (the
    original file name, JPEG layers) is ignored: nothing is re-opened from disk.
    """

    def __setstate__(self, state: Any) -> None:
        if not isinstance(state, (list, tuple)) or len(state) < 5:
            raise RecordError("a pickled image has malformed state")
        info, mode, size, palette, data = state[:5]
        ok = (isinstance(info, dict) and mode in _PIXEL_BITS and isinstance(size, (tuple, list)) and len(size) == 2
              and all(isinstance(v, int) and not isinstance(v, bool) and 0 <= v for v in size)
              and isinstance(data, (bytes, bytearray)) and (palette is None or isinstance(palette, (list, bytes))))
        if not ok:
            raise RecordError("a pickled image has malformed state (mode, size or pixel data)")
        w, h = size
        row_bytes = (w * _PIXEL_BITS[mode] + 7) // 8
        if row_bytes * h != len(data):
            raise RecordError(f"a pickled {mode} image of size {w}x{h} carries {len(data)} bytes of pixels, "
                              f"expected {row_bytes * h}")
        super().__setstate__([info, mode, tuple(size), palette, bytes(data)])


@functools.lru_cache(maxsize=1)
def numpy_globals() -> Dict[str, Any]:
    """Names numpy arrays, dtypes and scalars pickle as (NumPy 2 and 1.x spellings)."""
    multiarray = None
    for module in ("numpy._core.multiarray", "numpy.core.multiarray"):  # NumPy 2 first; 1.x has only the second
        try:
            multiarray = importlib.import_module(module)
            break
        except ImportError:
            continue
    names: Dict[str, Any] = {"numpy.ndarray": np.ndarray, "numpy.dtype": np.dtype}
    for core in ("numpy._core.multiarray", "numpy.core.multiarray"):  # a file may come from either NumPy
        names[f"{core}._reconstruct"] = multiarray._reconstruct
        names[f"{core}.scalar"] = multiarray.scalar
    # a pickled dtype is BUILT on its concrete class (NumPy >= 1.25 has numpy.dtypes)
    for t in ("?", "b", "B", "h", "H", "i", "I", "l", "L", "q", "Q", "e", "f", "d"):
        cls = type(np.dtype(t))
        if cls is not np.dtype:
            names[f"{cls.__module__}.{cls.__qualname__}"] = cls
    return names


@functools.lru_cache(maxsize=1)
def attack_allowlist() -> List[Tuple[Any, str]]:
    """(object, pickled name) pairs an attack result or checkpoint may name beyond torch's own."""
    pairs = [(obj, name) for name, obj in numpy_globals().items()]
    pairs += [(SafeImage, name) for name in _PIL_IMAGE_NAMES]
    return pairs


def allowed_global_names() -> List[str]:
    return sorted(name for _, name in attack_allowlist())


def dataset_allowlist() -> Dict[str, Any]:
    """A pickled dataset batch (CIFAR): numpy arrays, and bytes as protocol 2 writes them."""
    return {**numpy_globals(), "_codecs.encode": codecs.encode}


# The rebuild functions torch's own weights_only unpickler allows (torch/_weights_only_unpickler.py).
_TORCH_REBUILD_FUNCTIONS = ("_rebuild_parameter", "_rebuild_parameter_with_state", "_rebuild_qtensor", "_rebuild_tensor",
                            "_rebuild_tensor_v2", "_rebuild_tensor_v3", "_rebuild_sparse_tensor",
                            "_rebuild_meta_tensor_no_storage", "_rebuild_nested_tensor", "_rebuild_wrapper_subclass",
                            "_rebuild_device_tensor_from_numpy", "_rebuild_device_tensor_from_cpu_tensor")


@functools.lru_cache(maxsize=1)
def torch_globals() -> Dict[str, Any]:
    """The globals torch's ``weights_only`` unpickler allows, as far as this torch has them.

    The same rules as ``_get_allowed_globals`` in torch >= 2.x: containers, tensor and
    parameter classes, dtypes, quantization schemes, legacy storage classes (as a dtype
    holder), the tensor rebuild functions, ``_codecs.encode`` for protocol-2 bytes.
    """
    names: Dict[str, Any] = {
        "collections.OrderedDict": collections.OrderedDict, "collections.Counter": collections.Counter,
        "torch.nn.parameter.Parameter": torch.nn.Parameter, "torch.Size": torch.Size, "torch.Tensor": torch.Tensor,
        "torch.serialization._get_layout": torch.serialization._get_layout, "torch.device": torch.device,
        "_codecs.encode": codecs.encode, "builtins.bytearray": bytearray, "builtins.set": set,
        "builtins.complex": complex,
    }
    for value in vars(torch).values():  # dtypes and quantization schemes pickle as torch.<name>
        if isinstance(value, (torch.dtype, torch.qscheme)):
            names[str(value)] = value
    for cls in torch._tensor_classes:
        names[f"{cls.__module__}.{cls.__name__}"] = cls
    storage_type = torch.serialization.StorageType
    for cls in torch._storage_classes:
        try:
            names[f"{cls.__module__}.{cls.__name__}"] = storage_type(cls.__name__)  # legacy FloatStorage & co.
        except KeyError:  # the untyped / typed storage classes themselves
            names[f"{cls.__module__}.{cls.__name__}"] = cls
    for fn in _TORCH_REBUILD_FUNCTIONS:
        if hasattr(torch._utils, fn):
            names[f"torch._utils.{fn}"] = getattr(torch._utils, fn)
    if hasattr(torch._tensor, "_rebuild_from_type_v2"):
        names["torch._tensor._rebuild_from_type_v2"] = torch._tensor._rebuild_from_type_v2
    return names

