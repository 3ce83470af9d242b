"""What is installed: the package's version, and which extra a missing module comes with.

The agent installs without torch, onnx or matplotlib (`pip install edgevae`); training, export and the
evaluation plots need extras. A command that reaches for a module an extra brings says which extra to
install instead of showing an import traceback.
"""

from __future__ import annotations

from importlib import metadata

# Top-level module -> the extra that installs it.
EXTRA_OF = {
    "torch": "train",
    "tqdm": "train",
    "onnx": "export",
    "onnxscript": "export",
    "matplotlib": "evaluate",
    "amqtt": "demo",
}


def version() -> str:
    """The installed package's version ("unknown" when run from a source tree that is not installed)."""
    try:
        return metadata.version("edgevae")
    except metadata.PackageNotFoundError:
        return "unknown (not installed)"


def missing_extra(exc: ModuleNotFoundError) -> str | None:
    """The one line to print for a module an extra would have installed, or None for any other module.

    >>> missing_extra(ModuleNotFoundError("No module named 'torch'", name="torch"))
    "needs torch, which is not installed: pip install 'edgevae[train]'"
    >>> missing_extra(ModuleNotFoundError("No module named 'nothing'", name="nothing")) is None
    True
    """
    top = (exc.name or "").split(".")[0]
    extra = EXTRA_OF.get(top)
    if extra is None:
        return None
    return f"needs {top}, which is not installed: pip install 'edgevae[{extra}]'"
