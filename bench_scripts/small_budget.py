"""SAU default against SAU + L_kd (``--lmd_kd 1 --lmd_3 3``) when the clean set is tiny.

Runs the grid of ``sau_plugin/bench/tables/table_small_budget_gen.yaml`` through ``sau-plugin bench``
(generator records, width-16 PreAct-ResNet18; each defense is one method x clean-set size x seed,
``--random_seed`` drawing the clean subset, the shuffling and PGD), then the same defenses on a
full-width (64) PreAct-ResNet18 for ``--wide-attacks`` (own record folder, ``--lr 1e-4``), and aggregates the seeds:
per attack, method and clean-set size the mean and sample standard deviation of ACC, ASR, R-ACC
and DER; a Markdown table, a CSV of every run, a PNG of ACC and ASR against the clean-set size,
and the verdict on the bar: with 50 clean samples, averaged over attacks and seeds, the ACC drop
of SAU + L_kd at most half of SAU default's, its ASR at most 3% and on no attack more than 2
points above SAU default's; with 10, no worse than SAU default on any metric.

    python bench_scripts/small_budget.py --workers 2
    python bench_scripts/small_budget.py --budgets 10,50 --wide-budgets 50 --wide-seeds 0 --workers 2
    python bench_scripts/small_budget.py --summary-only     # aggregate what has finished

Finished runs are kept (``sau-plugin bench`` skips them); the summary lists only finished runs.
"""

from __future__ import annotations

import argparse
import csv
import json
import re
import shlex
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

TABLE = "table_small_budget_gen"
METHODS = {"sau": "SAU default", "kd": "SAU + L_kd"}
BUDGETS = (10, 50, 200, 500)
ATTACKS = ("badnet", "blended", "wanet", "badnet_all2all")
METRICS = (("ACC", "test_acc"), ("ASR", "test_asr"), ("R-ACC", "test_ra"))
NAME = re.compile(r"^(sau|kd)_n(\d+)_s(\d+)$")


def ints(text: str) -> List[int]:
    return [int(t) for t in text.split(",") if t]


def names(text: str) -> List[str]:
    return [t for t in text.split(",") if t]


def defense_names(budgets: Sequence[int], seeds: Sequence[int]) -> List[str]:
    return [f"{m}_n{n}_s{s}" for m in METHODS for n in budgets for s in seeds]


def bench(args, attacks: Sequence[str], budgets: Sequence[int], seeds: Sequence[int], record_dir: str,
          attack_args: str, defense_args: str) -> int:
    if not attacks or not budgets or not seeds:
        return 0
    cmd = [args.python, "-m", "sau_plugin", "bench", TABLE, "--record_dir", record_dir, "--attacks", ",".join(attacks),
           "--defenses", ",".join(defense_names(budgets, seeds)), "--no-report", "--workers", str(args.workers),
           "--log-dir", f"{args.out}/logs/{Path(record_dir).name}"]
    cmd += ["--attack-args", attack_args] if attack_args else []
    cmd += ["--defense-args", defense_args] if defense_args else []
    cmd += ["--dry-run"] if args.dry_run else ["--no-progress"]
    print("#", " ".join(shlex.quote(c) for c in cmd), flush=True)
    return subprocess.call(cmd)


def collect(record_dirs: Dict[str, str]) -> List[dict]:
    """One row per finished run: attack (``<attack>`` or ``<attack>@w64``), method, n, seed and figures in %."""
    rows = []
    for suffix, record_dir in record_dirs.items():
        for result in sorted(Path(record_dir).glob("*/defense/*/sau_result.json")):
            m = NAME.match(result.parent.name)
            if not m:
                continue
            r = json.loads(result.read_text())
            row = {"attack": result.parents[2].name + suffix, "method": m.group(1), "n": int(m.group(2)),
                   "seed": int(m.group(3)), "n_clean": r["n_clean"], "DER": r["der"],
                   "ACC_before": 100 * r["no_defense"]["test_acc"], "ASR_before": 100 * r["no_defense"]["test_asr"]}
            row.update({label: 100 * r["final"][key] for label, key in METRICS})
            rows.append(row)
    return rows


def mean_std(values: Sequence[float]) -> Tuple[float, float]:
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def cells(rows: List[dict]) -> Dict[tuple, Dict[str, Tuple[float, float]]]:
    """(attack, method, n) -> {metric: (mean, std)}, with the ACC drop and the seed count."""
    groups: Dict[tuple, List[dict]] = {}
    for r in rows:
        groups.setdefault((r["attack"], r["method"], r["n"]), []).append(r)
    out = {}
    for key, rs in sorted(groups.items()):
        cell = {k: mean_std([r[k] for r in rs]) for k in ("ACC", "ASR", "R-ACC", "DER")}
        cell["drop"] = mean_std([r["ACC_before"] - r["ACC"] for r in rs])
        cell["seeds"] = (len(rs), 0.0)
        out[key] = cell
    return out


def markdown(table: Dict[tuple, dict]) -> str:
    lines = ["| attack | n | method | seeds | ACC | ASR | R-ACC | DER | ACC drop |", "|---|---|---|---|---|---|---|---|---|"]
    for (attack, method, n), c in sorted(table.items(), key=lambda kv: (kv[0][0], kv[0][2], kv[0][1] != "sau")):
        figs = " | ".join(f"{c[k][0]:.1f} ± {c[k][1]:.1f}" for k in ("ACC", "ASR", "R-ACC", "DER", "drop"))
        lines.append(f"| {attack} | {n} | {METHODS[method]} | {c['seeds'][0]} | {figs} |")
    return "\n".join(lines) + "\n"


def verdict(rows: List[dict]) -> List[str]:
    """The bar, on the runs present for both methods (same attack, n, seed)."""
    out = []
    pairs = {(r["attack"], r["n"], r["seed"]): {} for r in rows}
    for r in rows:
        pairs[(r["attack"], r["n"], r["seed"])][r["method"]] = r
    for n in sorted({k[1] for k in pairs}):
        both = [p for k, p in pairs.items() if k[1] == n and len(p) == 2]
        if not both:
            continue
        avg = {m: {k: statistics.fmean(p[m][k] if k != "drop" else p[m]["ACC_before"] - p[m]["ACC"] for p in both)
                   for k in ("ACC", "ASR", "R-ACC", "DER", "drop")} for m in METHODS}
        head = (f"n={n} ({len(both)} attack x seed pairs): ACC drop {avg['sau']['drop']:.2f} (default) vs "
                f"{avg['kd']['drop']:.2f} (L_kd); ASR {avg['sau']['ASR']:.2f} vs {avg['kd']['ASR']:.2f}")
        if n == 50:
            per_attack = {}
            for (attack, nn, _), p in pairs.items():
                if nn == n and len(p) == 2:
                    per_attack.setdefault(attack, []).append(p["kd"]["ASR"] - p["sau"]["ASR"])
            worst = max(statistics.fmean(v) for v in per_attack.values())
            ok = (avg["kd"]["drop"] <= avg["sau"]["drop"] / 2 and avg["kd"]["ASR"] <= 3.0 and worst <= 2.0)
            out.append(f"{head}; worst attack's ASR excess {worst:.2f}: bar {'MET' if ok else 'NOT met'}")
        elif n == 10:
            ok = all(avg["kd"][k] >= avg["sau"][k] for k in ("ACC", "R-ACC", "DER")) and avg["kd"]["ASR"] <= avg["sau"]["ASR"]
            out.append(f"{head}; no worse on every metric: {'yes' if ok else 'NO'}")
        else:
            out.append(head)
    return out


def plot(table: Dict[tuple, dict], path: Path) -> None:
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    attacks = sorted({k[0] for k in table})
    fig, axes = plt.subplots(2, len(attacks), figsize=(3.6 * len(attacks), 6), squeeze=False)
    for j, attack in enumerate(attacks):
        for i, metric in enumerate(("ACC", "ASR")):
            ax = axes[i][j]
            for method, style in (("sau", "o-"), ("kd", "s--")):
                pts = sorted((n, c[metric]) for (a, m, n), c in table.items() if a == attack and m == method)
                if pts:
                    ax.errorbar([p[0] for p in pts], [p[1][0] for p in pts], yerr=[p[1][1] for p in pts],
                                fmt=style, capsize=3, label=METHODS[method])
            ax.set_xscale("log")
            ax.set_xticks(list(BUDGETS))
            ax.xaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
            ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
            ax.set_xlabel("clean samples")
            ax.set_ylabel(f"{metric} (%)")
            ax.set_title(attack)
            ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: Sequence[str] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--attacks", type=names, default=list(ATTACKS), help="width-16 attacks (default: all four)")
    p.add_argument("--budgets", type=ints, default=list(BUDGETS), help="clean-set sizes (default 10,50,200,500)")
    p.add_argument("--seeds", type=ints, default=[0, 1, 2], help="seeds (default 0,1,2)")
    p.add_argument("--wide-attacks", type=names, default=["badnet"], help="attacks on a width-64 PreAct-ResNet18")
    p.add_argument("--wide-budgets", type=ints, default=list(BUDGETS), help="their clean-set sizes")
    p.add_argument("--wide-seeds", type=ints, default=[0, 1, 2], help="their seeds")
    p.add_argument("--record_dir", default="record_small_budget", help="width-16 records; width 64: <this>_w64")
    # fp32 records, as the README's figures were measured (the generator's default is bf16 where the CPU has it)
    p.add_argument("--attack-args", default="--attack_amp False", help="flags of every attack command "
                   "(default: %(default)s)")
    p.add_argument("--defense-args", default="", help="extra flags of every defense command")
    # The demo YAML's lr 3e-4 is tuned for width 16; on the width-64 record it took SAU default's ACC from
    # 96.8 to 24.4 in the first epoch (2 Adam steps at 50 samples). BackdoorBench's SAU lr is 1e-4.
    p.add_argument("--wide-defense-args", default="--lr 0.0001", help="extra flags of the width-64 defense "
                   "commands, after --defense-args (default: %(default)s)")
    p.add_argument("--workers", type=int, default=1, help="runs at once")
    p.add_argument("--python", default=sys.executable, help="interpreter of the runs")
    p.add_argument("--out", default="bench_reports/small_budget", help="folder of the table, CSV, PNG and logs")
    p.add_argument("--dry-run", action="store_true", help="print the runs; run nothing")
    p.add_argument("--summary-only", action="store_true", help="aggregate the finished runs; run nothing")
    args = p.parse_args(argv)
    if bad := [n for n in args.budgets + args.wide_budgets if n not in BUDGETS]:
        p.error(f"clean-set sizes must be among {BUDGETS} (the table's defenses); got {bad}")
    wide_dir = args.record_dir + "_w64"
    if not args.summary_only:
        codes = [bench(args, args.attacks, args.budgets, args.seeds, args.record_dir, args.attack_args,
                       args.defense_args),
                 bench(args, args.wide_attacks, args.wide_budgets, args.wide_seeds, wide_dir,
                       f"--width 64 {args.attack_args}".strip(), f"{args.defense_args} {args.wide_defense_args}".strip())]
        if args.dry_run:
            return max(codes)
    rows = collect({"": args.record_dir, "@w64": wide_dir})
    if not rows:
        print(f"small_budget: no finished run under {args.record_dir} or {wide_dir}", file=sys.stderr)
        return 1
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "runs.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    table = cells(rows)
    text = markdown(table) + "\n" + "\n".join(verdict(rows)) + "\n"
    (out / "table.md").write_text(text)
    plot(table, out / "acc_asr_vs_clean_samples.png")
    print(text + f"\nwrote {out / 'table.md'}, {out / 'runs.csv'}, {out / 'acc_asr_vs_clean_samples.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
