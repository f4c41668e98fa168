"""One defense run (load, fit, write), shared by ``sau-plugin defend``, BackdoorBench's
``sau`` class and the demo."""

from .defend import DefenseOutcome, run_defense
from .inputs import Inputs, load_inputs

__all__ = ["DefenseOutcome", "Inputs", "load_inputs", "run_defense"]
