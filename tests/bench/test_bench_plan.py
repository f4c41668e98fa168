"""The tables as data and the planner: each shipped table gives the same argv, in the same order, as
the dry run of its bench_scripts/*.sh printed under lib.sh (frozen in fixtures/lib_sh_dry_runs.txt),
plus selections, dependencies and files."""

from __future__ import annotations

import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from sau_plugin import ConfigError
from sau_plugin.bench import Selection, load_table, plan, report_argv, shipped_tables
from tests.helpers.bench_dry_run import frozen_tables, script_dry_run

SCRIPT_TABLES = frozen_tables()
REPO = Path(__file__).resolve().parents[2]


def planned(table: str, **selection):
    t = load_table(table)
    sel = Selection(record_dir="record_cpu" if t.runner == "generator" else "record", **selection)
    return [list(r.argv) for r in plan(t, sel)] + [report_argv(t, sel)]


def test_every_table_script_has_its_frozen_dry_run():
    scripts = [t for t in shipped_tables() if (REPO / "bench_scripts" / f"{t}.sh").is_file()]
    assert sorted(SCRIPT_TABLES) == scripts and set(scripts) <= set(shipped_tables())


@pytest.mark.parametrize("table", [t for t in shipped_tables() if t.endswith("_gen")])
def test_generator_tables_run_from_any_folder_with_the_shipped_config(table, tmp_path):
    """Outside the plugin's checkout a generator table's defenses use the installed demo config."""
    proc = subprocess.run([sys.executable, "-m", "sau_plugin", "bench", table, "--dry-run", "--no-report"],
                          cwd=tmp_path, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "warning" not in proc.stdout
    defenses = [shlex.split(line) for line in proc.stdout.splitlines() if " defend " in line]
    t = load_table(table)
    assert len(defenses) == len(t.defenses) * len(t.attacks) * max(1, len(t.pratios))
    for argv in defenses:
        path = Path(argv[argv.index("--yaml_path") + 1])
        assert path.is_absolute() and path.is_file() and path.name == "demo_mnist.yaml"
        d = t.defenses[argv[argv.index("--defense_name") + 1]]
        assert argv[argv.index("--variant") + 1] == (d.variant or d.name)
        assert argv[-len(d.args):] == list(d.args) if d.args else True


def test_generator_variant_key_puts_runs_of_one_variant_side_by_side():
    t = load_table("table15_gen")
    runs = [r for r in plan(t, Selection(attacks=["badnet"], record_dir="rec")) if r.kind == "defense"]
    pairs = [(r.argv[r.argv.index("--variant") + 1], r.argv[r.argv.index("--defense_name") + 1], r.argv[-1])
             for r in runs]
    assert pairs == [("sau", "sau_n400", "0.1"), ("sau", "sau_n100", "0.025"), ("sau", "sau_n50", "0.0125"),
                     ("sau", "sau_n10", "0.0025")]
    assert len({r.marker for r in runs}) == 4  # four result folders, not one


@pytest.mark.parametrize("table", SCRIPT_TABLES)
def test_a_shipped_table_plans_the_argv_its_script_ran(table):
    assert planned(table) == script_dry_run(table)


@pytest.mark.parametrize("table, args", [
    ("table2", ("--attacks", "wanet,badnet", "--defenses", "sau,anp")),
    ("table4", ("--pratios", "0.3,0.1", "--attacks", "lf")),
    ("cpu_bench", ("--attacks", "sig", "--defenses", "none")),
])
def test_selections_plan_what_the_script_selected(table, args):
    sel = dict(zip(("attacks", "defenses", "pratios"), ([], [], [])))
    for flag, value in zip(args[::2], args[1::2]):
        key = flag[2:]
        sel[key] = [float(v) for v in value.split(",")] if key == "pratios" else value.split(",")
    assert planned(table, **sel) == script_dry_run(table, *args)


def test_table2_is_7_attack_and_49_defense_runs_each_defense_after_its_attack():
    runs = plan(load_table("table2"), Selection(record_dir="rec", cwd="/bb"))
    attacks = [r for r in runs if r.kind == "attack"]
    defenses = [r for r in runs if r.kind == "defense"]
    assert len(attacks) == 7 and len(defenses) == 49 and len({r.id for r in runs}) == 56
    first = attacks[0]
    assert first.id == "cifar10_preactresnet18_badnet_0_1 (attack)" and first.cwd == "/bb"
    assert first.marker == "rec/cifar10_preactresnet18_badnet_0_1/attack_result.pt"
    assert first.log == "bench_logs/table2/cifar10_preactresnet18_badnet_0_1.attack.log"
    assert (first.gpus, first.cpus, first.deps) == (1, 1, ())
    sau = runs[7]
    assert sau.id == "cifar10_preactresnet18_badnet_0_1/defense/sau" and sau.deps == (first.id,)
    assert sau.marker == "rec/cifar10_preactresnet18_badnet_0_1/defense/sau/defense_result.pt"
    assert sau.log == "bench_logs/table2/cifar10_preactresnet18_badnet_0_1.sau.log"
    for d in defenses:
        attack = next(r for r in attacks if r.id == d.deps[0])
        assert runs.index(attack) < runs.index(d) and d.argv[3] == attack.argv[-1]  # --result_file = its folder


def test_extra_args_go_to_every_attack_and_plugin_defense_only():
    runs = plan(load_table("table2"), Selection(attacks=["badnet"], defenses=["fp", "sau"], attack_args=["--epochs", "2"],
                                                defense_args=["--epochs", "1"], device="cuda:1"))
    assert runs[0].argv[-4:] == ("--epochs", "2", "--device", "cuda:1")
    assert runs[1].argv[-4:] == ("--model", "preactresnet18", "--device", "cuda:1")  # BackdoorBench's fp
    assert runs[2].argv[-5:] == ("sau", "--epochs", "1", "--device", "cuda:1")


def test_generator_pratios_are_passed_and_name_the_folder():
    runs = plan(load_table("cpu_bench"), Selection(attacks=["sig"], defenses=["sau"], pratios=[0.05], record_dir="r"))
    assert runs[0].argv[-2:] == ("--pratio", "0.05") and runs[0].marker == "r/sig_0_05/attack_result.pt"
    assert (runs[0].gpus, runs[0].cpus) == (0, 2) and "sig_0_05" in runs[1].argv


@pytest.mark.parametrize("selection, message", [
    (dict(attacks=["badnet", "nope"]), "table2 has no attack 'nope' (it has: badnet, blended, inputaware"),
    (dict(defenses=["sau", "abl"]), "table2 has no defense 'abl' (it has: anp, fp, nc, nad, ep, i-bau, sau)"),
    (dict(pratios=[0.2]), "table2 has no ratio 0.2 (it has: 0.1)"),
    (dict(pratios=[1.5]), "--pratios must lie in (0, 1]; got 1.5"),
])
def test_unknown_selections_are_one_line_errors(selection, message):
    with pytest.raises(ConfigError) as err:
        plan(load_table("table2"), Selection(**selection))
    assert message in str(err.value) and "\n" not in str(err.value)


CUSTOM = """\
caption: "My grid"
runner: backdoorbench
dataset: gtsrb
model: vgg19
pratios: [0.05]
attacks: {bpp: BppAttack}
defenses:
  ft-sam:
  sau_fast: {plugin: true, label: SAU fast, args: [--epochs, 5]}
resources: {gpus: 2, cpus: 8}
"""


def test_a_custom_yaml_is_a_table(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text(CUSTOM)
    table = load_table(str(path))
    runs = plan(table, Selection())
    assert table.name == "mine" and [r.id for r in runs] == [
        "gtsrb_vgg19_bpp_0_05 (attack)", "gtsrb_vgg19_bpp_0_05/defense/ft-sam", "gtsrb_vgg19_bpp_0_05/defense/sau_fast"]
    assert runs[1].argv[:2] == ("python", "./defense/ft-sam.py")
    assert runs[2].argv[-4:] == ("--defense_name", "sau_fast", "--epochs", "5")
    assert {(r.gpus, r.cpus) for r in runs} == {(2, 8)}
    assert "sau_fast=SAU fast" in report_argv(table, Selection())
