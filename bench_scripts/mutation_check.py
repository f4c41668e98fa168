#!/usr/bin/env python3
"""Mutation check: does the test suite fail for each plausible mistake in SAU's core?

Each mutant is one small textual change to the package (a wrong mask, a missing early
stop, wrong L_sar clamps, ...). For each, the repository (without .git) is copied to a
temporary folder, the mutant is applied to the copy only, and the chosen tests run
against that copy; the real tree is never edited. A mutant is *caught* when at least
one test fails. The unchanged copy runs first (``baseline``), which must pass: otherwise
every mutant would look caught.

    python bench_scripts/mutation_check.py                 # all mutants, default tests
    python bench_scripts/mutation_check.py --mutants js_mask,no_early_stop --tests tests/core/test_core_math.py

A mutant may name further tests (``also``) that reach its line by another path (the
targeted attack runs shared PGD's step loop); they run besides ``--tests`` for that mutant,
and for the baseline.

Prints one table row per mutant: caught or not, and which tests failed. A mutant that is
equivalent to the original (no output can differ; its entry says why) is reported as
such. Exit status 0 when the baseline passes and every other mutant is caught, 1 otherwise. It runs the tests
once per mutant (minutes on two CPU cores), so CI does not run it;
tests/bench/test_mutation_check.py checks that every mutant still applies to the package.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

REPO = Path(__file__).resolve().parents[1]
DEFAULT_TESTS = ("tests/core/test_equivalence.py", "tests/core/test_core_math.py")
IGNORE = shutil.ignore_patterns(".git", "__pycache__", "*.egg-info", ".pytest_cache", ".venv*", "record", "data")


@dataclass(frozen=True)
class Mutant:
    name: str
    description: str
    path: str  # file under the repository root
    old: str  # must occur exactly once
    new: str
    equivalent: str = ""  # why no test can tell it from the original, when that is so
    also: Tuple[str, ...] = ()  # tests run for this mutant besides --tests: other paths through the changed code


MUTANTS: Tuple[Mutant, ...] = (
    Mutant("js_mask", "JS term masked by ~(fooled & fooled_ref) instead of ~shared",
           "sau_plugin/core/pgd.py",
           "loss_share = masked_sum(js_divergence(logits, logits_ref), ~shared) / n",
           "loss_share = masked_sum(js_divergence(logits, logits_ref), ~(fooled & fooled_ref)) / n"),
    Mutant("no_early_stop", "shared PGD never stops early",
           "sau_plugin/core/pgd.py",
           "                if bool(obj.shared.all()):  # after the update, as the reference\n                    break\n",
           "                if False:\n                    break\n",
           also=("tests/core/test_shared_forms.py",)),  # the targeted attack runs the same step loop
    Mutant("early_stop_before_update", "early stop checked before the update instead of after",
           "sau_plugin/core/pgd.py",
           "                pert = self._step(pert.detach(), self._grad(obj.loss, pert))\n"
           "                if bool(obj.shared.all()):  # after the update, as the reference\n                    break\n",
           "                if bool(obj.shared.all()):\n                    break\n"
           "                pert = self._step(pert.detach(), self._grad(obj.loss, pert))\n",
           equivalent="when every sample is shared, both masked terms are empty, d loss / d eps is exactly 0 and "
                      "the update is a no-op (up to the L2/L1 re-projection's last-bit rounding); "
                      "test_core_math::test_the_update_at_the_stopping_step_is_a_no_op pins this"),
    Mutant("sar_clamps", "L_sar clamps 0.999 / 0.001 -> 0.99 / 0.01",
           "sau_plugin/core/losses.py",
           "-torch.log(1e-6 + p_rest.clamp(max=0.999)) - torch.log(1 + 1e-6 - p_y.clamp(min=0.001))",
           "-torch.log(1e-6 + p_rest.clamp(max=0.99)) - torch.log(1 + 1e-6 - p_y.clamp(min=0.01))"),
    Mutant("potential_poison", "potential_poison without h_bd(x~) != h_bd(x)",
           "sau_plugin/core/outer.py",
           "potential = (y_tilde != labels) & (y_tilde != clean_pred_ref)",
           "potential = y_tilde != labels"),
    Mutant("l2_rescale_inside", "L2 projection rescales samples inside the ball too",
           "sau_plugin/core/perturbation.py",
           "scale = torch.where(size > bound, bound / size.clamp_min(1e-12), torch.ones_like(size))",
           "scale = torch.where((size > bound) | (norm == \"L2\"), bound / size.clamp_min(1e-12), torch.ones_like(size))"),
    Mutant("masks_vs_labels", "PGD masks measured against y instead of each model's clean prediction",
           "sau_plugin/core/pgd.py",
           "logits, logits_ref, labels, clean_pred, clean_pred_ref, self.beta_1, self.beta_2))",
           "logits, logits_ref, labels, labels, labels, self.beta_1, self.beta_2))"),
    Mutant("hbd_cache_is_h", "the cached h_bd(x) computed with h instead",
           "sau_plugin/core/unlearn.py",
           "preds.append(self.forward_ref(images[i:i + self.cfg.batch_size]).argmax(1))",
           "preds.append(self.forward(images[i:i + self.cfg.batch_size]).argmax(1))"),
)


def apply(mutant: Mutant, root: Path) -> None:
    """Apply ``mutant`` to the copy at ``root`` (refused unless its text occurs exactly once)."""
    path = root / mutant.path
    text = path.read_text()
    count = text.count(mutant.old)
    if count != 1:
        raise SystemExit(f"mutant {mutant.name}: expected its text once in {mutant.path}, found it {count} times; "
                         f"update MUTANTS in {Path(__file__).name} to the current code")
    path.write_text(text.replace(mutant.old, mutant.new))


def copy_repo(dest: Path) -> Path:
    root = dest / "repo"
    shutil.copytree(REPO, root, symlinks=True, ignore=IGNORE)
    return root


def run_tests(root: Path, tests: Sequence[str], extra: Sequence[str]) -> Tuple[int, List[str], float]:
    """pytest on the copy; returns (exit code, failed test ids, seconds)."""
    missing = [t for t in tests if not (root / t.split("::", 1)[0]).exists()]
    if missing:  # pytest would exit non-zero, which would read as a caught mutant
        raise SystemExit(f"no such test path(s) in the repository: {', '.join(missing)}")
    env = dict(os.environ, PYTHONPATH=str(root), PYTHONDONTWRITEBYTECODE="1")
    where = subprocess.run([sys.executable, "-c", "import sau_plugin; print(sau_plugin.__file__)"], cwd=root, env=env,
                           capture_output=True, text=True, check=True).stdout.strip()
    if root.resolve() not in Path(where).resolve().parents:  # (Path.is_relative_to needs Python 3.9)
        raise SystemExit(f"the tests would import sau_plugin from {where}, not from the mutated copy {root}")
    report = root / "junit.xml"
    t = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--junitxml={report}",
                           *tests, *extra], cwd=root, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - t
    failed = []
    if report.is_file():
        for case in ET.parse(report).getroot().iter("testcase"):
            if case.find("failure") is not None or case.find("error") is not None:
                failed.append(f"{case.get('classname', '').rsplit('.', 1)[-1]}::{case.get('name')}")
    if proc.returncode not in (0, 1) and not failed:  # collection error, crash: show why
        failed.append(f"pytest exit {proc.returncode}: {proc.stdout.strip().splitlines()[-1:]}")
    return proc.returncode, failed, seconds


def summarise(failed: List[str], full: bool = False) -> str:
    """``-``, or the failed tests grouped by test function (``name xN`` for N parametrisations)."""
    if not failed:
        return "-"
    if full:
        return ", ".join(failed)
    groups: dict = {}
    for test in failed:
        base = test.split("[", 1)[0]
        groups[base] = groups.get(base, 0) + 1
    return f"{len(failed)}: " + ", ".join(f"{b} x{n}" if n > 1 else b for b, n in groups.items())


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--mutants", default="all", help="comma list of mutant names (default all): "
                   + ", ".join(m.name for m in MUTANTS))
    p.add_argument("--tests", nargs="+", default=list(DEFAULT_TESTS), help="test paths (default: %(default)s)")
    p.add_argument("--no-baseline", action="store_true", help="skip the run of the unchanged copy")
    p.add_argument("--full-names", action="store_true", help="list every failed test")
    p.add_argument("--pytest-args", default="", help="extra pytest arguments, e.g. '-x'")
    args = p.parse_args(argv)
    chosen = list(MUTANTS) if args.mutants == "all" else [m for m in MUTANTS if m.name in args.mutants.split(",")]
    unknown = set(args.mutants.split(",")) - {m.name for m in MUTANTS} if args.mutants != "all" else set()
    if unknown:
        raise SystemExit(f"unknown mutant(s) {', '.join(sorted(unknown))}; known: {', '.join(m.name for m in MUTANTS)}")
    extra = args.pytest_args.split()
    print(f"tests: {' '.join(args.tests)}", flush=True)
    rows, ok = [], True
    with tempfile.TemporaryDirectory(prefix="sau_mutants_") as tmp:
        for mutant in ([None] if not args.no_baseline else []) + chosen:
            work = Path(tmp) / (mutant.name if mutant else "baseline")
            work.mkdir()
            root = copy_repo(work)
            if mutant is not None:
                apply(mutant, root)
            also = mutant.also if mutant else dict.fromkeys(a for m in chosen for a in m.also)  # baseline: all
            code, failed, seconds = run_tests(root, [*args.tests, *also], extra)
            if mutant is None:
                verdict = "passes" if code == 0 else "FAILS"
                ok &= code == 0
                rows.append(("baseline (no change)", verdict, summarise(failed, args.full_names), seconds))
            else:
                caught = code != 0
                ok &= caught or bool(mutant.equivalent)
                verdict = ("caught" if caught else
                           f"not caught: equivalent ({mutant.equivalent})" if mutant.equivalent else "NOT CAUGHT")
                rows.append((f"{mutant.name}: {mutant.description}", verdict, summarise(failed, args.full_names),
                             seconds))
            print(f"{rows[-1][0]}: {rows[-1][1]} ({seconds:.0f} s)", flush=True)
            shutil.rmtree(work)
    print()
    print("| mutant | result | failed tests | time |")
    print("| --- | --- | --- | ---: |")
    for name, verdict, failed, seconds in rows:
        print(f"| {name} | {verdict} | {failed} | {seconds:.0f} s |")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
