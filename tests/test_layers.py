"""The architecture, checked: one `edgevae` namespace, and imports that point down the layers only.

Every import counts, also those inside functions (the CLI imports its subcommands lazily), because a lazy
import is still a dependency the layer below must not have.
"""

from __future__ import annotations

import ast
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# folder -> (installed name, rank). A module may import its own layer and the layers of lower rank.
LAYERS: dict[str, tuple[str, int]] = {
    "core": ("edgevae.core", 0),  # pure: arrays in, numbers out
    "agent": ("edgevae.agent", 1),  # the edge runtime and the bundle contract
    "training": ("edgevae.training", 2),
    "export": ("edgevae.export", 3),
    "evaluation": ("edgevae.evaluation", 4),
    "demo": ("edgevae.demo", 4),
    "cli": ("edgevae.cli", 5),
}
# What the pure core may import: no I/O, no torch, no runtime.
CORE_ALLOWED = {"__future__", "math", "dataclasses", "enum", "typing", "collections", "inspect", "numpy", "edgevae"}
HEAVY = {"torch", "onnx", "onnxscript", "tqdm", "matplotlib"}


def _modules() -> list[tuple[str, Path]]:
    return [(folder, path) for folder in LAYERS for path in sorted((REPO / folder).rglob("*.py"))]


def _imports(path: Path) -> list[tuple[int, str]]:
    """(line, module) of every import in the file; relative imports are resolved against its package."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                msg = f"{path}:{node.lineno}: relative import; write the edgevae.* name"
                raise AssertionError(msg)
            found.append((node.lineno, node.module or ""))
    return found


def _layer_of(module: str) -> tuple[str, int] | None:
    for folder, (name, rank) in LAYERS.items():
        if module == name or module.startswith(name + "."):
            return folder, rank
    return None


def test_every_layer_folder_is_listed_in_pyproject() -> None:
    text = (REPO / "pyproject.toml").read_text()
    for folder, (name, _) in LAYERS.items():
        assert f'"{name}" = "{folder}"' in text, f"pyproject.toml does not map {folder}/ to {name}"


@pytest.mark.parametrize(("folder", "path"), _modules(), ids=lambda v: str(v).removeprefix(str(REPO) + "/"))
def test_imports_point_down_the_layers(folder: str, path: Path) -> None:
    _, rank = LAYERS[folder]
    problems = []
    for line, module in _imports(path):
        top = module.split(".")[0]
        if top in LAYERS:
            problems.append(f"line {line}: `{module}` is a folder name; import it as edgevae.{module}")
            continue
        target = _layer_of(module)
        if target is not None and target[0] != folder and target[1] >= rank:
            problems.append(f"line {line}: {folder} (rank {rank}) imports {module} (rank {target[1]})")
        if folder == "core" and top not in CORE_ALLOWED:
            problems.append(f"line {line}: the pure core imports {module}")
        if folder in ("core", "agent") and top in HEAVY:
            problems.append(f"line {line}: {folder} imports {module}; the edge never imports it")
    assert not problems, "\n".join(problems)


def test_a_violation_is_caught(tmp_path: Path) -> None:
    # The check itself: an agent module importing training must be reported.
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    from edgevae.training.train_vae import train\n")
    assert _layer_of(_imports(bad)[0][1]) == ("training", 2)


@pytest.mark.slow
def test_the_wheel_installs_only_the_edgevae_namespace(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--wheel-dir", str(tmp_path), str(REPO)],
        check=True,
        capture_output=True,
    )
    (wheel,) = tmp_path.glob("edgevae-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
    tops = {name.split("/")[0] for name in names}
    assert {t for t in tops if not t.endswith(".dist-info")} == {"edgevae"}
    # The namespace holds exactly the layers, each with its modules (no stray folder of the repository).
    assert {n.split("/")[1] for n in names if n.startswith("edgevae/")} == {
        name.split(".")[1] for name, _ in LAYERS.values()
    }
    assert "edgevae/agent/service.py" in names
    assert "edgevae/core/py.typed" in names
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    with zipfile.ZipFile(wheel) as zf:
        text = zf.read(entry_points).decode()
    assert "edgevae = edgevae.cli.main:main" in text
    assert "edgevae-agent = edgevae.agent.__main__:main" in text
