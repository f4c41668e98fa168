"""Reading ``record/<attack>/attack_result.pt`` safely, and rebuilding the poisoned test set.

``attack_result.pt`` pickles PIL images and numpy arrays (SAU_SPEC 4.2), so a plain
``torch.load(weights_only=True)`` refuses it and ``weights_only=False`` would run any
code the file asks for. Here it is loaded with torch's own safe globals plus exactly the
globals such a file needs (found by pickling PIL images and numpy arrays with
``torch.save`` and listing the pickle's GLOBAL opcodes):

* ``numpy._core.multiarray._reconstruct``, ``numpy.ndarray``, ``numpy.dtype`` (+ the
  concrete ``numpy.dtypes.*DType`` classes the pickle BUILDs), ``numpy._core.multiarray.scalar``
  (and their ``numpy.core`` names, written by NumPy 1.x);
* ``PIL.Image.Image`` and the ``*ImageFile`` classes an opened image pickles as. These
  names map to :class:`_SafeImage`, which checks the pickled size against the pixel
  bytes before PIL allocates anything.

torch >= 2.5 applies the allowlist itself (``weights_only=True`` with ``safe_globals``).
Older torch (BackdoorBench pins 1.11) gets :func:`restricted_pickle_module`: pickle's
unpickler whose ``find_class`` resolves only the same names (torch's own, rebuilt by
:func:`torch_globals`, plus ours), passed to ``torch.load`` as its ``pickle_module``.

Any other global -> :class:`UnsafePickleError` naming it; nothing in the file runs.
A damaged file -> :class:`RecordError` ("truncated or corrupt"); a failure that does not
come from the file's bytes (a missing API, a bug) -> :class:`CompatibilityError`.
``trust_pickle`` loads with ``weights_only=False`` after a logged warning.
"""

from __future__ import annotations

import _compat_pickle
import codecs
import collections
import functools
import importlib
import logging
import numbers
import pickle
import platform
import re
import struct
import tarfile
import types
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np
import torch
from PIL import Image

from .. import compat
from ..errors import CompatibilityError, RecordError, SAUError, UnsafePickleError

log = logging.getLogger(__name__)

REQUIRED_KEYS = ("model_name", "num_classes", "model", "data_path", "img_size", "clean_data", "bd_train", "bd_test")
HOW_TO_FIX = "re-run the attack (or copy attack_result.pt again) to get a complete file"

# ---- the allowlist -------------------------------------------------------------------------------------

_PIXEL_BITS = {"1": 1, "L": 8, "P": 8, "I;16": 16, "I;16L": 16, "I;16B": 16, "LA": 16, "PA": 16, "La": 16,
               "RGB": 24, "YCbCr": 24, "LAB": 24, "HSV": 24, "RGBA": 32, "RGBa": 32, "RGBX": 32, "CMYK": 32,
               "I": 32, "F": 32}
_PIL_IMAGE_NAMES = ("PIL.Image.Image", "PIL.PngImagePlugin.PngImageFile", "PIL.JpegImagePlugin.JpegImageFile",
                    "PIL.PpmImagePlugin.PpmImageFile", "PIL.BmpImagePlugin.BmpImageFile",
                    "PIL.TiffImagePlugin.TiffImageFile", "PIL.WebPImagePlugin.WebPImageFile",
                    "PIL.GifImagePlugin.GifImageFile")


class _SafeImage(Image.Image):
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
def _allowlist() -> List[Tuple[Any, str]]:
    pairs = [(obj, name) for name, obj in numpy_globals().items()]
    pairs += [(_SafeImage, name) for name in _PIL_IMAGE_NAMES]
    return pairs


def allowed_global_names() -> List[str]:
    return sorted(name for _, name in _allowlist())


# ---- loading -------------------------------------------------------------------------------------------

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


class _RefusedGlobal(Exception):
    def __init__(self, name: str):
        super().__init__(name)
        self.name = name


class _Damaged(Exception):
    """The unpickler failed on the file's bytes (raised with the original as ``cause``)."""

    def __init__(self, cause: BaseException):
        super().__init__(str(cause))
        self.cause = cause


class _RestrictedUnpickler(pickle.Unpickler):
    """pickle's unpickler resolving only the names in ``allowed``: every callable the
    file can reach comes from ``find_class``, so nothing outside the allowlist runs."""

    allowed: Mapping[str, Any] = {}

    def find_class(self, module: str, name: str) -> Any:
        # Python 2 names (protocol 2, as torch.save writes: __builtin__.set), mapped as torch's own unpickler does
        if (module, name) in _compat_pickle.NAME_MAPPING:
            module, name = _compat_pickle.NAME_MAPPING[(module, name)]
        elif module in _compat_pickle.IMPORT_MAPPING:
            module = _compat_pickle.IMPORT_MAPPING[module]
        full = f"{module}.{name}"
        if full not in self.allowed:
            raise _RefusedGlobal(full)
        return self.allowed[full]

    def load(self) -> Any:
        try:
            return super().load()
        except _RefusedGlobal:
            raise
        except Exception as exc:  # raised while the file's bytes drive the unpickler
            raise _Damaged(exc) from exc


def restricted_pickle_module(allowed: Mapping[str, Any]) -> types.ModuleType:
    """A ``pickle_module`` for ``torch.load``: torch calls its ``Unpickler`` (zip and legacy
    formats, subclassing it for its own name remapping) and its ``load`` (legacy headers)."""
    unpickler = type("Unpickler", (_RestrictedUnpickler,), {"allowed": dict(allowed)})
    module = types.ModuleType("sau_plugin_restricted_pickle")
    module.Unpickler = unpickler  # type: ignore[attr-defined]
    module.load = lambda file, **kwargs: unpickler(file, **kwargs).load()  # type: ignore[attr-defined]
    module.UnpicklingError = pickle.UnpicklingError  # type: ignore[attr-defined]
    return module


def restricted_allowlist(extra: Sequence[Tuple[Any, str]]) -> Dict[str, Any]:
    return {**torch_globals(), **{name: obj for obj, name in extra}}


def _unsafe_globals(path: Path) -> List[str]:
    """Globals in the pickle outside torch's and our allowlist, found without unpickling
    (torch >= 2.5; torch.load's own refusal names the first one otherwise)."""
    scan = getattr(torch.serialization, "get_unsafe_globals_in_checkpoint", None)
    if scan is None or not zipfile.is_zipfile(path):
        return []
    return list(scan(str(path)))


def _is_torchscript(path: Path) -> bool:
    """A TorchScript archive holds code; torch.load would hand it to torch.jit.load."""
    if not zipfile.is_zipfile(path):
        return False
    try:
        with zipfile.ZipFile(path) as z:
            names = z.namelist()
    except Exception as exc:  # a zip directory Python cannot read is damaged (and may hide constants.pkl)
        raise _Damaged(exc) from exc
    return any(name.split("/", 1)[-1] == "constants.pkl" for name in names)


@functools.lru_cache(maxsize=1)
def _parser_codes() -> frozenset:
    """Code objects of the unpicklers: an exception raised beneath one came from the file's bytes."""
    codes = {_RestrictedUnpickler.load.__code__}
    try:
        import torch._weights_only_unpickler as wo
    except ImportError:  # torch < 1.13
        return frozenset(codes)
    for fn in (getattr(getattr(wo, "Unpickler", None), "load", None), getattr(wo, "get_globals_in_pkl", None)):
        if getattr(fn, "__code__", None) is not None:
            codes.add(fn.__code__)
    return frozenset(codes)


_FORMAT_ERRORS = (RuntimeError, AssertionError, KeyError, ValueError, IndexError, struct.error)


def _caused_by_the_file(exc: BaseException) -> bool:
    """True for a damaged file: a failure of the unpickler on its bytes, or of torch's
    reader on its container; False for anything else (a missing API, a bug)."""
    if isinstance(exc, (pickle.UnpicklingError, EOFError, zipfile.BadZipFile, tarfile.TarError)):
        return True
    frames = []
    tb = exc.__traceback__
    while tb is not None:
        frames.append(tb.tb_frame.f_code)
        tb = tb.tb_next
    if any(code in _parser_codes() for code in frames):
        return True
    # torch's reader rejecting the container (zip directory, legacy header, storage sizes)
    return bool(frames) and isinstance(exc, _FORMAT_ERRORS) and frames[-1].co_filename == torch.serialization.__file__


def safe_torch_load(path: Path | str, *, trust_pickle: bool = False, what: str = "attack_result.pt",
                    fix: str = HOW_TO_FIX, allow: Optional[Sequence[Tuple[Any, str]]] = None,
                    map_location: Any = "cpu") -> Any:
    """``torch.load`` with only torch's own safe globals plus ``allow`` (default: the PIL and
    numpy globals of an attack result), or everything if trusted.

    torch >= 2.5 loads with ``weights_only=True`` and ``safe_globals``; older torch with
    :func:`restricted_pickle_module` over the same allowlist. Errors: a refused global is an
    :class:`UnsafePickleError` naming it; a damaged file a :class:`RecordError` ending with
    ``fix``; a failure that says nothing about the file a :class:`CompatibilityError`.
    """
    path = Path(path)
    if not path.is_file():
        raise RecordError(f"{what} not found at {str(path)!r}; check --record_dir and --result_file")
    if trust_pickle:
        log.warning("--trust_pickle: loading %s with weights_only=False; any code pickled in it runs now", path)
        try:
            return compat.load_trusted(path, map_location)
        except SAUError:
            raise
        except Exception as exc:
            raise RecordError(f"{what} at {str(path)!r} cannot be read ({_brief(exc)}); {fix}") from None
    try:  # choosing the loader: a failure here belongs to this installation, never to the file
        extra = list(_allowlist() if allow is None else allow)
        use_torch = compat.has_safe_globals()
        module = None if use_torch else restricted_pickle_module(restricted_allowlist(extra))
        plain = {"weights_only": False} if not use_torch and compat.load_has_weights_only() else {}
    except Exception as exc:
        raise _installation_error(what, path, exc) from None
    try:
        if _is_torchscript(path):
            raise UnsafePickleError(f"{what} at {str(path)!r} is a TorchScript archive, which holds code; refused "
                                    f"without loading it (expected a torch.save file)")
        if use_torch:
            with torch.serialization.safe_globals(extra):  # (object, pickled name) pairs
                unsafe = _unsafe_globals(path)
                if unsafe:
                    raise UnsafePickleError(_unsafe_message(what, path, unsafe))
                return torch.load(path, map_location=map_location, weights_only=True)
        return torch.load(path, map_location=map_location, pickle_module=module, **plain)
    except SAUError:
        raise
    except _RefusedGlobal as exc:
        raise UnsafePickleError(_unsafe_message(what, path, [exc.name])) from None
    except _Damaged as exc:
        raise RecordError(f"{what} at {str(path)!r} is truncated or corrupt ({_brief(exc.cause)}); {fix}") from None
    except OSError as exc:
        raise RecordError(f"{what} at {str(path)!r} cannot be read ({_brief(exc)}); check the file's permissions "
                          f"and the disk") from None
    except Exception as exc:
        found = re.search(r"GLOBAL (\S+)", str(exc)) if isinstance(exc, pickle.UnpicklingError) else None
        if found:  # torch names a refused global this way (a builtin without its module)
            name = found.group(1) if "." in found.group(1) else f"builtins.{found.group(1)}"
            raise UnsafePickleError(_unsafe_message(what, path, [name])) from None
        if _caused_by_the_file(exc):
            raise RecordError(f"{what} at {str(path)!r} is truncated or corrupt ({_brief(exc)}); {fix}") from None
        raise _installation_error(what, path, exc) from None


def _installation_error(what: str, path: Path, exc: BaseException) -> CompatibilityError:
    return CompatibilityError(
        f"{what} at {str(path)!r} could not be loaded because of this installation, not because of the file "
        f"({_brief(exc)}; torch {torch.__version__}, numpy {np.__version__}, Python {platform.python_version()}); "
        f"please report this with these versions")


def _unsafe_message(what: str, path: Path, names: List[str]) -> str:
    return (f"{what} at {str(path)!r} pickles global(s) {', '.join(sorted(set(names)))} that could run code; "
            f"refused without running it (pass --trust_pickle only if you trust the file)")


def _brief(exc: BaseException) -> str:
    """The informative part of an exception's text, on one short line (torch wraps its
    unpickler errors in paragraphs of advice that do not apply here)."""
    text = str(exc)
    for start in ("WeightsUnpickler error:", "trusted source."):
        if start in text:
            text = text.split(start, 1)[1]
            break
    text = text.split("Check the documentation of torch.load", 1)[0].split(" This is an internal miniz error", 1)[0]
    text = " ".join(text.split())
    text = text if len(text) <= 160 else text[:157] + "..."
    return f"{exc.__class__.__name__}: {text}" if text else exc.__class__.__name__


# ---- validation ----------------------------------------------------------------------------------------

@dataclass
class PoisonedEntry:
    index: int  # original index in the clean test split
    bd_label: int
    orig_label: int
    image: Optional[Image.Image] = None  # kept in the file
    path: Optional[str] = None  # on disk, as written in the file
    clean: bool = False  # poison_indicator 0: the clean test sample itself


@dataclass
class AttackRecord:
    """The validated content of an ``attack_result.pt``."""

    path: Path
    model_name: str
    num_classes: int
    state_dict: Dict[str, torch.Tensor]  # 'module.' prefixes stripped
    data_path: str
    img_size: Tuple[int, int, int]  # (H, W, C)
    clean_data: str
    split_size: int  # len(poison_indicator) of bd_test = size of the clean test split
    bd_test: List[PoisonedEntry]


def _bad(path: Path, message: str) -> RecordError:
    return RecordError(f"attack_result.pt at {str(path)!r}: {message}; {HOW_TO_FIX}")


def _as_int(v: Any) -> Optional[int]:
    if isinstance(v, bool) or not isinstance(v, (numbers.Integral, np.integer)):
        if isinstance(v, torch.Tensor) and v.numel() == 1 and not v.is_floating_point() and v.dtype != torch.bool:
            return int(v.item())
        return None
    return int(v)


def _int_array(v: Any) -> Optional[np.ndarray]:
    if isinstance(v, torch.Tensor):
        v = v.numpy()
    if isinstance(v, (list, tuple)):
        if not all(_as_int(x) is not None for x in v):
            return None
        return np.asarray([_as_int(x) for x in v], dtype=np.int64).reshape(-1)
    if isinstance(v, np.ndarray) and v.ndim == 1 and (v.dtype.kind in "iub" or (v.dtype.kind == "f" and
                                                                                np.all(np.isfinite(v)) and np.all(v == np.round(v)))):
        return v.astype(np.int64)
    return None


def strip_module_prefix(state_dict: Mapping[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """DataParallel saves keys as ``module.<key>``; the models know them without it."""
    return {(k[7:] if k.startswith("module.") else k): v for k, v in state_dict.items()}


def rename_by_position(state_dict: Mapping[str, torch.Tensor], model_keys: Sequence[str]) -> Dict[str, torch.Tensor]:
    """BackdoorBench's fallback: when the key names differ but the counts agree, take the
    i-th tensor for the model's i-th key (only when every shape agrees too)."""
    keys = list(state_dict)
    if set(keys) == set(model_keys) or len(keys) != len(model_keys):
        return dict(state_dict)
    renamed = {new: state_dict[old] for old, new in zip(keys, model_keys)}
    changed = [(old, new) for old, new in zip(keys, model_keys) if old != new]
    log.info("renaming %d state_dict keys by position (as BackdoorBench does), e.g. %s -> %s", len(changed), *changed[0])
    return renamed


def _parse_bd_test(path: Path, state: Any, num_classes: int) -> Tuple[int, List[PoisonedEntry]]:
    if not isinstance(state, Mapping):
        raise _bad(path, f"'bd_test' must be a dataset state dict, found {type(state).__name__}")
    missing = [k for k in ("bd_data_container", "original_index_array", "poison_indicator") if k not in state]
    if missing:
        raise _bad(path, f"'bd_test' lacks key(s) {', '.join(missing)}")
    container = state["bd_data_container"]
    if not isinstance(container, Mapping) or not isinstance(container.get("data_dict"), Mapping):
        raise _bad(path, "'bd_test.bd_data_container' must be a dict with a 'data_dict' dict")
    data_dict = container["data_dict"]
    order = _int_array(state["original_index_array"])
    indicator = _int_array(state["poison_indicator"])
    if order is None or indicator is None:
        raise _bad(path, "'bd_test' original_index_array and poison_indicator must be 1-d integer arrays")
    if not np.isin(indicator, (0, 1)).all():
        raise _bad(path, "'bd_test.poison_indicator' must hold only 0 and 1")
    if order.size and (order.min() < 0 or order.max() >= indicator.size):
        raise _bad(path, f"'bd_test.original_index_array' has indices outside [0, {indicator.size})")

    def label(v: Any, what: str, idx: int) -> int:
        i = _as_int(v)
        if i is None or not 0 <= i < num_classes:
            raise _bad(path, f"poisoned test sample {idx}: {what} {v!r} is not a class in [0, {num_classes})")
        return i

    entries = []
    for idx in order.tolist():
        if indicator[idx] == 0:
            entries.append(PoisonedEntry(idx, -1, -1, clean=True))
            continue
        if idx not in data_dict:
            raise _bad(path, f"poisoned test sample {idx} is flagged in poison_indicator but absent from data_dict")
        value = data_dict[idx]
        if isinstance(value, Mapping):  # on disk: {'path', 'other_info': [bd_label, label]}
            info = value.get("other_info")
            if not isinstance(value.get("path"), str) or not isinstance(info, Sequence) or len(info) < 2:
                raise _bad(path, f"poisoned test sample {idx} must be {{'path': str, 'other_info': [bd_label, label]}}")
            entries.append(PoisonedEntry(idx, label(info[0], "bd_label", idx), label(info[1], "label", idx),
                                         path=value["path"]))
        elif isinstance(value, (tuple, list)) and len(value) >= 3 and isinstance(value[0], Image.Image):
            entries.append(PoisonedEntry(idx, label(value[1], "bd_label", idx), label(value[2], "label", idx),
                                         image=value[0]))
        else:
            raise _bad(path, f"poisoned test sample {idx} must be (PIL image, bd_label, label) or a path entry, "
                             f"found {type(value).__name__}")
    return int(indicator.size), entries


def parse_attack_result(path: Path, content: Any) -> AttackRecord:
    """Check every field SAU uses; a :class:`RecordError` says which and what was expected."""
    if not isinstance(content, Mapping):
        raise _bad(path, f"expected a dict, found {type(content).__name__}")
    missing = [k for k in REQUIRED_KEYS if k not in content]
    if missing:
        raise _bad(path, f"missing key(s) {', '.join(missing)} (BackdoorBench's save_attack_result writes "
                         f"{', '.join(REQUIRED_KEYS)})")
    name, num_classes = content["model_name"], _as_int(content["num_classes"])
    if not isinstance(name, str) or not name:
        raise _bad(path, f"'model_name' must be a model name string, found {type(name).__name__}")
    if num_classes is None or num_classes < 2:
        raise _bad(path, f"'num_classes' must be an integer >= 2, found {content['num_classes']!r}")
    sd = content["model"]
    if not isinstance(sd, Mapping) or not sd or not all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                                        for k, v in sd.items()):
        raise _bad(path, "'model' must be a non-empty state_dict (str -> tensor)")
    data_path = content["data_path"]
    if not isinstance(data_path, str) or "data" not in data_path:
        raise _bad(path, f"'data_path' must be a path containing 'data' (e.g. './data/cifar10'), found {data_path!r}")
    size = content["img_size"]
    dims = [_as_int(v) for v in size] if isinstance(size, (Sequence, np.ndarray)) and not isinstance(size, str) else []
    if len(dims) != 3 or any(d is None or d < 1 for d in dims) or dims[2] not in (1, 3):
        raise _bad(path, f"'img_size' must be [height, width, channels] with 1 or 3 channels, found {size!r}")
    if not isinstance(content["clean_data"], str):
        raise _bad(path, f"'clean_data' must be a dataset name, found {type(content['clean_data']).__name__}")
    if content["bd_train"] is not None and not isinstance(content["bd_train"], Mapping):
        raise _bad(path, f"'bd_train' must be a dataset state or None, found {type(content['bd_train']).__name__}")
    split_size, entries = _parse_bd_test(path, content["bd_test"], num_classes)
    if not entries:
        raise _bad(path, "the poisoned test set 'bd_test' is empty, so ASR cannot be measured")
    return AttackRecord(path, name, num_classes, strip_module_prefix(sd), data_path, (dims[0], dims[1], dims[2]),
                        content["clean_data"], split_size, entries)


def read_attack_result(attack_dir: Path | str, *, trust_pickle: bool = False) -> AttackRecord:
    """Load and validate ``<attack_dir>/attack_result.pt``; raises RecordError subclasses only."""
    attack_dir = Path(attack_dir)
    if not attack_dir.is_dir():
        raise RecordError(f"attack result folder {str(attack_dir)!r} not found; --result_file names a folder "
                          f"under --record_dir (e.g. record/badnet_0_1)")
    path = attack_dir / "attack_result.pt"
    content = safe_torch_load(path, trust_pickle=trust_pickle)
    try:
        return parse_attack_result(path, content)
    except SAUError:
        raise
    except Exception as exc:  # odd objects that pass isinstance checks but break on use
        raise _bad(path, f"malformed content ({_brief(exc)})") from None


# ---- the clean data location and the poisoned test set -------------------------------------------------

def dataset_root(record_dir: Path, data_path: str) -> Path:
    """``<dir containing record>/<data_path from 'data' on>``, as load_attack_result resolves it."""
    return Path(record_dir).resolve().parent / data_path[data_path.index("data"):]


def resolve_image_path(written: str, attack_dir: Path, base_dir: Path) -> Path:
    """Find a poisoned PNG written as ``./record/<attack>/bd_test_dataset/<label>/<i>.png``.

    Tried in turn: relative to the folder holding ``record/`` (BackdoorBench's cwd), as an
    absolute path, and relative to the attack folder by the part after its name (the
    folder was moved or renamed).
    """
    p = Path(written)
    tried = [p] if p.is_absolute() else [base_dir / p]
    parts = p.parts
    for i in range(len(parts) - 1, -1, -1):
        if parts[i] == attack_dir.name and i + 1 < len(parts):
            tried.append(attack_dir.joinpath(*parts[i + 1:]))
            break
    else:
        if len(parts) >= 3:  # attack folder renamed: keep '<subfolder>/<label>/<i>.png'
            tried.append(attack_dir.joinpath(*parts[-3:]))
    for cand in tried:
        if cand.is_file():
            return cand
    raise RecordError(f"poisoned test image {written!r} not found; tried {', '.join(repr(str(c)) for c in tried)}; "
                      f"keep the attack folder's bd_test_dataset/ beside attack_result.pt")


def open_image(path: Path) -> Image.Image:
    try:
        with Image.open(path) as im:
            return im.copy()
    except (OSError, ValueError) as exc:
        raise RecordError(f"poisoned test image {str(path)!r} cannot be read ({_brief(exc)}); re-run the attack") from None


@dataclass
class PoisonedSet:
    """The poisoned test set as BackdoorBench's bd_test yields it, in stored order."""

    original_index: np.ndarray
    bd_labels: np.ndarray
    orig_labels: np.ndarray
    load: Callable[[int], Image.Image]

    def __len__(self) -> int:
        return int(self.bd_labels.shape[0])


def poisoned_test_set(record: AttackRecord, clean_test, attack_dir: Path, base_dir: Path) -> PoisonedSet:
    """bd_test rebuilt over the clean test split (``clean_test``: a datasets.ImageSet)."""
    if record.split_size != len(clean_test):
        raise RecordError(f"bd_test was made over a test split of {record.split_size} samples but "
                          f"{clean_test.where} has {len(clean_test)}; point data_path at the dataset the attack used")
    bd, orig, sources = [], [], []
    for e in record.bd_test:
        if e.clean:
            y = int(clean_test.labels[e.index])
            bd.append(y)
            orig.append(y)
            sources.append(functools.partial(clean_test.image, e.index))
        else:
            bd.append(e.bd_label)
            orig.append(e.orig_label)
            if e.image is not None:
                sources.append(functools.partial(lambda im: im, e.image))
            else:
                sources.append(functools.partial(open_image, resolve_image_path(e.path, attack_dir, base_dir)))
    return PoisonedSet(np.asarray([e.index for e in record.bd_test], dtype=np.int64), np.asarray(bd, dtype=np.int64),
                       np.asarray(orig, dtype=np.int64), lambda i: sources[i]())

