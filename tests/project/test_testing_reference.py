"""The literal reference schedule lives in the package (sau_plugin/testing/reference.py), so the
equivalence tests and bench_scripts/speed.py import it normally (test_layout.py checks that
nothing edits Python's import path)."""

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _imports_reference(path: Path) -> bool:
    tree = ast.parse(path.read_text())
    return any(isinstance(n, ast.ImportFrom) and n.module == "sau_plugin.testing"
               and any(a.name == "reference" for a in n.names) for n in ast.walk(tree))


def test_speed_and_the_tests_import_the_reference_from_the_package():
    for rel in ("bench_scripts/speed.py", "tests/core/test_equivalence.py"):
        assert _imports_reference(REPO / rel), rel
    assert not (REPO / "tests" / "reference_sau.py").exists()
