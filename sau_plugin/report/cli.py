"""``sau-plugin report``: a paper table (and leaderboard rows) from a BackdoorBench record folder.

    sau-plugin report --record_dir record \\
        --attacks badnet_0_1=BadNets blended_0_1=Blended \\
        --defenses anp,fp,nc,nad,ep,i-bau,sau --format md

Attacks and defenses are folder names, optionally ``=Label`` for the table; both may
be given comma- or space-separated. Without ``--attacks`` every attack folder under
``--record_dir`` is used.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import List, Sequence, Tuple

from ..errors import ConfigError, OutputError
from ..fileio import atomic_write_text
from .collect import NO_DEFENSE, collect, default_label, discover_attacks
from .leaderboard import leaderboard_rows, render_backdoorbench, render_extras
from .table import build_table, render_csv, render_latex, render_markdown

PAPER_DEFENSES = "anp,fp,nc,nad,ep,i-bau,sau"  # Table 2's column order
FORMATS = ("md", "latex", "csv")


def parse_named(values: Sequence[str], default_labeler) -> List[Tuple[str, str]]:
    """``["a=A,b", "c"]`` -> ``[("a", "A"), ("b", label(b)), ("c", label(c))]``; duplicates refused."""
    out: List[Tuple[str, str]] = []
    for value in values:
        for item in value.split(","):
            item = item.strip()
            if not item:
                continue
            name, _, label = item.partition("=")
            name, label = name.strip(), label.strip()
            if not name:
                raise ConfigError(f"empty name in {value!r}; expected NAME or NAME=Label")
            if name == NO_DEFENSE:
                raise ConfigError(f"{NO_DEFENSE!r} is always the first column; do not list it")
            out.append((name, label or default_labeler(name)))
    names = [n for n, _ in out]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ConfigError(f"listed more than once: {', '.join(dupes)}")
    return out


def add_cli(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "report", help="paper-style table (ACC / ASR / R-ACC / DER) from a BackdoorBench record folder",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--record_dir", default="record", help="BackdoorBench's record folder (default: record)")
    p.add_argument("--attacks", nargs="+", metavar="FOLDER[=LABEL]",
                   help="attack folders under --record_dir, in row order (default: all, sorted)")
    p.add_argument("--defenses", nargs="+", metavar="NAME[=LABEL]", default=[PAPER_DEFENSES],
                   help=f"defense folders under <attack>/defense/, in column order (default: {PAPER_DEFENSES})")
    p.add_argument("--format", choices=FORMATS, default="md", help="md (default), latex or csv")
    p.add_argument("--output", "-o", metavar="FILE", help="write the table here instead of stdout")
    p.add_argument("--caption", help="caption line (md) or \\caption (latex)")
    p.add_argument("--block_size", type=int, default=4,
                   help="columns per table block in md / latex, No Defense included (default 4, as in the paper; "
                        "0 = one table)")
    p.add_argument("--leaderboard", metavar="CSV",
                   help="also write rows in BackdoorBench's leaderboard schema (its results.csv: index, dataset, "
                        "backbone, attack_name, defense_name, ratio, test_acc, test_asr, test_ra); an existing file "
                        "in that schema (e.g. a copy of results.csv) keeps its rows and gets ours merged in, the "
                        "index continuing; '-' prints them")
    p.add_argument("--leaderboard_extras", metavar="CSV",
                   help="also write the plugin's extras per leaderboard row (the same five key columns, then "
                        "attack_label_trans, der, status, record, source); '-' prints them")
    p.add_argument("--reevaluate", action="store_true",
                   help="measure every defense_result.pt with the plugin's evaluator instead of reading CSVs")
    p.add_argument("--device", default="cpu", help="device for --reevaluate (default cpu)")
    p.add_argument("--batch_size", type=int, default=256, help="batch size for --reevaluate (default 256)")
    meta = p.add_argument_group("leaderboard metadata, used when an attack folder has no info.pickle")
    meta.add_argument("--dataset")
    meta.add_argument("--model")
    meta.add_argument("--pratio")
    meta.add_argument("--attack_label_trans")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    record_dir = Path(args.record_dir)
    if args.attacks:
        attacks = parse_named(args.attacks, lambda name: name)
    else:
        attacks = [(name, name) for name in discover_attacks(record_dir)]
        if not attacks:
            raise ConfigError(f"no attack folder (with attack_df_summary.csv or attack_result.pt) in {record_dir}")
    defenses = parse_named(args.defenses, default_label)
    if args.block_size < 0:
        raise ConfigError(f"--block_size must be >= 0, got {args.block_size}")

    reevaluate = None
    if args.reevaluate:
        from .evaluate import Reevaluator  # torch models only when asked

        reevaluate = Reevaluator(device=args.device, batch_size=args.batch_size)
    names = [n for n, _ in defenses]
    results = collect(record_dir, attacks, names, reevaluate=reevaluate)
    table = build_table(results, defenses)

    if args.format == "md":
        text = render_markdown(table, args.block_size, args.caption)
    elif args.format == "latex":
        text = render_latex(table, args.block_size, args.caption)
    else:
        text = render_csv(table)
        for note in table.notes:  # keep the CSV clean; the notes still reach the reader
            print(f"note: {note}", file=sys.stderr)
    _emit(text, args.output)

    if args.leaderboard or args.leaderboard_extras:
        fallback = {k: getattr(args, k) for k in ("dataset", "model", "pratio", "attack_label_trans")
                    if getattr(args, k) is not None}
        rows = leaderboard_rows(results, names, fallback)
        for target, render in ((args.leaderboard, render_backdoorbench), (args.leaderboard_extras, render_extras)):
            if target == "-":
                _emit(render(rows), None)
            elif target:
                _emit(render(rows, _read_existing(target), what=target), target)
    return 0


def _read_existing(path: str):
    p = Path(path)
    if not p.is_file():
        return None
    try:
        return p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise OutputError(f"cannot read {path} to merge into it ({exc}); pass another file") from None


def _emit(text: str, path) -> None:
    if path is None:
        sys.stdout.write(text)
        return
    try:
        atomic_write_text(path, text)
    except OutputError:
        raise
    except OSError as exc:
        raise OutputError(f"cannot write {path} ({exc.strerror})") from None


__all__ = ["add_cli", "run", "parse_named", "PAPER_DEFENSES"]
