"""bench_scripts/*.sh: thin wrappers over ``sau-plugin bench <table>``: syntax (bash -n, shellcheck when
installed), their dry runs (the frozen commands of the former shell engine, the flags users know), and a
real run of a table in a fake BackdoorBench root whose attack / defense scripts are stubs."""

from __future__ import annotations

import csv
import json
import os
import shutil
import shlex
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from sau_plugin.config.files import shipped_config

from sau_plugin.cli import build_parser
from tests.helpers.bench_dry_run import frozen_tables, script_dry_run

REPO = Path(__file__).resolve().parents[2]
SCRIPTS = REPO / "bench_scripts"
ALL_SCRIPTS = sorted(SCRIPTS.glob("*.sh"))
TABLE2_ATTACKS = ["badnet", "blended", "inputaware", "lf", "sig", "ssba", "wanet"]
TABLE2_DEFENSES = ["anp", "fp", "nc", "nad", "ep", "i-bau", "sau"]


def run(script: str, *args: str, cwd: Path, env: dict = None, check: bool = True) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "PYTHON": sys.executable, "PYTHONPATH": str(REPO), **(env or {})}
    proc = subprocess.run(["bash", str(SCRIPTS / script), *args], cwd=cwd, env=full_env, capture_output=True,
                          text=True, timeout=300)
    if check and proc.returncode != 0:
        raise AssertionError(f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}")
    return proc


def commands(out: str):
    return [line for line in out.splitlines() if line and not line.startswith("#")]


def argvs(out: str):
    """The printed commands with the interpreter named as the frozen dry runs name it."""
    return [["python" if a == sys.executable else a for a in shlex.split(c)] for c in commands(out)]


@pytest.mark.parametrize("script", ALL_SCRIPTS, ids=lambda p: p.name)
def test_bash_syntax(script):
    assert subprocess.run(["bash", "-n", str(script)], capture_output=True).returncode == 0


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="shellcheck not installed")
def test_shellcheck_clean():
    proc = subprocess.run(["shellcheck", "-x", *map(str, ALL_SCRIPTS)], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout


def test_every_script_wraps_its_table_and_lib_sh_is_gone():
    assert not (SCRIPTS / "lib.sh").exists()
    assert sorted(p.stem for p in ALL_SCRIPTS) == sorted(frozen_tables())
    for script in ALL_SCRIPTS:
        body = [line for line in script.read_text().splitlines() if line and not line.startswith("#")]
        assert body == [f'exec "${{PYTHON:-python}}" -m sau_plugin bench {script.stem} --python "${{PYTHON:-python}}" "$@"']


@pytest.mark.parametrize("table", ["table2", "table4", "table14", "table16", "cpu_bench"])
def test_a_scripts_dry_run_prints_the_commands_lib_sh_printed(table, tmp_path):
    config = tmp_path / "defense_configs" / "sau" / "demo_mnist.yaml"  # as in the plugin's checkout
    config.parent.mkdir(parents=True)
    config.write_text((REPO / "defense_configs" / "sau" / "demo_mnist.yaml").read_text())
    assert argvs(run(f"{table}.sh", "--dry-run", cwd=tmp_path).stdout) == script_dry_run(table)


def test_table2_dry_run_lists_all_7_x_8_runs(tmp_path):
    out = run("table2.sh", "--dry-run", cwd=tmp_path).stdout
    cmds = commands(out)
    attacks = [c for c in cmds if "./attack/" in c]
    defenses = [c for c in cmds if "./defense/" in c]
    reports = [c for c in cmds if "sau_plugin report" in c]
    assert len(attacks) == 7 and len(defenses) == 49 and len(reports) == 1 and len(cmds) == 57
    assert "# 56 runs (7 attacks, 49 defenses): 56 to run, 0 done" in out
    assert "# warning: not a BackdoorBench root (no ./attack/prototype.py): cd to BackdoorBench first" in out
    assert attacks[0] == (f"{sys.executable} ./attack/badnet.py --yaml_path ./config/attack/prototype/cifar10.yaml "
                          "--bd_yaml_path ./config/attack/badnet/default.yaml --model preactresnet18 --pratio 0.1 "
                          "--save_folder_name cifar10_preactresnet18_badnet_0_1")
    for attack in TABLE2_ATTACKS:
        folder = f"cifar10_preactresnet18_{attack}_0_1"
        assert sum(f"--save_folder_name {folder}" in c for c in attacks) == 1
        for name in TABLE2_DEFENSES:
            script = "sau_plugin" if name == "sau" else name
            hits = [c for c in defenses if f"./defense/{script}.py --result_file {folder} " in c]
            assert len(hits) == 1, (attack, name)
            assert "--dataset cifar10 --model preactresnet18" in hits[0]
    anp = [c for c in defenses if "./defense/anp.py" in c]
    assert all(c.endswith("--pruning_by threshold --pruning_number 0.4") for c in anp)
    sau = [c for c in defenses if "sau_plugin.py" in c]
    assert all("--yaml_path ./config/defense/sau_plugin/cifar10.yaml" in c and c.endswith("--defense_name sau")
               for c in sau)
    report = reports[0]
    assert "--attacks cifar10_preactresnet18_badnet_0_1=BadNets" in report
    assert "--defenses anp fp nc nad ep i-bau sau" in report


def test_slice_and_skip_existing(tmp_path):
    folder = tmp_path / "record" / "cifar10_preactresnet18_badnet_0_1"
    (folder / "defense" / "anp").mkdir(parents=True)
    (folder / "attack_result.pt").write_bytes(b"x")
    (folder / "defense" / "anp" / "defense_result.pt").write_bytes(b"x")
    out = run("table2.sh", "--dry-run", "--attacks", "badnet,wanet", "--defenses", "anp,sau", cwd=tmp_path).stdout
    cmds = [c for c in commands(out) if "sau_plugin report" not in c]
    assert cmds == [c for c in cmds if "badnet" in c or "wanet" in c] and len(cmds) == 4
    assert "# done: cifar10_preactresnet18_badnet_0_1 (attack)" in out
    assert "# done: cifar10_preactresnet18_badnet_0_1/defense/anp" in out
    assert "# 6 runs (2 attacks, 4 defenses): 4 to run, 2 done" in out
    only_attacks = commands(run("table2.sh", "--dry-run", "--defenses", "none", "--no-report", cwd=tmp_path).stdout)
    assert len(only_attacks) == 6 and all("./attack/" in c for c in only_attacks)  # badnet is done


def test_bad_selection_is_refused(tmp_path):
    proc = run("table2.sh", "--dry-run", "--attacks", "badnets", cwd=tmp_path, check=False)
    assert proc.returncode == 2 and proc.stderr.startswith("error: table2 has no attack 'badnets' (it has: badnet,")
    proc = run("table6.sh", "--dry-run", "--defenses", "anp", cwd=tmp_path, check=False)
    assert proc.returncode == 2 and "table6 has no defense 'anp'" in proc.stderr  # no BN in VGG19
    assert run("table2.sh", "--bogus", cwd=tmp_path, check=False).returncode == 2


def test_the_flags_the_scripts_took_still_work(tmp_path):
    out = run("table4.sh", "-n", "--pratios", "0.2", "--attacks", "lf", "--defenses", "sau", "--device", "cuda:1",
              "--python", "python3", "--no-report", cwd=tmp_path).stdout
    assert [c.split()[0] for c in commands(out)] == ["python3", "python3"]
    assert all(c.endswith("--device cuda:1") for c in commands(out)) and "lf_0_2" in commands(out)[0]
    assert "usage: sau-plugin bench" in run("table2.sh", "--help", cwd=tmp_path).stdout


@pytest.mark.parametrize("script,n_attack_runs,n_defense_runs,needles", [
    ("table3.sh", 6, 42, ["./config/attack/prototype/tiny.yaml", "tiny_preactresnet18_wanet_0_1"]),
    ("table6.sh", 7, 35, ["--model vgg19", "cifar10_vgg19_sig_0_1"]),
    ("table7.sh", 6, 30, ["tiny_vgg19_ssba_0_1"]),
    ("table8.sh", 6, 42, ["./config/defense/i-bau/gtsrb.yaml"]),
    ("table9.sh", 6, 30, ["gtsrb_vgg19_lf_0_1"]),
    ("table4.sh", 15, 15, ["--pratio 0.5 --save_folder_name cifar10_preactresnet18_lf_0_5",
                           "'cifar10_preactresnet18_blended_0_3=Blended 30%'"]),
    ("table14.sh", 7, 35, ["--defense_name sau_linf_0.1_0.1 --norm_type L_inf --trigger_norm 0.1 --adv_lr 0.1 --adv_steps 5",
                           "--defense_name sau_linf_0.2_0.1 --norm_type L_inf --trigger_norm 0.2 --adv_lr 0.1 --adv_steps 5",
                           "--defense_name sau_l2_5_0.2 --norm_type L2 --trigger_norm 5 --adv_lr 0.2 --adv_steps 5",
                           "--defense_name sau_l1_300_0.2 --norm_type L1 --trigger_norm 300 --adv_lr 0.2 --adv_steps 5",
                           "'sau=Config 1 (Default)'"]),
    ("table15.sh", 3, 15, ["--defense_name sau_n1000 --ratio 0.02", "--defense_name sau_n500 --ratio 0.01",
                           "--defense_name sau_n50 --ratio 0.001", "--defense_name sau_n10 --ratio 0.0002"]),
    ("table16.sh", 7, 49, ["--save_folder_name cifar10_preactresnet18_badnet_0_1_all2all --attack_label_trans all2all"]),
])
def test_other_tables_dry_run(tmp_path, script, n_attack_runs, n_defense_runs, needles):
    out = run(script, "--dry-run", cwd=tmp_path).stdout
    cmds = commands(out)
    assert sum("./attack/" in c for c in cmds) == n_attack_runs
    assert sum("./defense/" in c for c in cmds) == n_defense_runs
    for needle in needles:
        assert needle in out, needle


def test_cpu_bench_dry_run(tmp_path):
    out = run("cpu_bench.sh", "--dry-run", cwd=tmp_path).stdout
    cmds = commands(out)
    attacks = [c for c in cmds if " -m sau_plugin attack " in c]
    defends = [c for c in cmds if " -m sau_plugin defend " in c]
    assert len(attacks) == 6 and len(defends) == 30
    assert attacks[-1].endswith("attack --attack badnet_all2all --record_dir record_cpu --name badnet_all2all --no_progress")
    assert defends[0].endswith("defend --result_file badnet --record_dir record_cpu --yaml_path "
                               f"{shipped_config('demo_mnist.yaml')} --dataset mnist --device cpu --variant ft "
                               "--defense_name ft")  # outside the checkout: the installed config
    assert {c.split("--variant ")[1].split()[0] for c in defends} == {"ft", "at", "sau", "a+d", "c+b"}
    assert "# warning" not in out
    assert "--dataset mnist --model preactresnet18 --pratio 0.1" in cmds[-1]
    assert "--attacks badnet=BadNets" in cmds[-1] and "'at=Vanilla AT'" in cmds[-1]
    # every command the script would run parses with the plugin's real command line
    for cmd in attacks + defends + [cmds[-1]]:
        argv = shlex.split(cmd.split(" -m sau_plugin ", 1)[1])
        build_parser(argv).parse_args(argv)


def test_cpu_bench_passes_an_explicit_poisoning_ratio(tmp_path):
    out = run("cpu_bench.sh", "--dry-run", "--attacks", "sig", "--pratios", "0.05", cwd=tmp_path).stdout
    attack = next(c for c in commands(out) if " -m sau_plugin attack " in c)
    assert attack.endswith("--no_progress --pratio 0.05") and "--name sig_0_05" in attack


def test_interrupted_plugin_runs_are_resumed(tmp_path):
    # a plugin run's files without defense_result.pt are a run that was killed: continue it, do not restart or fail
    for folder, name in [("record/cifar10_preactresnet18_badnet_0_1", "sau"), ("record_cpu/sig", "c+b")]:
        (tmp_path / folder / "defense" / name / "checkpoint").mkdir(parents=True)
        (tmp_path / folder / "defense" / name / "checkpoint" / "last.pt").write_bytes(b"")
    table2 = commands(run("table2.sh", "--dry-run", "--attacks", "badnet,sig", "--defenses", "anp,sau",
                          "--no-report", cwd=tmp_path).stdout)
    resumed = [c for c in table2 if c.endswith("--resume")]
    assert len(resumed) == 1 and "--result_file cifar10_preactresnet18_badnet_0_1 " in resumed[0]
    assert "./defense/sau_plugin.py" in resumed[0]
    cpu = commands(run("cpu_bench.sh", "--dry-run", "--attacks", "sig,lf", "--no-report", cwd=tmp_path).stdout)
    resumed = [c for c in cpu if "--resume" in c]
    assert len(resumed) == 1 and "--result_file sig " in resumed[0] and "--variant c+b" in resumed[0]
    argv = shlex.split(resumed[0].split(" -m sau_plugin ", 1)[1])
    assert build_parser(argv).parse_args(argv).resume is True


# ------------------------------------------------------------------------------------------------------------
# a real run of a table: a fake BackdoorBench root with stub scripts that write what the real ones write

STUB = textwrap.dedent('''
    import argparse, os, sys, zlib
    import pandas as pd
    p = argparse.ArgumentParser()
    p.add_argument("--save_folder_name"); p.add_argument("--result_file"); p.add_argument("--defense_name")
    args, _ = p.parse_known_args()
    script = os.path.basename(sys.argv[0])[:-3]
    if os.environ.get("STUB_FAIL") == script:
        sys.exit(3)
    def summary(path, acc, asr, ra):
        df = pd.DataFrame({"test_acc": [acc, acc, False], "test_asr": [asr, asr, False], "test_ra": [ra, ra, False]},
                          index=["last", "valid_max", "exist_nan_value"])
        df.to_csv(path)
    if args.save_folder_name:  # an attack
        d = os.path.join("record", args.save_folder_name)
        os.mkdir(d)  # as BackdoorBench does: fails if the folder exists
        summary(os.path.join(d, "attack_df_summary.csv"), 0.91, 0.95, 0.04)
        open(os.path.join(d, "attack_result.pt"), "wb").close()
    else:
        name = args.defense_name or script
        d = os.path.join("record", args.result_file, "defense", name)
        os.makedirs(d, exist_ok=True)
        asr = (zlib.crc32(name.encode()) % 50) / 1000
        summary(os.path.join(d, f"{name}_df_summary.csv"), 0.89, asr, 0.85)
        open(os.path.join(d, "defense_result.pt"), "wb").close()
''')


@pytest.fixture()
def fake_root(tmp_path):
    root = tmp_path / "BackdoorBench"
    for sub in ("attack", "defense", "config", "record", "resource/badnet", "resource/blended"):
        (root / sub).mkdir(parents=True)
    (root / "attack" / "prototype.py").write_text("")
    for name in TABLE2_ATTACKS:
        (root / "attack" / f"{name}.py").write_text(STUB)
    for name in ["anp", "fp", "nc", "nad", "ep", "i-bau", "sau_plugin"]:
        (root / "defense" / f"{name}.py").write_text(STUB)
    (root / "resource/badnet/trigger_image.png").write_bytes(b"")
    (root / "resource/blended/hello_kitty.jpeg").write_bytes(b"")
    return root


def ledger(root: Path):
    return [json.loads(line) for line in (root / "bench_reports" / "table2.runs.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_real_run_skips_done_runs_and_reports(fake_root):
    args = ("--attacks", "badnet,blended,ssba", "--defenses", "nc,sau", "--workers", "2", "--no-progress")
    proc = run("table2.sh", *args, cwd=fake_root, check=False)
    assert proc.returncode == 1  # SSBA lacks its resource files: blocked, reported, exit 1
    out = proc.stdout
    assert (fake_root / "record/cifar10_preactresnet18_badnet_0_1/defense/sau/defense_result.pt").is_file()
    assert "9 runs: 6 run now, 0 already done, 3 failed or blocked" in out
    assert ("  failed: cifar10_preactresnet18_ssba_0_1 (attack): needs ./resource/ssba/cifar10_ssba_train_b1.npy"
            in proc.stderr)
    assert ("  failed: cifar10_preactresnet18_ssba_0_1/defense/nc: cifar10_preactresnet18_ssba_0_1 (attack) did not "
            "succeed; log bench_logs/table2/cifar10_preactresnet18_ssba_0_1.nc.log") in proc.stderr
    assert (fake_root / "bench_logs/table2/cifar10_preactresnet18_badnet_0_1.sau.log").is_file()
    last = {e["run"]: e for e in ledger(fake_root)}
    assert sorted(e["status"] for e in last.values()) == ["blocked"] * 3 + ["done"] * 6
    assert last["cifar10_preactresnet18_badnet_0_1/defense/sau"]["command"].startswith(
        f"{sys.executable} ./defense/sau_plugin.py --result_file cifar10_preactresnet18_badnet_0_1 ")
    table = (fake_root / "bench_reports/table2.md").read_text()
    assert table in out  # printed at the end
    row = next(line for line in table.splitlines() if line.startswith("| BadNets"))
    assert row.startswith("| BadNets | 91.00 | 95.00 | 4.00 | N/A | missing | missing | missing | missing |")
    assert next(line for line in table.splitlines() if line.startswith("| SSBA")).count("missing") == 15
    board = list(csv.DictReader((fake_root / "bench_reports/leaderboard.csv").read_text().splitlines()))
    extras = list(csv.DictReader((fake_root / "bench_reports/leaderboard_extras.csv").read_text().splitlines()))
    assert len(board) == len(extras) == 7 * 8  # the whole grid of the table, missing runs marked missing
    assert [r[""] for r in board] == [str(i) for i in range(7 * 8)]  # BackdoorBench's index column
    badnet = {r["defense_name"]: r for r in extras if r["record"] == "cifar10_preactresnet18_badnet_0_1"}
    assert set(badnet) == {"no defense", *TABLE2_DEFENSES}
    assert badnet["nc"]["status"] == "ok" and badnet["anp"]["status"] == "missing"
    nc = next(r for r in board if r["attack_name"] == "cifar10_preactresnet18_badnet_0_1" and r["defense_name"] == "nc")
    assert nc["test_acc"] and not next(r for r in board if r["defense_name"] == "anp")["test_acc"]

    n_before = len(ledger(fake_root))
    again = run("table2.sh", "--attacks", "badnet,blended", "--defenses", "nc,sau", cwd=fake_root)
    assert "6 runs: 0 run now, 6 already done, 0 failed or blocked" in again.stdout
    assert [e["status"] for e in ledger(fake_root)[n_before:]] == ["skipped"] * 6


@pytest.mark.slow
def test_real_run_failure_keeps_going(fake_root):
    proc = run("table2.sh", "--attacks", "badnet", "--defenses", "nc,i-bau,sau", cwd=fake_root,
               env={"STUB_FAIL": "i-bau"}, check=False)
    assert proc.returncode == 1
    assert proc.stderr.endswith("  failed: cifar10_preactresnet18_badnet_0_1/defense/i-bau: exit 3; "
                                "log bench_logs/table2/cifar10_preactresnet18_badnet_0_1.i-bau.log\n")
    assert (fake_root / "record/cifar10_preactresnet18_badnet_0_1/defense/sau/defense_result.pt").is_file()
    (fake_root / "record/cifar10_preactresnet18_badnet_0_1").rename(fake_root / "record/moved")
    (fake_root / "record/cifar10_preactresnet18_badnet_0_1").mkdir()  # an interrupted attack
    proc = run("table2.sh", "--attacks", "badnet", "--defenses", "sau", cwd=fake_root, check=False)
    assert proc.returncode == 1 and "exists without attack_result.pt (interrupted?)" in proc.stderr


def test_real_run_outside_backdoorbench_is_refused(tmp_path):
    proc = run("table2.sh", cwd=tmp_path, check=False)
    assert proc.returncode == 2
    assert proc.stderr == "error: not a BackdoorBench root (no ./attack/prototype.py): cd to BackdoorBench first\n"
    assert not (tmp_path / "bench_reports").exists()  # nothing half-written
