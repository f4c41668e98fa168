"""bench_scripts/*.py imported as modules (they are scripts, not part of the package)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

BENCH_SCRIPTS = Path(__file__).resolve().parents[2] / "bench_scripts"


def load_bench_script(name: str) -> ModuleType:
    """``bench_scripts/<name>.py`` as a fresh module, registered in sys.modules (dataclasses look it up there)."""
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCH_SCRIPTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module
