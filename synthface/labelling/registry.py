"""`--labeller` specs -> labeller objects.

    world                 the demo world's attribute classifier (group, gender)
    world-audit           the demo world's independently trained audit classifier
    onnx:PATH             any ONNX classifier with a JSON sidecar
    genderage:PATH        insightface genderage (model pack directory or .onnx)
    fairface:PATH         FairFace ResNet-34, 7 races (fairface4:PATH for the 4-race model)

Several specs are combined; a schema (--schema) then renames attributes and maps label sets.
"""

from __future__ import annotations

from typing import Optional, Sequence

from ..errors import SynthfaceError
from .base import CombinedLabeller, MappedLabeller, load_schema

KINDS = ("world", "world-audit", "onnx:", "genderage:", "fairface:", "fairface4:")


def load_one(spec: str, device: str = "cpu"):
    spec = spec.strip()
    if spec in ("world", "world-audit"):
        from ..assets import asset
        from .onnx_classifier import OnnxClassifier
        return OnnxClassifier(asset("attributes.onnx" if spec == "world" else "audit/attributes.onnx"))
    kind, _, path = spec.partition(":")
    if not path:
        raise SynthfaceError(f"unknown labeller {spec!r}: use one of world, world-audit, onnx:PATH, genderage:PATH, "
                             "fairface:PATH, fairface4:PATH")
    providers = ["CUDAExecutionProvider", "CPUExecutionProvider"] if device.startswith("cuda") else None
    if kind == "onnx":
        from .onnx_classifier import OnnxClassifier
        return OnnxClassifier(path, providers=providers)
    if kind == "genderage":
        from .genderage import GenderAgeLabeller
        return GenderAgeLabeller(path, providers=providers)
    if kind in ("fairface", "fairface7", "fairface4"):
        from .fairface import FairFaceLabeller
        return FairFaceLabeller(path, races=4 if kind == "fairface4" else 7, device=device)
    raise SynthfaceError(f"unknown labeller kind {kind!r} in {spec!r}: use onnx, genderage, fairface or fairface4")


def load_labeller(specs: Sequence[str] | str, schema: Optional[str | dict] = None, device: str = "cpu"):
    specs = [specs] if isinstance(specs, str) else list(specs)
    lab = CombinedLabeller([load_one(s, device) for s in specs])
    if schema:
        lab = MappedLabeller(lab, load_schema(schema) if isinstance(schema, str) else schema)
    return lab
