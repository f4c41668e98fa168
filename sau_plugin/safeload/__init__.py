"""Loading untrusted pickles (``torch.load`` files and pickled dataset batches) safely.

``attack_result.pt`` pickles PIL images and numpy arrays, so a plain
``torch.load(weights_only=True)`` refuses it and ``weights_only=False`` would run any code
the file asks for. :func:`safe_torch_load` loads with torch's own safe globals plus exactly
the globals the kind of file needs (:mod:`.allowlist`).

torch >= 2.5 applies the allowlist itself (``weights_only=True`` with ``safe_globals``).
Older torch (BackdoorBench pins 1.11) gets :func:`.unpickler.restricted_pickle_module`:
pickle's unpickler whose ``find_class`` resolves only the same names, passed to
``torch.load`` as its ``pickle_module``.

Any other global -> :class:`UnsafePickleError` naming it; nothing in the file runs.
A damaged file -> :class:`RecordError` ("truncated or corrupt"); a failure that does not
come from the file's bytes (a missing API, a bug) -> :class:`CompatibilityError`.
``trust_pickle`` loads with ``weights_only=False`` after a logged warning.
"""

from __future__ import annotations

import functools
import logging
import pickle
import platform
import re
import struct
import tarfile
import zipfile
from pathlib import Path
from typing import Any, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from .. import compat
from ..errors import CompatibilityError, RecordError, SAUError, UnsafePickleError
from . import allowlist
from .allowlist import allowed_global_names, attack_allowlist, numpy_globals, torch_globals
from .unpickler import Damaged, RefusedGlobal, RestrictedUnpickler, restricted_allowlist, restricted_pickle_module

log = logging.getLogger(__name__)

ATTACK_RESULT_FIX = "re-run the attack (or copy attack_result.pt again) to get a complete file"


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
        raise Damaged(exc) from exc
    return any(name.split("/", 1)[-1] == "constants.pkl" for name in names)


@functools.lru_cache(maxsize=1)
def _parser_codes() -> frozenset:
    """Code objects of the unpicklers: an exception raised beneath one came from the file's bytes."""
    codes = {RestrictedUnpickler.load.__code__}
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


def safe_torch_load(path: Union[Path, str], *, trust_pickle: bool = False, what: str = "attack_result.pt",
                    fix: str = ATTACK_RESULT_FIX, allow: Optional[Sequence[Tuple[Any, str]]] = None,
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
            return load_trusted(path, map_location)
        except SAUError:
            raise
        except Exception as exc:
            raise RecordError(f"{what} at {str(path)!r} cannot be read ({brief_error(exc)}); {fix}") from None
    try:  # choosing the loader: a failure here belongs to this installation, never to the file
        extra = list(allowlist.attack_allowlist() if allow is None else allow)
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
    except RefusedGlobal as exc:
        raise UnsafePickleError(_unsafe_message(what, path, [exc.name])) from None
    except Damaged as exc:
        raise RecordError(f"{what} at {str(path)!r} is truncated or corrupt ({brief_error(exc.cause)}); {fix}") from None
    except OSError as exc:
        raise RecordError(f"{what} at {str(path)!r} cannot be read ({brief_error(exc)}); check the file's permissions "
                          f"and the disk") from None
    except Exception as exc:
        found = re.search(r"GLOBAL (\S+)", str(exc)) if isinstance(exc, pickle.UnpicklingError) else None
        if found:  # torch names a refused global this way (a builtin without its module)
            name = found.group(1) if "." in found.group(1) else f"builtins.{found.group(1)}"
            raise UnsafePickleError(_unsafe_message(what, path, [name])) from None
        if _caused_by_the_file(exc):
            raise RecordError(f"{what} at {str(path)!r} is truncated or corrupt ({brief_error(exc)}); {fix}") from None
        raise _installation_error(what, path, exc) from None


def _installation_error(what: str, path: Path, exc: BaseException) -> CompatibilityError:
    return CompatibilityError(
        f"{what} at {str(path)!r} could not be loaded because of this installation, not because of the file "
        f"({brief_error(exc)}; torch {torch.__version__}, numpy {np.__version__}, Python {platform.python_version()}); "
        f"please report this with these versions")


def _unsafe_message(what: str, path: Path, names: List[str]) -> str:
    return (f"{what} at {str(path)!r} pickles global(s) {', '.join(sorted(set(names)))} that could run code; "
            f"refused without running it (pass --trust_pickle only if you trust the file)")


def brief_error(exc: BaseException) -> str:
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


def load_weights_only(path: Any, what: str, fix: str, map_location: Any = "cpu") -> Any:
    """A file holding only tensors and plain containers (``defense_result.pt``, ``info.pickle``):
    torch's own allowlist and nothing more."""
    return safe_torch_load(path, what=what, fix=fix, allow=(), map_location=map_location)


def load_trusted(path: Any, map_location: Any = "cpu") -> Any:
    """``torch.load`` that may run pickled code: only for files the user said to trust."""
    if compat.load_has_weights_only():
        return torch.load(path, map_location=map_location, weights_only=False)
    return torch.load(path, map_location=map_location)


__all__ = ["safe_torch_load", "load_weights_only", "load_trusted", "brief_error", "allowed_global_names",
           "attack_allowlist", "numpy_globals", "torch_globals", "ATTACK_RESULT_FIX"]
