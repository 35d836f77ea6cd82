"""The frozen, differentiable auxiliary networks a Semi-Adversarial Network trains against: a two-gender
classifier and a face matcher, both as torch modules that take the SAN's images (float [N, 3, S, S] in 0..1)
and let gradients through to them.

Gender-classifier specs (differentiable):
    world-attributes, world-audit-attributes, world-genderage   the demo world's nets (synthface.nets)
    attribute:RUN_DIR (or a plain RUN_DIR)                       a classifier from `synthface train attribute`
Matcher specs (differentiable):
    world-recognizer, world-audit-recognizer (also torch:world-...), torch:PATH.safetensors, arcface:PATH.pt

ONNX models (world, world-audit, onnx:, genderage:, insightface:) cannot pass gradients back to the image;
naming one here is an error that lists the specs above.

Image layout: synthface datasets store 112x112 ArcFace crops ("arcface"); the demo world's renders and
generator output are full FFHQ-aligned faces ("ffhq"). Each auxiliary network states the crop it expects
(ffhq_attribute, ffhq_arcface / arcface_112, none); the adapters here cut it from the SAN's layout with
one fixed affine warp, differentiably.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from ..align import arcface_matrix, attribute_matrix, warp_affine
from ..errors import SynthfaceError

LAYOUTS = ("arcface", "ffhq")
WORLD_CLASSIFIERS = ("world-attributes", "world-audit-attributes", "world-genderage")
WORLD_MATCHERS = ("world-recognizer", "world-audit-recognizer")
GENDER_CLASSIFIER_SPECS = "world-attributes, world-audit-attributes, world-genderage or attribute:RUN_DIR"
MATCHER_SPECS = "world-recognizer, world-audit-recognizer, torch:PATH.safetensors or arcface:PATH.pt"
_ONNX_KINDS = ("world", "world-audit", "onnx", "genderage", "insightface", "torchscript", "fairface", "fairface4")
_FFHQ_SIDE = 256  # any side: the composed crop matrices do not depend on it beyond pixel-centre rounding


def _as_3x3(M: np.ndarray) -> np.ndarray:
    return np.vstack([np.asarray(M, np.float64), [0.0, 0.0, 1.0]])


def crop_matrix(layout: str, crop: str, side: int, out: int) -> Optional[np.ndarray]:
    """The 2x3 pixel matrix taking a `layout` image of side `side` to the `crop` a network expects at side
    `out`; None when a plain resize does (same framing)."""
    if layout not in LAYOUTS:
        raise SynthfaceError(f"layout {layout!r}: choose arcface (synthface dataset crops) or ffhq (full aligned faces)")
    crop = {"arcface_112": "ffhq_arcface"}.get(crop, crop)
    if crop == "none" or (layout == "arcface" and crop == "ffhq_arcface"):
        return None
    if crop == "ffhq_arcface":
        return arcface_matrix(side, out)
    if crop != "ffhq_attribute":
        raise SynthfaceError(f"unknown input crop {crop!r}; expected none, ffhq_attribute or ffhq_arcface")
    if layout == "ffhq":
        return attribute_matrix(side, out)
    # ArcFace crop -> FFHQ frame -> attribute crop, composed into one warp
    to_ffhq = np.linalg.inv(_as_3x3(arcface_matrix(_FFHQ_SIDE, side)))
    return (_as_3x3(attribute_matrix(_FFHQ_SIDE, out)) @ to_ffhq)[:2]


class _Input(nn.Module):
    """0..1 images in the SAN's layout -> the network's normalised input (crop, resize, (x*255 - mean) / std)."""

    def __init__(self, layout: str, crop: str, size: int, mean: float, std: float):
        super().__init__()
        self.layout, self.crop, self.size, self.mean, self.std = layout, crop, int(size), float(mean), float(std)
        crop_matrix(layout, crop, 64, self.size)  # fail now on an unknown crop

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        x = x * 255.0
        M = crop_matrix(self.layout, self.crop, int(x.shape[-1]), self.size)
        if M is not None:
            x = warp_affine(x, M, self.size)
        elif x.shape[-1] != self.size:
            x = F.interpolate(x, size=(self.size, self.size), mode="bilinear", align_corners=False)
        return (x - self.mean) / self.std


class GenderClassifier(nn.Module):
    """images 0..1 [N, C, S, S] -> gender logits [N, 2] in the order (female, male)."""

    def __init__(self, net: nn.Module, columns: Sequence[int], inp: _Input, spec: str):
        super().__init__()
        self.net, self.inp, self.spec = net, inp, spec
        self.columns = [int(c) for c in columns]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(self.inp(x))[:, self.columns]


class Matcher(nn.Module):
    """images 0..1 [N, C, S, S] -> L2-normalised face descriptors [N, D]."""

    def __init__(self, net: nn.Module, inp: _Input, spec: str):
        super().__init__()
        self.net, self.inp, self.spec = net, inp, spec

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.net(self.inp(x)), dim=1)


def gender_columns(classes: Sequence[str], slice_: Sequence[int], where: str) -> list[int]:
    """Output columns of (female, male) from a classifier's class names, or a SynthfaceError."""
    names = [str(c).strip().lower() for c in classes]
    if sorted(names) != ["female", "male"]:
        raise SynthfaceError(f"{where} predicts {list(classes)}; a SAN's gender classifier must have exactly the two "
                             "classes female and male (train one with `synthface train attribute --task gender`)")
    return [int(slice_[0]) + names.index("female"), int(slice_[0]) + names.index("male")]


def _not_differentiable(spec: str, what: str, specs: str) -> None:
    kind = spec.partition(":")[0] if ":" in spec else spec
    if kind in _ONNX_KINDS or spec.endswith(".onnx"):
        raise SynthfaceError(f"{what} {spec!r} is an ONNX (or TorchScript) model, which cannot pass gradients back "
                             f"to the image; SAN training needs a differentiable one: {specs}")


def load_gender_classifier(spec, layout: str = "arcface") -> GenderClassifier:
    """A frozen GenderClassifier from a spec (see the module docstring), or pass one through."""
    if isinstance(spec, GenderClassifier):
        return spec
    spec = str(spec).strip()
    _not_differentiable(spec, "gender classifier", GENDER_CLASSIFIER_SPECS)
    if spec in WORLD_CLASSIFIERS:
        from ..nets import load_world_model
        net = load_world_model(spec)
        side = json.loads(Path(net.synthface_meta["path"]).with_suffix(".json").read_text())
        if spec == "world-genderage":  # [female, male, age / 100]
            cols = gender_columns(side["attributes"]["gender"]["classes"], [0], spec)
        else:
            g = side["attributes"]["gender"]
            cols = gender_columns(g["classes"], g["slice"], spec)
        inp = net.synthface_meta["input"]
    else:
        path = Path(spec.partition(":")[2] if spec.startswith("attribute:") else spec)
        if not (path / "attribute.safetensors").is_file() and not path.suffix == ".safetensors":
            raise SynthfaceError(f"gender classifier {spec!r} is neither a demo-world net nor a `synthface train "
                                 f"attribute` run directory; use one of {GENDER_CLASSIFIER_SPECS}")
        from ..train.attribute import load_attribute_model
        net, desc = load_attribute_model(path)
        cols = gender_columns(desc["classes"], [0], spec)
        inp = desc["input"]
    net.eval().requires_grad_(False)
    return GenderClassifier(net, cols, _Input(layout, inp.get("crop", "none"), inp["size"], inp["mean"],
                                              inp["std"]), spec)


def load_matcher(spec, layout: str = "arcface") -> Matcher:
    """A frozen Matcher from a spec (see the module docstring), or pass one through."""
    if isinstance(spec, Matcher):
        return spec
    spec = str(spec).strip()
    _not_differentiable(spec, "matcher", MATCHER_SPECS)
    kind, _, path = spec.partition(":")
    name = path if kind == "torch" and path in WORLD_MATCHERS else spec
    if name in WORLD_MATCHERS:
        from ..nets import load_world_model
        net = load_world_model(name)
    elif kind in ("torch", "arcface") and path:
        from ..nets import load_backbone
        net = load_backbone(Path(path))
    else:
        raise SynthfaceError(f"unknown matcher {spec!r}; use one of {MATCHER_SPECS}")
    meta = net.synthface_meta
    if meta.get("output", "embedding") != "embedding":
        raise SynthfaceError(f"matcher {spec!r} is an attribute classifier, not a face recogniser")
    inp = meta["input"]
    net.eval().requires_grad_(False)
    return Matcher(net, _Input(layout, inp.get("crop", "arcface_112"), inp["size"], inp["mean"], inp["std"]), spec)


__all__ = ["GenderClassifier", "Matcher", "load_gender_classifier", "load_matcher", "crop_matrix", "gender_columns",
           "GENDER_CLASSIFIER_SPECS", "MATCHER_SPECS", "LAYOUTS"]
