"""Where the demo world's shipped models live (package data under synthface/world/assets/, rebuilt by the
scripts). A base-layer module, so labellers and recognisers can resolve `world` specs without
importing the world package."""

from __future__ import annotations

from pathlib import Path

from .errors import SynthfaceError

ASSETS = Path(__file__).resolve().parent / "world" / "assets"
REBUILD = {
    "generator.safetensors": "scripts/build_world_generator.py",
    "pack": "scripts/build_world_models.py",
    "attributes.onnx": "scripts/build_world_models.py",
    "audit": "scripts/build_world_models.py",
    "nuisance.onnx": "scripts/build_nuisance_regressor.py",
}


def asset(name: str) -> Path:
    path = ASSETS / name
    if not path.exists():
        script = REBUILD.get(name.split("/")[0], "the scripts in scripts/")
        raise SynthfaceError(f"demo-world asset {path} is missing; rebuild it with {script}")
    return path


def generator_path() -> Path:
    """The StyleGAN2 trained on the biased demo-world faces."""
    return asset("generator.safetensors")


def pack_dir() -> Path:
    """insightface-format model pack: recognition.onnx (ArcFaceONNX) and genderage.onnx (Attribute)."""
    return asset("pack")


def attribute_classifier_path() -> Path:
    """group + gender classifier (ONNX with a JSON sidecar)."""
    return asset("attributes.onnx")


def audit_dir() -> Path:
    """Independently trained recogniser and attribute classifier, for audits only."""
    return asset("audit")
