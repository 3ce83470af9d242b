"""An agent-only install (`pip install edgevae`, no extras): every command that needs an extra says which one
in one line, and both programs say their version."""

from __future__ import annotations

import subprocess
import sys

import pytest

from edgevae.agent.install import EXTRA_OF, version

# An interpreter in which the extras' modules cannot be imported, as on a device that installed the agent.
WITHOUT_EXTRAS = (
    "import sys\n"
    "class Missing:\n"
    "    def find_spec(self, name, path=None, target=None):\n"
    f"        if name.split('.')[0] in {sorted(EXTRA_OF)!r}:\n"
    "            raise ModuleNotFoundError(f'No module named {name!r}', name=name)\n"
    "sys.meta_path.insert(0, Missing())\n"
    "from edgevae.cli.main import main\n"
    "sys.exit(main(sys.argv[1:]))\n"
)


def _without_extras(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", WITHOUT_EXTRAS, *args], capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize(
    ("args", "line"),
    [
        (["train", "--help"], "edgevae train: error: this command needs torch, which is not installed: "
         "pip install 'edgevae[train]'"),
        (["export", "--run", "r", "--out", "o"], "edgevae export: error: this command needs onnx, which is not "
         "installed: pip install 'edgevae[export]'"),
        (["train-generator", "--kind", "gan", "--sines", "--out", "g"], "edgevae train-generator: error: this "
         "command needs torch"),
        (["augment", "--generator", "g", "--n", "5", "--out", "x.npz"], "edgevae augment: error: this command needs"),
    ],
)  # fmt: skip
def test_a_command_that_needs_an_extra_says_which(args: list[str], line: str) -> None:
    result = _without_extras(*args)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == [result.stderr.strip()], "one line"
    assert result.stderr.startswith(line), result.stderr


@pytest.mark.parametrize(("command", "flag"), [("score", "--bundle"), ("replay", "--device")])
def test_the_agent_side_commands_run_without_the_extras(command: str, flag: str) -> None:
    result = _without_extras(command, "--help")
    assert result.returncode == 0, result.stderr
    assert flag in result.stdout


@pytest.mark.parametrize("program", [["-m", "edgevae.cli.main"], ["-m", "edgevae.agent"]])
def test_version(program: list[str]) -> None:
    result = subprocess.run([sys.executable, *program, "--version"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split()[1] == version() != "unknown (not installed)"
