"""How a setting is declared once and what is derived from the declaration.

Each field of ``SAUConfig`` is written with :func:`setting`, which stores a :class:`Setting`
in the field's metadata. From it come the type coercion of YAML and command-line values,
the type checks, the command-line flag (``config/cli.py``), the resume fingerprint (the
fields whose ``affects`` is true) and ``MethodConfig`` (the fields of kind ``METHOD``).
"""

import dataclasses
import math
import typing
from typing import Any, Callable, Optional, Tuple

from ..errors import ConfigError

METHOD = "method"  # a hyperparameter of the method: the core reads it
RUN = "run"  # where and how the run happens: device, paths, resume, loader
BACKDOORBENCH = "backdoorbench"  # a flag of BackdoorBench's defense/sau.py
PLUGIN = "plugin"  # a flag of the plugin (its own argument group)
YAML_ONLY = "yaml"  # a key of the YAML files, no flag (as in BackdoorBench)


@dataclasses.dataclass(frozen=True)
class Setting:
    help: str
    kind: str
    source: str
    affects: bool  # changes the numbers: part of the resume fingerprint
    short: Tuple[str, ...] = ()
    flag: str = "value"  # "value", "switch" (store_true), "bool" (True/False argument)
    nargs: Optional[str] = None
    cli_type: Optional[type] = None  # argparse type when it differs from the field's (BackdoorBench's slips)
    choices: Optional[Tuple[str, ...]] = None
    normalize: Optional[Callable[[str], str]] = None  # applied to string values (aliases, case)


def setting(default: Any, help: str, *, kind: str, source: str, affects: Optional[bool] = None,
            **extra: Any) -> Any:
    """A dataclass field carrying its :class:`Setting`; ``affects`` defaults to ``kind == METHOD``."""
    meta = Setting(help=help, kind=kind, source=source, affects=kind == METHOD if affects is None else affects,
                   **extra)
    return dataclasses.field(default=default, metadata={"setting": meta})


def setting_of(f: dataclasses.Field) -> Setting:
    return f.metadata["setting"]


def value_type(f: dataclasses.Field) -> Any:
    """The field's type without ``Optional``."""
    t = f.type
    if typing.get_origin(t) is typing.Union:
        t = next(a for a in typing.get_args(t) if a is not type(None))
    return t


def parse_bool(text: Any) -> bool:
    low = str(text).strip().lower()
    if low in ("true", "1", "yes"):
        return True
    if low in ("false", "0", "no"):
        return False
    raise ValueError(text)


def coerce(f: dataclasses.Field, value: Any) -> Any:
    """Normalise a value that YAML or argparse hands over in a looser form, by the field's type."""
    if value is None:
        return None
    t, name = value_type(f), f.name
    if t is bool and isinstance(value, str):
        try:
            return parse_bool(value)
        except ValueError:
            raise ConfigError(f"{name} must be true or false, got {value!r}") from None
    if t in (int, float):
        what = "an integer" if t is int else "a number"
        if isinstance(value, bool):  # YAML's true is an int to Python, not a number to the user
            raise ConfigError(f"{name} must be {what}, got {value!r}")
        if t is int and isinstance(value, float) and value.is_integer():
            return int(value)  # BackdoorBench's argparse declares some integers float
        if isinstance(value, str) or (t is float and isinstance(value, int)):
            try:
                return t(value)
            except ValueError:
                raise ConfigError(f"{name} must be {what}, got {value!r}") from None
    if typing.get_origin(t) is tuple:
        item = typing.get_args(t)[0]
        try:
            return tuple(item(v) for v in value)
        except (TypeError, ValueError):
            raise ConfigError(f"{name} must be a list of {item.__name__}s, got {value!r}") from None
    normalize = setting_of(f).normalize
    if normalize is not None and isinstance(value, str):
        return normalize(value)
    return value


def type_problem(f: dataclasses.Field, value: Any) -> Optional[str]:
    """The message for a value of the wrong type, or None."""
    if value is None and typing.get_origin(f.type) is typing.Union:
        return None
    t, name = value_type(f), f.name
    if t is bool and not isinstance(value, bool):
        return f"{name} must be true or false, got {value!r}"
    if t is int and (isinstance(value, bool) or not isinstance(value, int)):
        return f"{name} must be an integer, got {value!r}"
    if t is float and (isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value)):
        return f"{name} must be a finite number, got {value!r}"
    if t is str and not isinstance(value, str):
        return f"{name} must be text, got {value!r}"
    return None


def plain(v: Any) -> Any:
    """A JSON/YAML-friendly value (tuples as lists)."""
    return list(v) if isinstance(v, tuple) else v
