"""The shipped YAMLs are package data found with importlib.resources (no symlink), and
setup.cfg lists every package of the source tree."""

import configparser
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from sau_plugin.config.files import SHIPPED, shipped_config

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_config_is_the_repositorys_yaml(name):
    assert shipped_config(f"{name}.yaml").read_bytes() == (REPO / "defense_configs" / "sau" / f"{name}.yaml").read_bytes()


def test_a_missing_shipped_yaml_is_one_clear_error():
    from sau_plugin import ConfigError

    with pytest.raises(ConfigError, match="'nope.yaml' is missing from this installation; reinstall"):
        shipped_config("nope.yaml")


def test_setup_cfg_lists_every_package():
    cfg = configparser.ConfigParser()
    cfg.read(REPO / "setup.cfg")
    listed = set(cfg["options"]["packages"].split())
    on_disk = {".".join(p.parent.relative_to(REPO).parts) for p in (REPO / "sau_plugin").rglob("__init__.py")}
    assert listed == on_disk | {"sau_plugin.configs"}
    assert not (REPO / "sau_plugin" / "configs").exists()  # the YAMLs have one home: defense_configs/sau


@pytest.mark.slow
def test_the_wheel_carries_the_yamls_as_sau_plugin_configs(tmp_path):
    # pip builds in an isolated environment with the build requirements of pyproject.toml (from the registry).
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), str(REPO)],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    names = zipfile.ZipFile(next(tmp_path.glob("sau_plugin-*.whl"))).namelist()
    assert {f"sau_plugin/configs/{n}.yaml" for n in SHIPPED} <= set(names)
    assert "sau_plugin/configs/__init__.py" in names and "sau_plugin/config/files.py" in names
    from sau_plugin.bench import shipped_tables

    assert {f"sau_plugin/bench/tables/{t}.yaml" for t in shipped_tables()} <= set(names)


def test_ray_is_an_optional_extra_that_ci_installs_in_its_first_part_only():
    cfg = configparser.ConfigParser()
    cfg.read(REPO / "setup.cfg")
    extras = {k: v.split() for k, v in cfg["options.extras_require"].items()}
    assert extras["ray"] == ["ray"] and "ray" not in extras["test"]
    assert "ray" not in cfg["options"]["install_requires"]
    ci = (REPO / ".ci" / "run").read_text()
    part1, part2 = ci.split("# --- part 2")
    assert 'pip install --quiet -e ".[test,ray]"' in part1 and "ray" not in part2.replace("Ray", "")
