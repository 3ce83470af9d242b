"""Model bundles: a folder (or .tar.gz of one) holding an ONNX model and the manifest that describes it.

The manifest is the whole contract between central training and the edge: which channels in which order,
the window length and stride, the threshold and debounce, the names of the graph's inputs and outputs and
the sha256 of every file. A device needs nothing else to score.
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
import tarfile
import tempfile
import zlib
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

from edgevae.agent.distribution import DriftReference
from edgevae.agent.generator import GeneratorSpec
from edgevae.core.decision import Debounce, Threshold
from edgevae.core.errors import BundleError

SCHEMA_VERSION = 1
MANIFEST_NAME = "manifest.json"
# A debounce longer than this many windows is a corrupt manifest, not a decision rule (hours at stride 1).
MAX_DEBOUNCE = 10_000


class Precision(str, Enum):
    """Numeric precision of the model that ships in a bundle; the manifest's `precision` is its value.

    FP32: the exported graph unchanged; the reference every other precision is compared with.
    FP16: weights and the VAE's layers in float16, input, outputs, normalization and score arithmetic in
        float32 (raw readings above 65504, or large squared errors, would overflow float16). Halves the size.
    INT8: ONNX Runtime static quantization in QDQ form: int8 weights and calibrated 8-bit activations at the
        inputs of the weight layers, calibrated on the run's training windows. About a third of the size
        for realistic models; not faster on CPU for models this small.
    """

    FP32 = "fp32"
    FP16 = "fp16"
    INT8 = "int8"


PRECISIONS: tuple[str, ...] = tuple(p.value for p in Precision)
# What `edgevae export` ships without --precision, and what the evaluation and the demo report: the faster
# on ONNX Runtime's CPU backend. FP32 was as fast as static INT8 (QDQ) or faster for every architecture at
# batches of 1, 16 and 256 windows (conv 1.6x at batch 1), and dynamic INT8 slower for conv and TCN
# (docs/bench/precision.md); INT8 is the smaller (0.52x for conv), for `--precision int8`.
DEFAULT_PRECISION = Precision.FP32

# The graph's I/O names; export writes them, backends read them.
INPUT_NAME = "window"
SCORE_OUTPUT = "score"
CHANNEL_ERROR_OUTPUT = "channel_error"


@dataclass(frozen=True)
class Manifest:
    model_id: str
    model_version: str
    channels: tuple[str, ...]
    window: int
    stride: int
    sample_period_s: float
    precision: str
    model_file: str
    threshold: Threshold
    debounce: Debounce
    files: dict[str, dict[str, Any]]
    created: str = ""
    architecture: str = ""
    score_kind: str = "mse"
    # Rows at the end of each window that the score covers (the rest is context); 0 in older bundles: all.
    score_rows: int = 0
    training: dict[str, Any] = field(default_factory=dict)
    export: dict[str, Any] = field(default_factory=dict)
    # Windows with their expected scores, for the self-test a device runs before taking the model
    # (edgevae.agent.golden); {} in bundles from before it.
    golden: dict[str, Any] = field(default_factory=dict)
    # A generator of normal windows for the detection self-test (edgevae.agent.generator); {} when none ships.
    generator: dict[str, Any] = field(default_factory=dict)
    # The training channel ranges and calibration score quantiles that drift is measured against
    # (edgevae.agent.distribution); {} in bundles from before it, which are then not checked for drift.
    distribution: dict[str, Any] = field(default_factory=dict)
    schema_version: int = SCHEMA_VERSION

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["channels"] = list(self.channels)
        data["io"] = {
            "input": INPUT_NAME,
            "input_layout": "batch,time,channel",
            "input_units": "raw sensor units; normalization is inside the graph",
            "outputs": {SCORE_OUTPUT: "batch", CHANNEL_ERROR_OUTPUT: "batch,channel"},
        }
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Manifest:
        version = data.get("schema_version")
        if version != SCHEMA_VERSION:
            msg = f"manifest schema_version is {version!r}; this agent reads version {SCHEMA_VERSION}"
            raise BundleError(msg)
        try:
            manifest = cls(
                model_id=str(data["model_id"]),
                model_version=str(data["model_version"]),
                channels=tuple(str(c) for c in data["channels"]),
                window=int(data["window"]),
                stride=int(data["stride"]),
                sample_period_s=float(data["sample_period_s"]),
                precision=str(data["precision"]),
                model_file=str(data["model_file"]),
                threshold=Threshold(**data["threshold"]),
                debounce=Debounce(**data.get("debounce", {})),
                files=dict(data["files"]),
                created=str(data.get("created", "")),
                architecture=str(data.get("architecture", "")),
                score_kind=str(data.get("score_kind", "mse")),
                score_rows=int(data.get("score_rows", 0)),
                training=dict(data.get("training", {})),
                export=dict(data.get("export", {})),
                golden=dict(data.get("golden", {})),
                generator=dict(data.get("generator", {})),
                # As it is: validate names the key when it is not an object (dict() would accept pairs).
                distribution=data.get("distribution", {}),
            )
        except KeyError as exc:
            msg = f"manifest is missing the key {exc.args[0]!r}"
            raise BundleError(msg) from exc
        except (TypeError, ValueError) as exc:
            msg = f"manifest has a value of the wrong type: {exc}"
            raise BundleError(msg) from exc
        manifest.validate()
        return manifest

    def validate(self) -> None:
        problems = []
        if not self.channels or len(set(self.channels)) != len(self.channels):
            problems.append("channels must be a non-empty list of unique names")
        if self.window < 2:
            problems.append(f"window must be >= 2, got {self.window}")
        if not 1 <= self.stride <= self.window:
            problems.append(f"stride must be between 1 and window ({self.window}), got {self.stride}")
        if self.sample_period_s <= 0:
            problems.append(f"sample_period_s must be > 0, got {self.sample_period_s}")
        if self.precision not in PRECISIONS:
            problems.append(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        value = self.threshold.value
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            problems.append(f"threshold.value must be a finite number, got {value!r} (was the bundle calibrated?)")
        elif self.score_kind == "mse" and value <= 0:
            # A mean squared error is never negative: a threshold at or below 0 flags every window.
            problems.append(f"threshold.value must be > 0 for an mse score, got {value}")
        if not 0 <= self.score_rows <= self.window:
            problems.append(f"score_rows must be between 0 and window ({self.window}), got {self.score_rows}")
        if not (1 <= self.debounce.trigger <= MAX_DEBOUNCE and 1 <= self.debounce.clear <= MAX_DEBOUNCE):
            problems.append(
                f"debounce.trigger and debounce.clear must be between 1 and {MAX_DEBOUNCE} windows, got "
                f"{self.debounce.trigger} and {self.debounce.clear}"
            )
        if self.model_file not in self.files:
            problems.append(f"model_file {self.model_file!r} is not listed in files")
        if self.generator:
            if self.generator.get("file") not in self.files:
                problems.append(f"generator file {self.generator.get('file')!r} is not listed in files")
            try:
                GeneratorSpec.from_entry(self.generator)
            except BundleError as exc:
                problems.append(str(exc))
        if not isinstance(self.distribution, dict) or self.distribution:
            try:
                DriftReference.from_entry(self.distribution, self.channels)
            except BundleError as exc:
                problems.append(str(exc))
        if problems:
            raise BundleError("invalid manifest: " + "; ".join(problems))


@dataclass(frozen=True)
class Bundle:
    """A verified bundle on disk: every file listed in the manifest exists and matches its sha256.

    A bundle opened from a .tar.gz lives in a temporary folder (`temporary`), removed by `close`."""

    root: Path
    manifest: Manifest
    temporary: bool = False

    def close(self) -> None:
        if self.temporary:
            shutil.rmtree(self.root, ignore_errors=True)

    @property
    def model_path(self) -> Path:
        return self.root / self.manifest.model_file

    def model_bytes(self) -> bytes:
        return self.model_path.read_bytes()


def sha256_files(paths: Iterable[Path]) -> str:
    """Hex sha256 of the files' bytes one after another, in the given order, read 1 MiB at a time."""
    digest = hashlib.sha256()
    for path in paths:
        with path.open("rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()


def sha256_file(path: Path) -> str:
    """Hex sha256 of one file, as `sha256sum` prints it."""
    return sha256_files([path])


def describe_files(root: Path, names: list[str]) -> dict[str, dict[str, Any]]:
    """The `files` entry of a manifest: sha256 and size of each named file under root."""
    return {name: {"sha256": sha256_file(root / name), "bytes": (root / name).stat().st_size} for name in names}


def write_atomically(path: Path, data: bytes) -> None:
    """Write-then-rename: a power cut mid-write must not leave a truncated file that looks complete."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    tmp.replace(path)


def write_manifest(root: Path, manifest: Manifest) -> Path:
    manifest.validate()
    path = root / MANIFEST_NAME
    write_atomically(path, (json.dumps(manifest.to_dict(), indent=2, sort_keys=True) + "\n").encode())
    return path


def pack(root: Path, archive: Path) -> Path:
    """Write the bundle folder `root` as a single .tar.gz (the manifest first, for streaming readers)."""
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(root / MANIFEST_NAME, arcname=MANIFEST_NAME)
        for child in sorted(root.iterdir()):
            if child.name != MANIFEST_NAME and child.is_file():
                tar.add(child, arcname=child.name)
    return archive


def _extract(archive: Path) -> Path:
    target = Path(tempfile.mkdtemp(prefix="edgevae-bundle-"))
    try:
        with tarfile.open(archive, "r:*") as tar:
            for member in tar.getmembers():
                # Only flat regular files: an archive is never allowed to write outside its folder.
                if not member.isfile() or "/" in member.name or member.name.startswith("."):
                    msg = f"{archive}: unexpected archive member {member.name!r} (only flat files are allowed)"
                    raise BundleError(msg)
            tar.extractall(target, filter="data")
    except (tarfile.TarError, OSError, EOFError, zlib.error) as exc:
        # EOFError and zlib.error: a truncated or corrupt gzip stream, e.g. a download cut short.
        shutil.rmtree(target, ignore_errors=True)
        msg = f"{archive}: not a readable bundle archive: {exc}"
        raise BundleError(msg) from exc
    except BundleError:
        shutil.rmtree(target, ignore_errors=True)
        raise
    return target


def load_bundle(path: str | Path) -> Bundle:
    """Open a bundle folder or archive, check its manifest and every file's sha256."""
    path = Path(path)
    if not path.exists():
        msg = f"bundle {path} does not exist (expected a folder with {MANIFEST_NAME} or a .tar.gz of one)"
        raise BundleError(msg)
    if not path.is_file():
        return _verify(path, path)
    root = _extract(path)
    try:
        bundle = _verify(path, root)
    except BaseException:
        shutil.rmtree(root, ignore_errors=True)
        raise
    return Bundle(root, bundle.manifest, temporary=True)


def _verify(path: Path, root: Path) -> Bundle:
    manifest_path = root / MANIFEST_NAME
    try:
        data = json.loads(manifest_path.read_text())
    except FileNotFoundError as exc:
        msg = f"{path}: no {MANIFEST_NAME} (is this a bundle written by `edgevae export`?)"
        raise BundleError(msg) from exc
    except json.JSONDecodeError as exc:
        msg = f"{manifest_path}: not valid JSON: {exc}"
        raise BundleError(msg) from exc
    if not isinstance(data, dict):
        msg = f"{manifest_path}: expected a JSON object"
        raise BundleError(msg)
    manifest = Manifest.from_dict(data)
    for name, info in manifest.files.items():
        file_path = root / name
        if not file_path.is_file():
            msg = f"{path}: file {name!r} listed in the manifest is missing"
            raise BundleError(msg)
        actual = sha256_file(file_path)
        if actual != info.get("sha256"):
            msg = f"{path}: sha256 of {name!r} is {actual}, the manifest says {info.get('sha256')}"
            raise BundleError(msg)
    return Bundle(root=root, manifest=manifest)
