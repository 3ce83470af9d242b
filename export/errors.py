"""Exceptions raised while exporting a training run into a bundle."""

from __future__ import annotations

from agent.errors import EdgeVAEError


class ExportError(EdgeVAEError):
    """A run cannot be exported: missing files, a graph that does not match torch, or a failed compression."""
