"""Exceptions raised by edgevae.

EdgeVAEError
├── ConfigError        a config file or flag has a bad key or value
├── BundleError        a model bundle is missing, malformed or fails verification
├── ModelLoadError     a runtime could not load the bundle's model
└── BackendError       a runtime failed while scoring
"""

from __future__ import annotations


class EdgeVAEError(Exception):
    """Base class of every error edgevae raises on purpose."""


class ConfigError(EdgeVAEError):
    """A configuration value is missing or not what was expected."""


class BundleError(EdgeVAEError):
    """A model bundle cannot be read or does not verify."""


class ModelLoadError(EdgeVAEError):
    """A backend could not load the model."""


class BackendError(EdgeVAEError):
    """A backend failed during inference."""
