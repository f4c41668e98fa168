"""sau_plugin: Shared Adversarial Unlearning (Wei et al., NeurIPS 2023) for BackdoorBench.

Public API::

    from sau_plugin import SAUConfig, SharedPGD, Unlearner, unlearn, evaluate_clean, evaluate_backdoor, der
"""

from .config import SAUConfig
from .core import (PGD, Callback, DataParallel, PGDResult, PixelSpace, SharedPGD, UnlearnResult, Unlearner, project, register_variant,
                   unlearn)
from .errors import (ConfigError, DatasetError, DeviceError, ModelError, NonFiniteLossError, OutputError,
                     RecordError, SAUError, UnsafePickleError)
from .metrics import adversarial_risks, batches, der, evaluate_backdoor, evaluate_clean
from .models import create_model, list_models

__version__ = "0.1.0"

__all__ = [
    "SAUConfig", "SharedPGD", "PGD", "PGDResult", "PixelSpace", "Unlearner", "UnlearnResult", "unlearn", "project",
    "Callback", "register_variant", "DataParallel",
    "evaluate_clean", "evaluate_backdoor", "der", "adversarial_risks", "batches", "create_model", "list_models",
    "SAUError", "ConfigError", "RecordError", "UnsafePickleError", "DatasetError", "ModelError",
    "NonFiniteLossError", "DeviceError", "OutputError", "__version__",
]
