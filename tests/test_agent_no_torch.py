"""The agent must run on devices without torch: importing all of it never imports torch."""

from __future__ import annotations

import subprocess
import sys


def _assert_runs(code: str) -> None:
    """Run `code` in a fresh interpreter, so modules imported by other tests do not count."""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr


def test_agent_imports_without_torch() -> None:
    code = (
        "import edgevae.agent, edgevae.agent.service, edgevae.agent.__main__, edgevae.agent.offline, "
        "edgevae.agent.replay, edgevae.agent.backends.ort_cuda, edgevae.agent.backends.tensorrt; "
        "import sys; assert 'torch' not in sys.modules, 'torch was imported'"
    )
    _assert_runs(code)


def test_pure_core_imports_no_runtime() -> None:
    code = (
        "import sys, edgevae.core.window, edgevae.core.decision, edgevae.core.thresholds, edgevae.core.metrics, "
        "edgevae.agent.readings, edgevae.agent.detector, edgevae.agent.alerts; "
        "loaded = [m for m in ('torch', 'onnxruntime', 'paho') if m in sys.modules]; assert not loaded, loaded"
    )
    _assert_runs(code)
