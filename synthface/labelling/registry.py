"""`--labeller` specs -> labeller objects.

    world                 the demo world's attribute classifier (group, gender)
    world-audit           the demo world's independently trained audit classifier
    world-age             world plus age (under 40, 40-59, 60+) from the demo pack's genderage model: a
                          latent model fitted with it balances a group x gender cell over its age classes
    onnx:PATH             any ONNX classifier with a JSON sidecar
    genderage:PATH        insightface genderage (model pack directory or .onnx)
    fairface:PATH         FairFace ResNet-34, 7 races (fairface4:PATH for the 4-race model)

Several specs are combined; a schema (--schema) then renames attributes and maps label sets. When two
labellers produce the same attribute, SPEC#ATTR,... keeps only the named attributes of that labeller, e.g.
`fairface:res34.pt#race` beside `genderage:buffalo_l` for gender and age.
"""

from __future__ import annotations

from typing import Optional, Sequence

from ..errors import SynthfaceError
from .base import CombinedLabeller, MappedLabeller, load_schema

KINDS = ("world", "world-audit", "world-age", "onnx:", "genderage:", "fairface:", "fairface4:")


def load_one(spec: str, device: str = "cpu"):
    spec = spec.strip()
    if spec in ("world", "world-audit"):
        from ..assets import asset
        from .onnx_classifier import OnnxClassifier
        return OnnxClassifier(asset("attributes.onnx" if spec == "world" else "audit/attributes.onnx"))
    if spec == "world-age":
        return world_age_labeller()
    kind, _, path = spec.partition(":")
    if not path:
        raise SynthfaceError(f"unknown labeller {spec!r}: use one of world, world-audit, world-age, onnx:PATH, "
                             "genderage:PATH, fairface:PATH, fairface4:PATH")
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


def load_kept(spec: str, device: str = "cpu"):
    """load_one, keeping only the attributes named after a '#' (SPEC#ATTR,...)."""
    spec, hash_, keep = spec.strip().rpartition("#") if "#" in spec else (spec, "", "")
    lab = load_one(spec, device)
    if not hash_:
        return lab
    names = [a.strip() for a in keep.split(",") if a.strip()]
    unknown = [a for a in names if a not in lab.schema]
    if not names or unknown:
        raise SynthfaceError(f"labeller {spec!r}: after '#' name attributes it produces ({', '.join(lab.schema)}), "
                             f"got {keep!r}")
    return MappedLabeller(lab, {a: {} for a in names})


def load_labeller(specs: Sequence[str] | str, schema: Optional[str | dict] = None, device: str = "cpu"):
    specs = [specs] if isinstance(specs, str) else list(specs)
    lab = CombinedLabeller([load_kept(s, device) for s in specs])
    if schema:
        lab = MappedLabeller(lab, load_schema(schema) if isinstance(schema, str) else schema)
    return lab


# The demo world's faces show age from 40 on (the renderer's age marks), so its age classes are coarse:
# FairFace's nine bins (the genderage labeller's) folded into three.
WORLD_AGE_CLASSES = {"0-2": "under 40", "3-9": "under 40", "10-19": "under 40", "20-29": "under 40",
                     "30-39": "under 40", "40-49": "40-59", "50-59": "40-59", "60-69": "60+", "70+": "60+"}


def world_age_labeller():
    """The world's group/gender classifier beside the age of the demo pack's genderage model (the same
    network; its gender output is left out, the world classifier's is used)."""
    from ..assets import asset
    from .genderage import GenderAgeLabeller
    from .onnx_classifier import OnnxClassifier
    age = MappedLabeller(GenderAgeLabeller(asset("pack")), {"age": {"from": "age", "classes": WORLD_AGE_CLASSES}})
    return CombinedLabeller([OnnxClassifier(asset("attributes.onnx")), age])
