"""The restricted unpickler: pickle's own, resolving only an allowlist of globals.

Every callable a pickle can reach comes from ``find_class``, so nothing outside the
allowlist runs. Used by :func:`sau_plugin.safeload.safe_torch_load` on torch without
``safe_globals`` (< 2.5; BackdoorBench pins 1.11) and for CIFAR's pickled batches.
"""

from __future__ import annotations

import _compat_pickle
import pickle
import types
from collections.abc import Mapping
from typing import Any, Dict, Sequence, Tuple

from .allowlist import torch_globals


class RefusedGlobal(Exception):
    def __init__(self, name: str):
        super().__init__(name)
        self.name = name


class Damaged(Exception):
    """The unpickler failed on the file's bytes (raised with the original as ``cause``)."""

    def __init__(self, cause: BaseException):
        super().__init__(str(cause))
        self.cause = cause


class RestrictedUnpickler(pickle.Unpickler):
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
            raise RefusedGlobal(full)
        return self.allowed[full]

    def load(self) -> Any:
        try:
            return super().load()
        except RefusedGlobal:
            raise
        except Exception as exc:  # raised while the file's bytes drive the unpickler
            raise Damaged(exc) from exc


def restricted_pickle_module(allowed: Mapping[str, Any]) -> types.ModuleType:
    """A ``pickle_module`` for ``torch.load``: torch calls its ``Unpickler`` (zip and legacy
    formats, subclassing it for its own name remapping) and its ``load`` (legacy headers)."""
    unpickler = type("Unpickler", (RestrictedUnpickler,), {"allowed": dict(allowed)})
    module = types.ModuleType("sau_plugin_restricted_pickle")
    module.Unpickler = unpickler  # type: ignore[attr-defined]
    module.load = lambda file, **kwargs: unpickler(file, **kwargs).load()  # type: ignore[attr-defined]
    module.UnpicklingError = pickle.UnpicklingError  # type: ignore[attr-defined]
    return module


def restricted_allowlist(extra: Sequence[Tuple[Any, str]]) -> Dict[str, Any]:
    return {**torch_globals(), **{name: obj for obj, name in extra}}

