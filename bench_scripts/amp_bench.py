"""Does bf16 autocast (``--amp True``) move SAU's figures by more than seed noise?

For every attack x seed it makes a generator record (``sau-plugin attack --seed S``: the
poisoned samples, the backdoored model's initialisation and its training order change with
S), then runs SAU on it twice with the same clean subset (``--random_seed S``), once in fp32
(``--amp False``) and once with ``--amp True``, everything else from ``--yaml_path``. It prints,
per attack and metric, the fp32 mean and seed-to-seed standard deviation, the amp mean and
the difference of the means, and the verdict: amp is "within seed noise" on a metric when
|mean_amp - mean_fp32| <= std_fp32 for every attack. It also writes the per-run figures, the
per-epoch curves and a PNG of the curves under ``--out``.

    python bench_scripts/amp_bench.py --out amp_bench --jobs 2 --threads 1
    python bench_scripts/amp_bench.py --device cuda --jobs 3 ...           # bf16 on a GPU
    python bench_scripts/amp_bench.py --extra-record /path/record:badnet_x --extra-dataset cifar10 ...

``--extra-record`` adds records made elsewhere (e.g. by BackdoorBench's own attack code), run
with the same seeds (then only the clean subset changes with the seed).
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List, Sequence

METRICS = ("test_acc", "test_asr", "test_ra")
LABELS = {"test_acc": "ACC", "test_asr": "ASR", "test_ra": "R-ACC"}
MODES = {"fp32": "False", "amp": "True"}


def run(cmd: Sequence[str], log: Path, threads: int) -> float:
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads), PYTHONUNBUFFERED="1")
    t = time.perf_counter()
    with open(log, "w") as f:
        code = subprocess.call(list(cmd), stdout=f, stderr=subprocess.STDOUT, env=env)
    if code != 0:
        tail = log.read_text().strip().splitlines()[-3:]
        raise SystemExit(f"amp_bench: {' '.join(cmd[:4])} ... failed with exit code {code}; log {log}: {tail}")
    return time.perf_counter() - t


def parallel(jobs: int, tasks: List[tuple]) -> None:
    with cf.ThreadPoolExecutor(max_workers=jobs) as pool:
        for f in cf.as_completed([pool.submit(run, *t) for t in tasks]):
            f.result()


def mean_std(values: List[float]) -> tuple:
    return statistics.mean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--attacks", default="badnet,blended,wanet,lf")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--device", default="cpu")
    p.add_argument("--yaml_path", default=str(Path(__file__).resolve().parents[1] / "defense_configs/sau/demo_mnist.yaml"))
    p.add_argument("--defense-args", default="", help="extra flags for every defend run")
    p.add_argument("--attack-args", default="", help="extra flags for every attack run")
    p.add_argument("--jobs", type=int, default=1, help="SAU runs at once")
    p.add_argument("--attack-jobs", type=int, default=None, help="attack runs at once (default: --jobs)")
    p.add_argument("--threads", type=int, default=2, help="OMP threads per run")
    p.add_argument("--extra-record", action="append", default=[], help="RECORD_DIR:RESULT_FILE made elsewhere")
    p.add_argument("--extra-dataset", default="cifar10", help="--dataset for the extra records")
    p.add_argument("--out", default="amp_bench")
    p.add_argument("--rerun", action="store_true", help="re-run SAU runs whose result exists (default: keep them)")
    args = p.parse_args(argv)

    out = Path(args.out).resolve()
    (out / "logs").mkdir(parents=True, exist_ok=True)
    record_dir = out / "record"
    py = [sys.executable, "-m", "sau_plugin"]
    seeds = [int(s) for s in args.seeds.split(",")]
    attacks = [a for a in args.attacks.split(",") if a]

    # 1. records: the data files first, alone (parallel attacks would race to write them)
    from sau_plugin.demo.data import ensure_mnist

    ensure_mnist(out)
    t0 = time.perf_counter()
    parallel(args.attack_jobs or args.jobs, [([*py, "attack", "--attack", a, "--seed", str(s), "--name", f"{a}_s{s}",
                           "--record_dir", str(record_dir), "--no_progress", *args.attack_args.split()],
                          out / "logs" / f"attack_{a}_s{s}.log", args.threads) for a in attacks for s in seeds])
    print(f"records: {len(attacks) * len(seeds)} in {time.perf_counter() - t0:.0f} s", flush=True)

    cases = [(a, s, str(record_dir), f"{a}_s{s}", "mnist") for a in attacks for s in seeds]
    for spec in args.extra_record:
        rdir, name = spec.rsplit(":", 1)
        cases += [(f"{name}*", s, str(Path(rdir).resolve()), name, args.extra_dataset) for s in seeds]

    # 2. SAU in both precisions on the same clean subset
    t0 = time.perf_counter()
    tasks = []
    for label, s, rdir, name, dataset in cases:
        for mode, amp in MODES.items():
            done = Path(rdir) / name / "defense" / f"ampbench_{mode}_s{s}" / "sau_result.json"
            if done.is_file() and not args.rerun:
                continue
            tasks.append(([*py, "defend", "--result_file", name, "--record_dir", rdir, "--dataset", dataset,
                           "--yaml_path", args.yaml_path, "--device", args.device, "--amp", amp,
                           "--random_seed", str(s), "--defense_name", f"ampbench_{mode}_s{s}", "--overwrite",
                           "--no_progress", *args.defense_args.split()],
                          out / "logs" / f"sau_{name}_{mode}_s{s}.log", args.threads))
    parallel(args.jobs, tasks)
    print(f"SAU runs: {len(tasks)} in {time.perf_counter() - t0:.0f} s", flush=True)

    # 3. collect
    import pandas as pd

    runs, curves = [], []
    for label, s, rdir, name, dataset in cases:
        for mode in MODES:
            folder = Path(rdir) / name / "defense" / f"ampbench_{mode}_s{s}"
            res = json.loads((folder / "sau_result.json").read_text())
            if mode == "amp" and "bf16" not in res["precision"]:
                raise SystemExit(f"amp_bench: the amp run on {args.device} did not use bf16 "
                                 f"({res['precision']}); use a device with bf16 support")
            runs.append({"attack": label, "seed": s, "mode": mode, "precision": res["precision"],
                         **{m: 100 * res["final"][m] for m in METRICS},
                         **{f"before_{m}": 100 * res["no_defense"][m] for m in METRICS},
                         "unlearn_s": res["timings_s"].get("unlearn")})
            df = pd.read_csv(folder / f"ampbench_{mode}_s{s}_df.csv", index_col=0)
            df = df[pd.to_numeric(df["epoch"]) >= 0]
            for _, row in df.iterrows():
                curves.append({"attack": label, "seed": s, "mode": mode, "epoch": int(row["epoch"]),
                               **{m: 100 * float(row[m]) for m in METRICS}})
    runs_df, curves_df = pd.DataFrame(runs), pd.DataFrame(curves)
    runs_df.to_csv(out / "amp_bench_runs.csv", index=False)
    curves_df.to_csv(out / "amp_bench_curves.csv", index=False)

    # 4. table and verdict
    lines = ["| attack | metric | fp32 mean | fp32 std (seeds) | amp mean | amp std | amp - fp32 | within noise |",
             "|---|---|---:|---:|---:|---:|---:|---|"]
    within: Dict[str, bool] = {m: True for m in METRICS}
    for label in dict.fromkeys(c[0] for c in cases):
        for m in METRICS:
            f_vals = runs_df[(runs_df.attack == label) & (runs_df["mode"] == "fp32")][m].tolist()
            a_vals = runs_df[(runs_df.attack == label) & (runs_df["mode"] == "amp")][m].tolist()
            (fm, fs), (am, as_) = mean_std(f_vals), mean_std(a_vals)
            ok = abs(am - fm) <= fs
            within[m] &= ok
            lines.append(f"| {label} | {LABELS[m]} | {fm:.2f} | {fs:.2f} | {am:.2f} | {as_:.2f} | {am - fm:+.2f} | "
                         f"{'yes' if ok else 'NO'} |")
    precision = runs_df[runs_df["mode"] == "amp"]["precision"].iloc[0]
    table = "\n".join(lines)
    verdict = ("amp is within the fp32 seed-to-seed spread on every attack and metric" if all(within.values()) else
               "amp is OUTSIDE the fp32 seed-to-seed spread on: "
               + ", ".join(LABELS[m] for m, ok in within.items() if not ok))
    unl = runs_df.groupby("mode")["unlearn_s"].mean()
    report = (f"device {args.device}; amp = {precision}; seeds {args.seeds}; config {Path(args.yaml_path).name} "
              f"{args.defense_args}\n\n{table}\n\nverdict: {verdict}\n"
              f"mean unlearning time per run: fp32 {unl.get('fp32', float('nan')):.1f} s, "
              f"amp {unl.get('amp', float('nan')):.1f} s\n")
    (out / "amp_bench.md").write_text(report)
    print(report)
    plot(curves_df, out / "amp_bench_curves.png")
    print(f"wrote {out / 'amp_bench.md'}, amp_bench_runs.csv, amp_bench_curves.csv, amp_bench_curves.png")
    return 0


def plot(curves, path: Path) -> None:
    """One column per attack, one row per metric; fp32 solid, amp dashed, one line per seed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    attacks = list(dict.fromkeys(curves["attack"]))
    fig, axes = plt.subplots(len(METRICS), len(attacks), figsize=(max(3.2 * len(attacks), 7.0), 2.6 * len(METRICS)),
                             squeeze=False, sharex=True)
    for j, a in enumerate(attacks):
        for i, m in enumerate(METRICS):
            ax = axes[i][j]
            for (mode, seed), g in curves[curves.attack == a].groupby(["mode", "seed"]):
                ax.plot(g["epoch"], g[m], "-" if mode == "fp32" else "--", color=f"C{seed}",
                        label=f"{mode} seed {seed}", linewidth=1.2)
            ax.set_title(f"{a}: {LABELS[m]} (%)", fontsize=9)
            ax.grid(alpha=0.3)
            ax.xaxis.get_major_locator().set_params(integer=True)
            if i == len(METRICS) - 1:
                ax.set_xlabel("epoch")
    axes[0][0].legend(fontsize=7)
    fig.suptitle("SAU per-epoch figures: fp32 (solid) vs amp (dashed), colour = seed", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
