"""The package's shape, checked: small modules, rooms that use only each other's public names,
a core that imports nothing of the package but its errors and compatibility shims, and no
edits of Python's import path."""

import ast
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PACKAGE = REPO / "sau_plugin"
MAX_LINES = 350


def _modules():
    return sorted(PACKAGE.rglob("*.py"))


def _imports(path: Path):
    """(module the import resolves to, names imported) for each `from ... import` of a file."""
    tree = ast.parse(path.read_text())
    package = ".".join(path.relative_to(REPO).with_suffix("").parts[:-1])
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            yield target, [a.name for a in node.names]
        elif isinstance(node, ast.Import):
            for a in node.names:
                yield a.name, []


def test_no_module_is_longer_than_350_lines():
    long = {str(p.relative_to(REPO)): n for p in _modules() if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not long, f"split these modules: {long}"


def test_no_module_imports_a_private_name_of_another_module():
    bad = []
    for path in _modules():
        for target, names in _imports(path):
            if target.startswith("sau_plugin"):
                bad += [f"{path.relative_to(REPO)}: {target}.{n}" for n in names
                        if n.startswith("_") and not n.startswith("__")]
    assert not bad, bad


def test_the_core_imports_only_torch_and_the_packages_errors_and_compat():
    allowed = {"sau_plugin.errors", "sau_plugin.compat", "sau_plugin.config"}
    bad = []
    for path in sorted((PACKAGE / "core").glob("*.py")):
        for target, _ in _imports(path):
            if target.startswith("sau_plugin") and not target.startswith("sau_plugin.core") and target not in allowed:
                bad.append(f"{path.name}: {target}")
    assert not bad, bad


def test_nothing_edits_pythons_import_path():
    if not (REPO / ".git").exists():
        pytest.skip("not a git checkout")
    done = subprocess.run(["git", "grep", "-n", "sys.path", "--", "sau_plugin", "bench_scripts", "tests"],
                          cwd=REPO, capture_output=True, text=True)
    hits = [line for line in done.stdout.splitlines() if not line.startswith("tests/project/test_layout.py:")]
    assert not hits, hits


def test_the_code_cites_the_paper_not_files_outside_the_repository():
    if not (REPO / ".git").exists():
        pytest.skip("not a git checkout")
    done = subprocess.run(["git", "grep", "-n", "-e", "SAU_SPEC", "-e", "/work/shared", "--", "sau_plugin", "bench_scripts"],
                          cwd=REPO, capture_output=True, text=True)
    assert not done.stdout.strip(), done.stdout
