"""bench_scripts/mutation_check.py: every mutant still applies to the package (so the script
cannot silently rot), it works on a copy only, and its plumbing reports caught / not caught."""

from __future__ import annotations

import hashlib
import py_compile
from pathlib import Path

import pytest

from tests.helpers.scripts import load_bench_script

REPO = Path(__file__).resolve().parents[2]


def _module():
    return load_bench_script("mutation_check")


def _digest(root: Path) -> str:
    h = hashlib.sha256()
    for f in sorted((root / "sau_plugin").rglob("*.py")):
        h.update(f.read_bytes())
    return h.hexdigest()


def test_every_mutant_applies_once_to_a_copy_and_compiles(tmp_path):
    mc = _module()
    assert len(mc.MUTANTS) == len({m.name for m in mc.MUTANTS}) == 8
    before = _digest(REPO)
    root = mc.copy_repo(tmp_path)
    for m in mc.MUTANTS:
        original = (root / m.path).read_text()
        mc.apply(m, root)
        mutated = (root / m.path).read_text()
        assert mutated != original and m.new in mutated, m.name
        py_compile.compile(str(root / m.path), doraise=True)
        (root / m.path).write_text(original)
        assert all((root / t).is_file() for t in m.also), m.name
    assert _digest(REPO) == before  # the real tree is never edited


def test_summary_groups_failed_parametrisations():
    mc = _module()
    failed = ["t::a[x]", "t::a[y]", "t::b"]
    assert mc.summarise(failed) == "3: t::a x2, t::b"
    assert mc.summarise(failed, full=True) == "t::a[x], t::a[y], t::b" and mc.summarise([]) == "-"


def test_a_mutant_whose_text_is_gone_is_refused(tmp_path):
    mc = _module()
    root = mc.copy_repo(tmp_path)
    stale = mc.Mutant("stale", "text no longer in the code", "sau_plugin/core/pgd.py", "no such line", "x")
    with pytest.raises(SystemExit, match="expected its text once in sau_plugin/core/pgd.py, found it 0 times"):
        mc.apply(stale, root)


def test_a_missing_test_path_is_refused_not_counted_as_a_catch(tmp_path):
    mc = _module()
    root = mc.copy_repo(tmp_path)
    with pytest.raises(SystemExit, match="no such test path\\(s\\) in the repository: tests/core/no_such_test.py"):
        mc.run_tests(root, ["tests/core/test_core_math.py", "tests/core/no_such_test.py::test_x"], [])


@pytest.mark.slow
def test_reports_caught_and_not_caught(capsys):
    mc = _module()
    # the clamp unit test catches wrong L_sar clamps; a JS mask change is invisible to it
    code = mc.main(["--mutants", "sar_clamps,js_mask", "--tests", "tests/core/test_core_math.py",
                    "--pytest-args", "-k sar_loss_equals"])
    out = capsys.readouterr().out
    assert code == 1
    assert "| baseline (no change) | passes | - |" in out
    assert ("| sar_clamps: L_sar clamps 0.999 / 0.001 -> 0.99 / 0.01 | caught | "
            "1: test_core_math::test_sar_loss_equals_the_formula_on_a_hand_computed_example |") in out
    assert "| js_mask: JS term masked by ~(fooled & fooled_ref) instead of ~shared | NOT CAUGHT | - |" in out
