"""Nuisance regressors: per-image pose, expression, light, glasses... as numbers.

Any ONNX model with a JSON sidecar (same name, .json) naming its input convention and which output
column holds which nuisance:

    {"input": {"size": 64, "channels": "RGB", "mean": 127.5, "std": 127.5, "crop": "none"},
     "nuisances": {"yaw": {"index": 0, "kind": "regression"}, "glasses": {"index": 7, "kind": "logit"}}}

`kind` is regression (a value in the model's own units) or logit (a binary attribute's logit; it is
read as a continuous quantity, clipped to +-LOGIT_CLIP so a saturated output cannot dominate a
linear fit). Specs: `world` (the demo world's regressor, trained on renderer faces whose nuisance
values are known) or `onnx:PATH`.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..align import arcface_crop, attribute_crop, to_float
from ..errors import SynthfaceError
from ..fileio import file_digest

KINDS = ("regression", "logit")
LOGIT_CLIP = 6.0


class OnnxNuisanceRegressor:
    """`predict(images) -> {nuisance: values [N]}` for uint8 [N, H, W, 3] RGB FFHQ-aligned images."""

    def __init__(self, path, providers=None, batch_size: int = 256):
        import onnxruntime as ort

        self.path = Path(path)
        side = self.path.with_suffix(".json")
        if not self.path.is_file():
            raise SynthfaceError(f"nuisance regressor {self.path} does not exist")
        if not side.is_file():
            raise SynthfaceError(f"{self.path} needs a JSON sidecar {side.name} naming its input and nuisance outputs "
                                 "(see synthface/labelling/nuisance.py)")
        try:
            meta = json.loads(side.read_text())
            self.size = int(meta["input"]["size"])
            self.mean = float(meta["input"].get("mean", 127.5))
            self.std = float(meta["input"].get("std", 127.5))
            self.crop = meta["input"].get("crop", "none")
            self.bgr = meta["input"].get("channels", "RGB").upper() == "BGR"
            self.nuisances = {k: (int(v["index"]), v.get("kind", "regression")) for k, v in meta["nuisances"].items()}
        except (KeyError, TypeError, ValueError) as e:
            raise SynthfaceError(f"{side}: malformed sidecar ({e!r}); it needs input.size and "
                                 "nuisances.<name>.index") from None
        bad = {k: kind for k, (_, kind) in self.nuisances.items() if kind not in KINDS}
        if bad:
            raise SynthfaceError(f"{side}: nuisance kind must be one of {KINDS}, got {bad}")
        if self.crop not in ("ffhq_attribute", "ffhq_arcface", "none"):
            raise SynthfaceError(f"{side}: input.crop must be ffhq_attribute, ffhq_arcface or none, got {self.crop!r}")
        self.meta = meta
        self.batch_size = batch_size
        try:
            self.session = ort.InferenceSession(str(self.path), providers=providers or ["CPUExecutionProvider"])
        except Exception as e:  # onnxruntime raises its own types for unreadable graphs
            raise SynthfaceError(f"{self.path}: not a readable ONNX model ({e})") from None
        self.input_name = self.session.get_inputs()[0].name
        width = self.session.get_outputs()[0].shape[-1]
        if isinstance(width, int) and max(i for i, _ in self.nuisances.values()) >= width:
            raise SynthfaceError(f"{side}: a nuisance index is beyond the model's {width} outputs")

    @property
    def names(self) -> list[str]:
        return list(self.nuisances)

    def _prepare(self, images, aligned: bool = False) -> np.ndarray:
        return self._prepare_tensor(to_float(images), aligned).numpy().astype(np.float32)

    def _prepare_tensor(self, x: torch.Tensor, aligned: bool = False) -> torch.Tensor:
        """float [N, 3, H, W] in 0..255 -> the model's normalised input (differentiable)."""
        if aligned:  # already the 112x112 ArcFace crop a dataset stores
            if self.crop != "ffhq_arcface":
                raise SynthfaceError(f"{self.path}: reads {self.crop} crops, not the stored 112x112 ArcFace crops")
            x = F.interpolate(x, size=(self.size, self.size), mode="bilinear", align_corners=False, antialias=True)
        elif self.crop == "ffhq_attribute":
            x = attribute_crop(x, self.size)
        elif self.crop == "ffhq_arcface":
            x = arcface_crop(x, self.size)
        elif x.shape[-1] != self.size:
            x = F.interpolate(x, size=(self.size, self.size), mode="bilinear", align_corners=False, antialias=True)
        if self.bgr:
            x = x.flip(1)
        return (x - self.mean) / self.std

    def predict(self, images, aligned: bool = False) -> dict[str, np.ndarray]:
        """Values per nuisance of FFHQ-aligned images (aligned=True: of 112x112 ArcFace crops)."""
        if len(images) == 0:
            return {k: np.zeros(0, np.float32) for k in self.nuisances}
        out = []
        for s in range(0, len(images), self.batch_size):
            x = self._prepare(images[s:s + self.batch_size], aligned)
            out.append(self.session.run(None, {self.input_name: x})[0])
        y = np.concatenate(out).astype(np.float32)
        res = {}
        for name, (i, kind) in self.nuisances.items():
            v = y[:, i]
            res[name] = np.clip(v, -LOGIT_CLIP, LOGIT_CLIP) if kind == "logit" else v
        return res

    def predict_tensor(self, images: torch.Tensor) -> torch.Tensor:
        """[N, len(names)] (names order) for FFHQ-aligned float images [N, 3, H, W] in 0..255, through
        the graph evaluated with torch ops (labelling.onnx_torch), so gradients reach the images."""
        if getattr(self, "_torch", None) is None:
            from .onnx_torch import OnnxAsTorch
            self._torch = OnnxAsTorch(self.path)
        y = self._torch(self._prepare_tensor(images))
        cols = [y[:, i].clamp(-LOGIT_CLIP, LOGIT_CLIP) if kind == "logit" else y[:, i]
                for i, kind in self.nuisances.values()]
        return torch.stack(cols, 1)

    def predict_matrix(self, images, aligned: bool = False) -> np.ndarray:
        """[N, len(names)] in `names` order."""
        p = self.predict(images, aligned)
        return np.stack([p[k] for k in self.names], 1) if self.names else np.zeros((len(images), 0), np.float32)

    def describe(self) -> dict:
        return {"kind": "onnx-nuisance", "path": str(self.path), "sha256": file_digest(self.path)[:16],
                "nuisances": {k: kind for k, (_, kind) in self.nuisances.items()}}


def load_nuisance_regressor(spec: str, device: str = "cpu") -> OnnxNuisanceRegressor:
    """`world` or `onnx:PATH`."""
    spec = str(spec).strip()
    providers = ["CUDAExecutionProvider", "CPUExecutionProvider"] if device.startswith("cuda") else None
    if spec == "world":
        from ..assets import asset
        return OnnxNuisanceRegressor(asset("nuisance.onnx"), providers=providers)
    kind, _, path = spec.partition(":")
    if kind != "onnx" or not path:
        raise SynthfaceError(f"unknown nuisance regressor {spec!r}: use world or onnx:PATH (an ONNX regressor with a "
                             "JSON sidecar, see synthface/labelling/nuisance.py)")
    return OnnxNuisanceRegressor(path, providers=providers)
