"""The package's own exception types.

Every error a user can cause (a bad flag, a missing or corrupt file, an unknown
model, a diverging run) is raised as a subclass of :class:`SAUError`, with a
message that says what was expected, what was found and what to do. The command
line prints ``error: <message>`` on one line and exits with the error's
``exit_code`` (2, or 75 for :class:`Preempted`); anything else is a bug.
"""


class SAUError(Exception):
    """Base class of every error the plugin raises on purpose."""

    exit_code = 2


class ConfigError(SAUError, ValueError):
    """A configuration value or command-line flag is invalid."""


class RecordError(SAUError):
    """An attack result folder or ``attack_result.pt`` is missing, corrupt or malformed."""


class UnsafePickleError(RecordError):
    """A pickle asks for a global outside the allowlist; it was refused without running it."""


class DatasetError(SAUError):
    """Dataset files are missing or unreadable, or a data selection is empty or out of range."""


class ModelError(SAUError):
    """Unknown model name, or a state_dict that does not fit the model."""


class NonFiniteLossError(SAUError, FloatingPointError):
    """A loss became NaN or infinite during unlearning."""


class DeviceError(ConfigError):
    """The requested device (e.g. CUDA, or as many GPUs as ``--device cuda:0,1`` lists) is not available."""


class OutputError(SAUError):
    """The output location exists already (without --overwrite) or is not writable."""


class CompatibilityError(SAUError):
    """The installed libraries lack an API the plugin needs, or failed in a way that says
    nothing about the input (so it is not reported as a bad file)."""


class Preempted(SAUError):
    """SIGTERM or SIGINT stopped the run after a batch; its checkpoint is saved and ``--resume``
    continues it. Exit code 75 (EX_TEMPFAIL, "try again"), so a scheduler can tell it from a failure."""

    exit_code = 75
