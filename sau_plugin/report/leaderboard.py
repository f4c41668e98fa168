"""Leaderboard rows in BackdoorBench's own schema, and the plugin's extras beside them.

BackdoorBench's leaderboard data (its website's ``static/data/results.csv``) is one CSV:
an unnamed integer index column, then exactly

    dataset, backbone, attack_name, defense_name, ratio, test_acc, test_asr, test_ra

with BackdoorBench's names (``cifar10``, ``preactresnet18``, ``vgg19_bn``, ``badnet``,
``inputaware``, ``no defense``, ``i-bau``, ...), the poisoning ratio as a number
(``0.1``), fractions in [0, 1] at full precision, and empty cells for a run without
figures. :func:`render_backdoorbench` writes rows in exactly that form, so they can be
appended to ``results.csv`` unchanged; given the text of an existing file in that form it
keeps every line of it, replaces the row of a key it has figures for (in place, index
kept; a row without figures never replaces one with figures) and appends the others,
the index continuing from the largest one.

Where the values come from: ``dataset``, ``backbone`` (``model``), ``attack_name``
(``attack``) and ``ratio`` (``pratio``) from the attack folder's ``info.pickle``
(BackdoorBench's attack arguments), else from the command line, else ``attack_name``
is the folder name. An attack with a label transform other than all2one gets
``<attack>_<transform>`` (e.g. ``badnet_all2all``): BackdoorBench's leaderboard has only
all2one rows, and two rows of one key would overwrite each other. ``defense_name`` is the
defense's folder name; no defense is ``no defense``.

The plugin's extras (label transform, DER, status, record folder, the file the figures
came from) are not BackdoorBench columns; :func:`render_extras` writes them, one row per
leaderboard row with the same five key columns, to a separate CSV.
"""

from __future__ import annotations

import csv
import io
import math
from typing import Dict, Iterable, List, Mapping, Optional, Sequence

from ..errors import ConfigError
from ..metrics import der
from .collect import NO_DEFENSE, AttackResults, Run

COLUMNS = ("dataset", "backbone", "attack_name", "defense_name", "ratio", "test_acc", "test_asr", "test_ra")
KEY = COLUMNS[:5]
EXTRA_COLUMNS = KEY + ("attack_label_trans", "der", "status", "record", "source")
NO_DEFENSE_NAME = "no defense"  # BackdoorBench's defense_name for the attacked model


def _number(value: Optional[float]) -> str:
    """Full precision, as BackdoorBench writes it; empty for a missing or NaN value."""
    if value is None or not math.isfinite(value):
        return ""
    return repr(float(value))


def _ratio(value: object) -> str:
    try:
        return _number(float(value))  # 0.1, "0.10" -> "0.1"
    except (TypeError, ValueError):
        return str(value) if value is not None else ""


def leaderboard_rows(results: Sequence[AttackResults], defenses: Sequence[str],
                     fallback: Optional[Mapping[str, object]] = None) -> List[Dict[str, str]]:
    """One row per (attack folder, no defense + ``defenses``), with every column of
    :data:`COLUMNS` and :data:`EXTRA_COLUMNS` (see the module docstring)."""
    fallback = dict(fallback or {})
    rows = []
    for res in results:
        def meta(key: str) -> object:
            return res.info.get(key, fallback.get(key))

        trans = str(meta("attack_label_trans") or "")
        attack = str(res.info.get("attack") or res.folder)
        base = {
            "dataset": str(meta("dataset") or ""), "backbone": str(meta("model") or ""),
            "attack_name": attack if trans in ("", "all2one") else f"{attack}_{trans}",
            "ratio": _ratio(meta("pratio")), "attack_label_trans": trans, "record": res.folder,
        }
        for name in (NO_DEFENSE,) + tuple(defenses):
            run = res.no_defense if name == NO_DEFENSE else res.defenses.get(name, Run(None))
            f = run.figures
            values = (f.acc, f.asr, f.ra) if f is not None else (None, None, None)
            d = None
            if name != NO_DEFENSE and f is not None and res.no_defense.figures is not None:
                b = res.no_defense.figures
                inputs = (b.acc, b.asr, f.acc, f.asr)
                d = der(*inputs) / 100.0 if all(math.isfinite(x) for x in inputs) else math.nan
            if f is None:
                status = "missing"
            elif not all(math.isfinite(v) for v in values) or (d is not None and math.isnan(d)):
                status = "nan"
            else:
                status = "ok"
            rows.append({
                **base, "defense_name": NO_DEFENSE_NAME if name == NO_DEFENSE else name,
                "test_acc": _number(values[0]), "test_asr": _number(values[1]), "test_ra": _number(values[2]),
                "der": _number(d), "status": status,
                "source": f.source if f is not None else "; ".join(run.notes),
            })
    return rows


def _key(row: Mapping[str, str]) -> tuple:
    return tuple(row.get(k, "") for k in KEY)


def _has_figures(values: Iterable[str]) -> bool:
    return any(v.strip() for v in values)


def _read(text: str, header: Sequence[str], what: str) -> List[List[str]]:
    lines = list(csv.reader(io.StringIO(text)))
    if not lines:
        return []
    if lines[0] != list(header):
        raise ConfigError(f"{what} does not have the expected columns ({','.join(header)}), found "
                          f"{','.join(lines[0])}; pass a new file or one written in this format")
    body = [line for line in lines[1:] if line]
    bad = next((i for i, line in enumerate(body, start=2) if len(line) != len(header)), None)
    if bad is not None:
        raise ConfigError(f"{what}: line {bad} has {len(body[bad - 2])} fields, expected {len(header)}")
    return body


def render_backdoorbench(rows: Sequence[Mapping[str, str]], existing: Optional[str] = None,
                         what: str = "the leaderboard file") -> str:
    """BackdoorBench's ``results.csv`` text: ``existing`` (that format) with ``rows`` merged in."""
    header = [""] + list(COLUMNS)
    body = _read(existing, header, what) if existing else []
    try:
        indices = [int(line[0]) for line in body]
    except ValueError:
        raise ConfigError(f"{what}: the first column must be BackdoorBench's integer row index") from None
    position = {tuple(line[1:6]): i for i, line in enumerate(body)}
    next_index = max(indices, default=-1) + 1
    for row in rows:
        values = [row[c] for c in COLUMNS]
        at = position.get(_key(row))
        if at is None:
            position[_key(row)] = len(body)
            body.append([str(next_index)] + values)
            next_index += 1
        elif _has_figures(values[5:]) or not _has_figures(body[at][6:]):  # never erase figures
            body[at] = [body[at][0]] + values
    return _write([header] + body)


def render_extras(rows: Sequence[Mapping[str, str]], existing: Optional[str] = None,
                  what: str = "the extras file") -> str:
    """The plugin's extras CSV (:data:`EXTRA_COLUMNS`): ``existing`` with rows of the same
    key replaced and new keys appended."""
    body = _read(existing, EXTRA_COLUMNS, what) if existing else []
    position = {tuple(line[:5]): i for i, line in enumerate(body)}
    for row in rows:
        values = [row[c] for c in EXTRA_COLUMNS]
        at = position.setdefault(_key(row), len(body))
        if at == len(body):
            body.append(values)
        else:
            body[at] = values
    return _write([list(EXTRA_COLUMNS)] + body)


def _write(lines: Sequence[Sequence[str]]) -> str:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows(lines)
    return buf.getvalue()


__all__ = ["COLUMNS", "KEY", "EXTRA_COLUMNS", "NO_DEFENSE_NAME", "leaderboard_rows", "render_backdoorbench",
           "render_extras"]
