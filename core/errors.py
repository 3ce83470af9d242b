"""Every error edgevae raises on purpose, and the exit code each one means on the command line.

EdgeVAEError                 exit  base class; never raised itself
├── ConfigError                2   a config file, flag or option has a bad key or value
├── DataError                  3   a sensor table cannot be read or cannot feed training/evaluation
├── BundleError                4   a model bundle is missing, malformed or fails verification
│   └── ModelLoadError         4   a runtime could not load the bundle's model
├── BackendError               5   a runtime failed while scoring
├── TrainingError              6   training could not produce a model (e.g. the loss diverged)
└── ExportError                7   a run cannot be exported (missing files, a graph that does not match torch)
    └── CalibrationError       7   no alert threshold can be calibrated from the scores at hand

An unexpected exception (a bug) is not an EdgeVAEError: the CLIs let it through with its traceback and
exit 1. Each error carries a `remedy`, a sentence telling the user what to do about it, printed after the
message when it is set. The agent's own exit codes (docs/agent.md) map every model problem to 3, as its
systemd unit expects; `edgevae` uses the codes above.
"""

from __future__ import annotations

from typing import ClassVar


class EdgeVAEError(Exception):
    """Base class of every error edgevae raises on purpose."""

    exit_code: ClassVar[int] = 1

    def __init__(self, message: str, *, remedy: str | None = None) -> None:
        super().__init__(message)
        self.remedy = remedy

    def describe(self) -> str:
        """The message, and the remedy when there is one: the one line a CLI prints."""
        text = str(self)
        return f"{text} ({self.remedy})" if self.remedy else text


class ConfigError(EdgeVAEError):
    """A configuration value is missing or not what was expected."""

    exit_code = 2


class DataError(EdgeVAEError):
    """Sensor data cannot be read, or is not enough or not clean enough for what was asked of it."""

    exit_code = 3


class BundleError(EdgeVAEError):
    """A model bundle cannot be read or does not verify."""

    exit_code = 4


class ModelLoadError(BundleError):
    """A backend could not load the model."""


class BackendError(EdgeVAEError):
    """A backend failed during inference."""

    exit_code = 5


class TrainingError(EdgeVAEError):
    """Training could not produce a usable model."""

    exit_code = 6


class ExportError(EdgeVAEError):
    """A run cannot be exported: missing files, a graph that does not match torch, or a failed compression."""

    exit_code = 7


class CalibrationError(ExportError):
    """No alert threshold can be calibrated from the scores given."""
