"""The small-clean-set benchmark: its table's plan (methods x sizes x seeds, the width-64 pass of the
script) and the script's aggregation of seeds (mean, spread, verdict on the bar, PNG) on hand-made results."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from sau_plugin.bench import load_table
from sau_plugin.bench.plan import Selection, plan
from tests.helpers.scripts import load_bench_script

SCRIPT = Path(__file__).resolve().parents[2] / "bench_scripts" / "small_budget.py"


def _script():
    return load_bench_script("small_budget")


def _flag(argv, name):
    return argv[argv.index(name) + 1]


def test_table_runs_each_method_size_and_seed_on_every_attack():
    t = load_table("table_small_budget_gen")
    assert list(t.attacks) == ["badnet", "blended", "wanet", "badnet_all2all"]
    runs = [r for r in plan(t, Selection(attacks=["wanet"], record_dir="rec")) if r.kind == "defense"]
    seen = set()
    for r in runs:
        name, argv = _flag(r.argv, "--defense_name"), r.argv
        method, n, seed = name.split("_")
        n_clean = round(4000 * float(_flag(argv, "--ratio")))  # the generator's 4,000 training digits
        assert (n_clean, int(_flag(argv, "--random_seed"))) == (int(n[1:]), int(seed[1:]))
        assert _flag(argv, "--variant") == "sau"
        kd = ("--lmd_kd" in argv, "--lmd_3" in argv)
        assert kd == ((True, True) if method == "kd" else (False, False)), name
        if method == "kd":
            assert (_flag(argv, "--lmd_kd"), _flag(argv, "--lmd_3")) == ("1.0", "3.0")
        assert (_flag(argv, "--amp"), _flag(argv, "--n_rounds")) == ("False", "20")  # as the figures were measured
        seen.add((method, n_clean, int(seed[1:])))
    assert seen == {(m, n, s) for m in ("sau", "kd") for n in (10, 50, 200, 500) for s in (0, 1, 2)}


def test_script_dry_run_adds_the_full_width_pass(tmp_path):
    proc = subprocess.run([sys.executable, str(SCRIPT), "--dry-run", "--budgets", "50", "--seeds", "0,1",
                           "--wide-budgets", "10", "--wide-seeds", "0", "--python", sys.executable],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    lines = [line for line in proc.stdout.splitlines() if not line.startswith("#")]
    narrow = [line for line in lines if "record_small_budget " in line + " "]
    wide = [line for line in lines if "record_small_budget_w64" in line]
    assert sum("attack --attack" in line for line in narrow) == 4 and sum("defend" in line for line in narrow) == 16
    assert [line.split("--defense_name ")[1].split()[0] for line in wide if "defend" in line] == ["sau_n10_s0", "kd_n10_s0"]
    assert all(line.endswith("--width 64 --attack_amp False") for line in wide if "attack --attack" in line)
    assert all(line.endswith("--attack_amp False") for line in narrow if "attack --attack" in line)  # fp32 records
    # the width-64 model gets BackdoorBench's lr (the demo's 3e-4 wrecks it); width 16 keeps the YAML's
    assert all(line.endswith(" --lr 0.0001") for line in wide if "defend" in line)
    assert not any("--lr" in line for line in narrow)
    assert not (tmp_path / "bench_reports").exists()  # a dry run writes nothing


def test_script_passes_defense_args_to_both_passes_and_wide_args_to_the_wide_one(tmp_path):
    proc = subprocess.run([sys.executable, str(SCRIPT), "--dry-run", "--budgets", "10", "--seeds", "0",
                           "--wide-budgets", "10", "--wide-seeds", "0", "--defense-args", "--adv_steps 3",
                           "--wide-defense-args", "--lr 5e-5", "--python", sys.executable],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    defend = [line for line in proc.stdout.splitlines() if not line.startswith("#") and " defend " in line]
    assert len(defend) == 4 * 2 + 2
    for line in defend:
        wide = "record_small_budget_w64" in line
        assert line.endswith("--adv_steps 3 --lr 5e-5" if wide else "--adv_steps 3"), line


def test_script_refuses_sizes_the_table_lacks(tmp_path):
    proc = subprocess.run([sys.executable, str(SCRIPT), "--dry-run", "--budgets", "25"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "clean-set sizes must be among (10, 50, 200, 500)" in proc.stderr


def _result(root: Path, attack: str, name: str, acc: float, asr: float, ra: float, der: float) -> None:
    d = root / attack / "defense" / name
    d.mkdir(parents=True)
    (d / "sau_result.json").write_text(json.dumps({
        "n_clean": 50, "der": der, "no_defense": {"test_acc": 0.97, "test_asr": 1.0},
        "final": {"test_acc": acc, "test_asr": asr, "test_ra": ra}}))


@pytest.fixture
def finished(tmp_path):
    rec, wide = tmp_path / "rec", tmp_path / "rec_w64"
    # n=50: default drops 6 / 4 points, L_kd 2 / 1: drop 5 vs 1.5 (bar met), ASRs 1 / 2 and 2 / 3
    _result(rec, "badnet", "sau_n50_s0", 0.91, 0.01, 0.90, 96.0)
    _result(rec, "badnet", "sau_n50_s1", 0.93, 0.02, 0.92, 97.0)
    _result(rec, "badnet", "kd_n50_s0", 0.95, 0.02, 0.93, 98.0)
    _result(rec, "badnet", "kd_n50_s1", 0.96, 0.03, 0.94, 98.5)
    _result(wide, "badnet", "sau_n10_s0", 0.80, 0.10, 0.70, 80.0)
    _result(wide, "badnet", "kd_n10_s0", 0.70, 0.05, 0.75, 82.0)  # less ACC at n=10: worse
    _result(rec, "badnet", "not_ours", 0.5, 0.5, 0.5, 0.0)  # another defense's folder is left out
    return tmp_path


def test_summary_aggregates_seeds_and_judges_the_bar(finished):
    proc = subprocess.run([sys.executable, str(SCRIPT), "--summary-only", "--record_dir", str(finished / "rec"),
                           "--out", str(finished / "out")], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    table = (finished / "out" / "table.md").read_text()
    assert "| badnet | 50 | SAU default | 2 | 92.0 ± 1.4 | 1.5 ± 0.7 | 91.0 ± 1.4 | 96.5 ± 0.7 | 5.0 ± 1.4 |" in table
    assert "| badnet | 50 | SAU + L_kd | 2 | 95.5 ± 0.7 | 2.5 ± 0.7 |" in table
    assert "| badnet@w64 | 10 | SAU + L_kd | 1 | 70.0 ± 0.0 |" in table
    assert "n=50 (2 attack x seed pairs): ACC drop 5.00 (default) vs 1.50 (L_kd)" in table
    assert "worst attack's ASR excess 1.00: bar MET" in table
    assert "n=10 (1 attack x seed pairs)" in table and "no worse on every metric: NO" in table
    assert (finished / "out" / "acc_asr_vs_clean_samples.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert len((finished / "out" / "runs.csv").read_text().splitlines()) == 1 + 6


def test_bar_fails_on_one_attack_with_too_much_asr():
    mod = _script()
    rows = [dict(attack=a, method=m, n=50, seed=0, ACC_before=97.0, ACC=acc, ASR=asr, **{"R-ACC": 90.0, "DER": 95.0})
            for a, m, acc, asr in [("x", "sau", 90.0, 0.0), ("x", "kd", 96.0, 2.5), ("y", "sau", 90.0, 0.0),
                                   ("y", "kd", 96.0, 0.5)]]
    line = mod.verdict(rows)[0]
    assert "ACC drop 7.00 (default) vs 1.00" in line and "ASR 0.00 vs 1.50" in line
    assert line.endswith("worst attack's ASR excess 2.50: bar NOT met")


def test_summary_without_finished_runs_says_so(tmp_path):
    proc = subprocess.run([sys.executable, str(SCRIPT), "--summary-only", "--record_dir", str(tmp_path / "none"),
                           "--out", str(tmp_path / "out")], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1 and "no finished run under" in proc.stderr
    assert not (tmp_path / "out").exists()
