"""Table YAML validation (one line per problem) and ``sau-plugin bench``."""

from __future__ import annotations

import shlex

import pytest
import yaml

from sau_plugin.config.files import shipped_config

from sau_plugin import ConfigError
from sau_plugin.bench import load_table, shipped_tables, table_from_dict
from sau_plugin.bench.table import TABLES_DIR
from sau_plugin.cli import main

from tests.helpers.bench_dry_run import script_dry_run


def table2() -> dict:
    return yaml.safe_load((TABLES_DIR / "table2.yaml").read_text())


@pytest.mark.parametrize("name", shipped_tables())
def test_every_shipped_table_is_valid(name):
    assert load_table(name).name == name


@pytest.mark.parametrize("change, line", [
    (lambda d: d.update(dataset_name="x"), "t: unknown key 'dataset_name' (known: caption, runner,"),
    (lambda d: d["attacks"].update(badnets="BadNets"), "t: attacks: unknown attack 'badnets'; BackdoorBench's attack/ has"),
    (lambda d: d["defenses"].update(sua=None), "t: defenses: unknown defense 'sua': BackdoorBench's defense/ has"),
    (lambda d: d.update(pratios=0.1), "t: pratios: expected a non-empty list of numbers in (0, 1]; got 0.1"),
    (lambda d: d.update(pratios=[0.1, "ten"]), "t: pratios: expected numbers in (0, 1]; got 'ten'"),
    (lambda d: d.update(runner="slurm"), "t: runner must be one of backdoorbench, generator; got 'slurm'"),
    (lambda d: d["defenses"].update(anp={"args": "--pruning_number 0.4"}), "t: defenses: args of 'anp': expected a list"),
    (lambda d: d["defenses"].update(sau={"plugin": "yes"}), "t: defenses: plugin of 'sau' must be true or false"),
    (lambda d: d["defenses"].update(fp={"lable": "FP"}), "t: defenses: 'fp' has unknown key 'lable' (known: label,"),
    (lambda d: d.update(resources={"gpus": 0.5}), "t: resources: gpus must be a whole number >= 0; got 0.5"),
    (lambda d: d.pop("caption"), "t: caption: missing (a string)"),
    (lambda d: d.update(label_trans="all2some"), "t: label_trans must be one of all2one, all2all; got 'all2some'"),
])
def test_each_problem_is_one_clear_line(change, line):
    data = table2()
    change(data)
    with pytest.raises(ConfigError) as err:
        table_from_dict("table2", data, where="t")
    assert str(err.value).startswith(line) and "\n" not in str(err.value)


def test_several_problems_are_one_line_each():
    data = table2()
    data.update(model=3, colour="red")
    data["attacks"]["nope"] = None
    with pytest.raises(ConfigError) as err:
        table_from_dict("table2", data, where="t")
    lines = str(err.value).splitlines()
    assert len(lines) == 3 and all(line.startswith("t: ") for line in lines)


def test_generator_tables_know_the_generator_and_the_plugin_variants():
    data = yaml.safe_load((TABLES_DIR / "cpu_bench.yaml").read_text())
    data["attacks"]["inputaware"] = None
    data["defenses"]["anp"] = None
    with pytest.raises(ConfigError) as err:
        table_from_dict("cpu_bench", data, where="t")
    assert [line.split(";")[0].split(":")[:3] for line in str(err.value).splitlines()] == [
        ["t", " attacks", " unknown attack 'inputaware'"], ["t", " defenses", " unknown defense 'anp'"]]


@pytest.mark.parametrize("runner, entry, words", [
    ("generator", {"variant": "sua"}, "unknown variant 'sua' of 'x': the plugin's variants are"),
    ("generator", {"variant": 3}, "variant of 'x' must be a plugin variant's name"),
    ("backdoorbench", {"plugin": True, "variant": "sau"}, "for the generator runner only"),
])
def test_a_defenses_variant_key_is_checked(runner, entry, words):
    data = yaml.safe_load((TABLES_DIR / ("cpu_bench.yaml" if runner == "generator" else "table2.yaml")).read_text())
    data["defenses"] = {"x": entry}
    with pytest.raises(ConfigError, match=words):
        table_from_dict("t", data, where="t")


def test_unknown_table_and_broken_yaml(tmp_path):
    with pytest.raises(ConfigError, match="unknown table 'table99': pass one of cpu_bench, table14"):
        load_table("table99")
    bad = tmp_path / "bad.yaml"
    bad.write_text("attacks: [unclosed\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: not valid YAML \("):
        load_table(str(bad))


def test_cli_dry_run_prints_the_scripts_commands_in_order(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    args = ("--attacks", "badnet,lf", "--defenses", "anp,sau")
    assert main(["bench", "table16", "--dry-run", *args]) == 0
    out = capsys.readouterr().out
    cmds = [shlex.split(line) for line in out.splitlines() if not line.startswith("#")]
    assert cmds == script_dry_run("table16", *args)
    assert "# 6 runs (2 attacks, 4 defenses): 6 to run, 0 done" in out


def test_cli_marks_done_runs_and_appends_extra_args(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "rec" / "badnet").mkdir(parents=True)
    (tmp_path / "rec" / "badnet" / "attack_result.pt").write_bytes(b"")
    assert main(["bench", "cpu_bench", "-n", "--attacks", "badnet", "--defenses", "sau", "--record_dir", "rec",
                 "--attack-args", "--epochs 2", "--defense-args", "--epochs 1", "--no-report"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[1] == "# done: badnet (attack) (rec/badnet/attack_result.pt exists)"
    assert lines[2].endswith("--variant sau --defense_name sau --epochs 1")
    assert "--yaml_path " + str(shipped_config("demo_mnist.yaml")) in lines[2]  # not in the checkout: the installed one
    assert lines[3] == "# 2 runs (1 attacks, 1 defenses): 1 to run, 1 done" and len(lines) == 4


def test_cli_warns_when_a_tables_plugin_config_is_missing(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    data = yaml.safe_load((TABLES_DIR / "cpu_bench.yaml").read_text())
    data["sau_yaml"] = "configs/mine.yaml"
    (tmp_path / "mine.yaml").write_text(yaml.safe_dump(data))
    assert main(["bench", str(tmp_path / "mine.yaml"), "-n", "--attacks", "badnet", "--defenses", "sau", "--no-report"]) == 0
    assert "# warning: no plugin config at configs/mine.yaml" in capsys.readouterr().out


def test_cli_refuses_bad_worker_counts_in_one_line(capsys):
    assert main(["bench", "cpu_bench", "--workers", "0"]) == 2
    assert capsys.readouterr().err == "error: --workers must be at least 1; got 0\n"


def test_cli_unknown_selection_and_custom_yaml(tmp_path, capsys):
    assert main(["bench", "table2", "-n", "--defenses", "sau,nope"]) == 2
    assert capsys.readouterr().err == ("error: table2 has no defense 'nope' "
                                       "(it has: anp, fp, nc, nad, ep, i-bau, sau)\n")
    data = table2()
    data["attacks"] = {"sig": "SIG"}
    path = tmp_path / "sig_only.yaml"
    path.write_text(yaml.safe_dump(data))
    assert main(["bench", str(path), "-n", "--defenses", "none", "--no-report"]) == 0
    assert "--save_folder_name cifar10_preactresnet18_sig_0_1" in capsys.readouterr().out
