"""Reading the final figures each run leaves in a BackdoorBench record tree.

BackdoorBench's defenses do not agree on where, or in what shape, they write their
figures. What follows was read in SCLBD/BackdoorBench at commit f02e353 (file:line);
every figure there is a fraction in columns ``test_acc`` (ACC), ``test_asr`` (ASR)
and ``test_ra`` (R-ACC). All seven scripts below use exactly these three names.

The two CSV shapes and their NaN cells are read by :mod:`.readers`.

No defense
    ``record/<attack>/attack_df_summary.csv``, row ``last``; when the attack wrote none,
    key ``no_defense`` of a plugin run's ``defense/<name>/sau_result.json`` (measured on the
    same test sets before unlearning). Written by
    ``agg_save_summary`` (trainer_cls.py:1326-1327) with ``save_prefix='attack'``
    (attack/badnet.py:244; blended, sig, lf and ssba subclass BadNet), and directly
    by attack/inputaware.py:601 and attack/wanet.py:480.
ANP (``defense/anp/``)
    ``anp_df_summary.csv``: despite the name a one-row per-step table
    (``agg.to_dataframe().to_csv``, anp.py:831 when ``--pruning_number`` is given,
    anp.py:880 otherwise); the figures are that row. Caveat: with
    ``--pruning_number`` the row measures the model pruned at that fixed threshold,
    but ``defense_result.pt`` holds ``model_pru``, the model chosen by the threshold
    sweep (anp.py:834-839), so ``--reevaluate`` measures a different model.
    ``threshold_df.csv`` is the sweep, not a final figure.
FP (``defense/fp/``)
    ``finetune_df_summary.csv``, row ``last``: after pruning, fp.py:406-426
    fine-tunes the pruned model with ``save_prefix "finetune"`` and saves that model
    (fp.py:428-433). ``prune_log_summary.csv`` (fp.py:383) holds the pruning sweep
    *before* fine-tuning; its ``last`` row is used only when no fine-tuning summary
    exists and ``defense_result.pt`` does (a finished run with ``epochs: 0``).
    The saved state_dict keeps ``torch.nn.utils.prune``'s ``weight_orig`` /
    ``weight_mask`` keys; ``--reevaluate`` folds them into ``weight``.
NAD (``defense/nad/``)
    ``nad_df_summary.csv``, row ``last`` (student training, ``save_prefix='nad'``,
    nad.py:852, summary written at nad.py:237). ``nad_te_df_summary.csv`` is the
    teacher's fine-tuning (nad.py:828), not the defended model.
NC (``defense/nc/``)
    ``nc_df_summary.csv``, in one of two shapes: when no backdoor is detected, a
    one-row per-step table of the unchanged model (nc.py:733); when one is, the
    summary of the unlearning fine-tuning (``save_prefix='nc'``, nc.py:838), row
    ``last``. Caveat: in the second case the trainer fine-tunes the model built at
    nc.py:600 (trainer set at nc.py:613), but ``defense_result.pt`` holds a fresh copy
    of the *backdoored* weights (nc.py:760-761, saved at nc.py:847-852), so
    ``--reevaluate`` measures no defense at all.
EP (``defense/ep/``)
    ``ep_df_summary.csv``: a one-row per-step table for the chosen ``u``
    (ep.py:444-452). ``u_step_df.csv`` (ep.py:401) is the sweep over ``u``.
i-BAU (``defense/i-bau/``)
    ``i-bau_df_summary.csv``, row ``last`` (i-bau.py:602); ``i-bau_df.csv`` per round.
SAU (``defense/sau/``; BackdoorBench's own sau.py and this plugin)
    ``sau_df_summary.csv``, row ``last`` (sau.py:576). The plugin writes the same
    files under ``defense/<defense_name>/`` plus ``sau_result.json`` (key ``final``),
    which is read when no summary is found.

Any other defense name (the plugin's variants such as ``ft`` or ``sau_l2``) is read
as the plugin writes it: ``<name>_df_summary.csv``, else ``sau_df_summary.csv``, else
``sau_result.json``, else the only ``*_df_summary.csv`` in the folder.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from ..errors import RecordError
from .readers import Figures, figures_from_row, read_csv_figures, read_json_figures

NO_DEFENSE = "none"


@dataclass(frozen=True)
class Run:
    """One (attack, defense) cell group: figures, or the reason there are none."""

    figures: Optional[Figures]
    notes: Tuple[str, ...] = ()

    @property
    def found(self) -> bool:
        return self.figures is not None


def missing(reason: str, *more: str) -> Run:
    return Run(None, (reason,) + more)


# ---------------------------------------------------------------------------------------------------------
# Per-defense sources: an ordered list of candidate files; the first that exists (and whose
# condition holds) is read. A candidate that exists but cannot be read is reported, not skipped.

@dataclass(frozen=True)
class Candidate:
    filename: str
    needs_result_pt: bool = False  # only trusted when the run finished (defense_result.pt written last)


@dataclass(frozen=True)
class DefenseSource:
    name: str  # folder name under record/<attack>/defense/
    label: str  # column header in the paper
    candidates: Tuple[Candidate, ...]
    caveat: str = ""  # what --reevaluate of defense_result.pt really measures, when it differs
    glob_fallback: bool = False  # accept the only *_df_summary.csv when no candidate exists


def _plugin_like(name: str, label: str) -> DefenseSource:
    names = [f"{name}_df_summary.csv"] + (["sau_df_summary.csv"] if name != "sau" else [])
    return DefenseSource(name, label, tuple(Candidate(n) for n in names) + (Candidate("sau_result.json"),),
                         glob_fallback=True)


REGISTRY: Dict[str, DefenseSource] = {
    "anp": DefenseSource("anp", "ANP", (Candidate("anp_df_summary.csv"),),
                         caveat="with --pruning_number, anp_df_summary.csv measures the fixed-threshold model but "
                                "defense_result.pt holds the model chosen by the threshold sweep"),
    "fp": DefenseSource("fp", "FP", (Candidate("finetune_df_summary.csv"),
                                     Candidate("prune_log_summary.csv", needs_result_pt=True))),
    "nad": DefenseSource("nad", "NAD", (Candidate("nad_df_summary.csv"),)),
    "nc": DefenseSource("nc", "NC", (Candidate("nc_df_summary.csv"),),
                        caveat="when NC detects a backdoor, its defense_result.pt holds the backdoored weights, "
                               "not the unlearned model, so re-evaluating it measures no defense"),
    "ep": DefenseSource("ep", "EP", (Candidate("ep_df_summary.csv"),)),
    "i-bau": DefenseSource("i-bau", "i-BAU", (Candidate("i-bau_df_summary.csv"),)),
    "sau": _plugin_like("sau", "SAU"),
}

# Display names of the plugin's variants (paper Table 5) and BackdoorBench's other defenses.
LABELS = {"ft": "FT", "at": "Vanilla AT", "a+d": "A+D", "c+b": "C+B", "sau_universal": "SAU (universal, A.4)",
          "sau_targeted": "SAU (targeted, A.5)", "abl": "ABL", "ac": "AC", "bnp": "BNP",
          "clp": "CLP", "d-br": "D-BR", "d-st": "D-ST", "dbd": "DBD", "ft-sam": "FT-SAM", "mcr": "MCR",
          "nab": "NAB", "npd": "NPD", "rnp": "RNP", "spectral": "Spectral", NO_DEFENSE: "No Defense"}


def defense_source(name: str) -> DefenseSource:
    if name in REGISTRY:
        return REGISTRY[name]
    return _plugin_like(name, LABELS.get(name, name))


def default_label(name: str) -> str:
    return defense_source(name).label if name != NO_DEFENSE else LABELS[NO_DEFENSE]


def read_defense(attack_dir: Path, name: str) -> Run:
    """Final figures of defense ``name`` on the attack in ``attack_dir`` (see the module docstring)."""
    source = defense_source(name)
    folder = attack_dir / "defense" / name
    rel = f"{attack_dir.name}/defense/{name}"
    if not folder.is_dir():
        return missing(f"{rel}: not run (no folder)")
    has_pt = (folder / "defense_result.pt").is_file()
    for cand in source.candidates:
        path = folder / cand.filename
        if not path.is_file():
            continue
        if cand.needs_result_pt and not has_pt:
            return missing(f"{rel}: only {cand.filename} and no defense_result.pt: the run did not finish")
        return _read_one(path, f"{rel}/{cand.filename}")
    looked = ", ".join(c.filename for c in source.candidates)
    if source.glob_fallback:
        found = sorted(p for p in folder.glob("*_df_summary.csv"))
        if len(found) == 1:
            run = _read_one(found[0], f"{rel}/{found[0].name}")
            return replace(run, notes=run.notes + (f"{rel}: read {found[0].name} (none of {looked} found)",))
        if len(found) > 1:
            looked += f"; several other summaries ({', '.join(p.name for p in found)}), none chosen"
    hint = " (defense_result.pt is there: --reevaluate can measure it)" if has_pt else ""
    return missing(f"{rel}: no final figures found (looked for {looked}){hint}")


def _read_one(path: Path, label: str) -> Run:
    reader = read_json_figures if path.suffix == ".json" else read_csv_figures
    try:
        figures, notes = reader(path, label)
    except RecordError as exc:
        return missing(f"{label}: unreadable: {exc}")
    return Run(figures, notes)


def read_no_defense(attack_dir: Path) -> Run:
    """The attack's own ``attack_df_summary.csv`` (row ``last``); without it, the figures the
    plugin measured before unlearning (``defense/<name>/sau_result.json``, key ``no_defense``;
    the plugin's ``<name>_df.csv``, like BackdoorBench's, has no row for them)."""
    path = attack_dir / "attack_df_summary.csv"
    if path.is_file():
        return _read_one(path, f"{attack_dir.name}/attack_df_summary.csv")
    for result in sorted((attack_dir / "defense").glob("*/sau_result.json")):
        label = f"{attack_dir.name}/defense/{result.parent.name}/sau_result.json"
        try:
            data = json.loads(result.read_text(encoding="utf-8"))
            figures = figures_from_row(data["no_defense"], f"{label}, key no_defense")
        except (OSError, ValueError, KeyError, TypeError, RecordError):
            continue  # another plugin run may have it
        return Run(figures, (f"{attack_dir.name}: no attack_df_summary.csv; No Defense figures as the plugin "
                             f"measured them before unlearning ({label})",))
    return missing(f"{attack_dir.name}: no attack_df_summary.csv (attack not run or not finished) and no plugin "
                   f"sau_result.json with no_defense figures")


# ---------------------------------------------------------------------------------------------------------
# Attack folders and their metadata

def discover_attacks(record_dir: Path) -> List[str]:
    """Sub-folders of ``record_dir`` that hold an attack (its summary or its result file), sorted."""
    if not record_dir.is_dir():
        raise RecordError(f"record folder {str(record_dir)!r} does not exist; pass --record_dir of a BackdoorBench run")
    return sorted(p.name for p in record_dir.iterdir()
                  if p.is_dir() and ((p / "attack_df_summary.csv").is_file() or (p / "attack_result.pt").is_file()))


META_KEYS = ("dataset", "model", "attack", "pratio", "attack_label_trans")


def read_attack_info(attack_dir: Path) -> Dict[str, object]:
    """dataset / model / attack / pratio / attack_label_trans from BackdoorBench's ``info.pickle``.

    BackdoorBench's attacks ``torch.save`` their argument dict there (attack/prototype.py,
    ``NormalCase.prepare``). It holds plain values only, so it is read with torch's own
    safe globals and nothing more: nothing in the file is executed. Absent, refused or
    damaged: ``{}`` (metadata is optional).
    """
    path = attack_dir / "info.pickle"
    if not path.is_file():
        return {}
    from ..safeload import load_weights_only

    try:
        info = load_weights_only(path, what="info.pickle", fix="metadata skipped")
    except RecordError:
        return {}
    if not isinstance(info, dict):
        return {}
    return {k: info[k] for k in META_KEYS if k in info and info[k] is not None}


@dataclass
class AttackResults:
    """Everything the table needs about one attack folder."""

    folder: str
    label: str
    no_defense: Run
    defenses: Dict[str, Run] = field(default_factory=dict)  # defense name -> run
    info: Dict[str, object] = field(default_factory=dict)


def collect(record_dir: Path, attacks: Sequence[Tuple[str, str]], defenses: Sequence[str],
            reevaluate: Optional[Callable[[Path, Sequence[str]], Tuple[Optional[Run], Dict[str, Run]]]] = None,
            ) -> List[AttackResults]:
    """Read (or, with ``reevaluate``, measure) every (attack, defense) of the grid.

    ``attacks`` is a list of ``(folder, label)``; ``reevaluate(attack_dir, defenses)``
    returns the re-measured no-defense run (or None to keep the CSV's) and one run
    per defense.
    """
    out = []
    for folder, label in attacks:
        attack_dir = record_dir / folder
        if not attack_dir.is_dir():
            gone = missing(f"{folder}: no such attack folder in {record_dir}")
            out.append(AttackResults(folder, label, gone, {d: gone for d in defenses}))
            continue
        no_def = read_no_defense(attack_dir)
        runs = {d: read_defense(attack_dir, d) for d in defenses}
        if reevaluate is not None:
            re_no_def, re_runs = reevaluate(attack_dir, defenses)
            if re_no_def is not None:
                no_def = re_no_def
            elif no_def.found:
                no_def = replace(no_def, notes=no_def.notes + (
                    f"{folder}: No Defense figures read from attack_df_summary.csv, not re-evaluated",))
            runs.update(re_runs)
        out.append(AttackResults(folder, label, no_def, runs, read_attack_info(attack_dir)))
    return out


__all__ = ["Figures", "Run", "missing", "AttackResults", "DefenseSource", "REGISTRY", "NO_DEFENSE", "LABELS",
           "defense_source", "default_label", "read_defense",
           "read_no_defense", "discover_attacks", "read_attack_info", "collect"]
