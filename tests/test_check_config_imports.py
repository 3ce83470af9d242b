"""`edgevae-agent --check-config` loads no runtime: the backend registry names its modules, imported on use."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from edgevae.agent.backends import available_backends

RUNTIMES = ("onnxruntime", "torch", "tensorrt")

# `python -m edgevae.agent ARGS`, then a report of which runtimes that run imported.
AS_MAIN = """
import json, runpy, sys
sys.argv = ["edgevae-agent", *sys.argv[1:]]
try:
    runpy.run_module("edgevae.agent", run_name="__main__", alter_sys=True)
except SystemExit as exc:
    code = exc.code
print(json.dumps({"exit": code, "loaded": [m for m in %r if m in sys.modules]}))
""" % (RUNTIMES,)  # noqa: UP031 (the script is itself Python source with braces)


def run_as_main(*args: str) -> tuple[dict[str, object], str]:
    """Run the agent's entry point in a fresh interpreter, so modules this test process imported do not count."""
    result = subprocess.run(
        [sys.executable, "-c", AS_MAIN, *args], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.stdout.strip(), result.stderr
    *output, report = result.stdout.strip().splitlines()
    return json.loads(report), "\n".join(output) + result.stderr


@pytest.mark.parametrize("backend", available_backends())
def test_check_config_imports_no_runtime(tmp_path: Path, bundle: Path, backend: str) -> None:
    config = tmp_path / "agent.toml"
    config.write_text(f'[model]\nbundle = "{bundle}"\n\n[model.backend]\ntype = "{backend}"\n')
    report, output = run_as_main("--check-config", "--config", str(config))
    assert report == {"exit": 0, "loaded": []}, output
    assert "config OK" in output


def test_a_bad_backend_option_is_found_without_its_runtime(tmp_path: Path, bundle: Path) -> None:
    config = tmp_path / "agent.toml"
    config.write_text(f'[model]\nbundle = "{bundle}"\nbackend = {{type = "onnxruntime-cpu", threads = 0}}\n')
    report, output = run_as_main("--check-config", "--config", str(config))
    assert report == {"exit": 2, "loaded": []}, output
    assert "model.backend.threads: 0: an integer >= 1" in output


CREATE = """
import sys
from pathlib import Path
from edgevae.agent.backends import create_backend
from edgevae.core.errors import ModelLoadError
assert "onnxruntime" not in sys.modules, "importing the registry imported onnxruntime"
try:
    create_backend(Path("/nonexistent/model.onnx"), "onnxruntime-cpu")
except ModelLoadError:
    pass
assert "onnxruntime" in sys.modules, "creating an onnxruntime backend did not import onnxruntime"
"""


def test_creating_a_backend_imports_its_runtime() -> None:
    """The other half of the contract: the registry still reaches the runtime when a backend is made."""
    result = subprocess.run([sys.executable, "-c", CREATE], capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
