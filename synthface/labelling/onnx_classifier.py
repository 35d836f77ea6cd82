"""Any ONNX classifier described by a JSON sidecar (same name, .json).

The sidecar names the input convention and which slice of the output holds which attribute:

    {"input": {"size": 96, "channels": "RGB", "mean": 127.5, "std": 128.0, "crop": "ffhq_attribute"},
     "output": "logits", "activation": "softmax",
     "attributes": {"group": {"classes": ["group1", "group2", "group3"], "slice": [0, 3]},
                    "gender": {"classes": ["female", "male"], "slice": [3, 5]}}}

`crop` is how an FFHQ-aligned image is cut for the model: ffhq_attribute (insightface's
genderage box crop), ffhq_arcface (the 112x112 ArcFace template) or none (resize only).
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

CROPS = ("ffhq_attribute", "ffhq_arcface", "none")


class OnnxClassifier:
    """`predict(images)` -> {attribute: probabilities [N, classes]} for uint8 [N, H, W, 3] RGB
    FFHQ-aligned images (numpy or torch)."""

    def __init__(self, path, providers=None, batch_size: int = 256):
        import onnxruntime as ort

        self.path = Path(path)
        side = self.path.with_suffix(".json")
        if not self.path.is_file():
            raise SynthfaceError(f"classifier {self.path} does not exist")
        if not side.is_file():
            raise SynthfaceError(f"{self.path} needs a JSON sidecar {side.name} naming its input and classes "
                                 "(see synthface/labelling/onnx_classifier.py)")
        try:
            self.meta = json.loads(side.read_text())
            self.size = int(self.meta["input"]["size"])
            self.mean = float(self.meta["input"].get("mean", 127.5))
            self.std = float(self.meta["input"].get("std", 128.0))
            self.crop = self.meta["input"].get("crop", "none")
            self.bgr = self.meta["input"].get("channels", "RGB").upper() == "BGR"
            self.attributes = {k: (list(v["classes"]), tuple(v["slice"])) for k, v in self.meta["attributes"].items()}
            self.activation = self.meta.get("activation", "softmax")
        except (KeyError, TypeError, ValueError) as e:
            raise SynthfaceError(f"{side}: malformed sidecar ({e!r}); it needs input.size and "
                                 "attributes.<name>.classes/slice") from e
        if self.crop not in CROPS:
            raise SynthfaceError(f"{side}: input.crop must be one of {CROPS}, got {self.crop!r}")
        for name, (classes, (a, b)) in self.attributes.items():
            if b - a != len(classes):
                raise SynthfaceError(f"{side}: attribute {name!r} has {len(classes)} classes but slice {a}:{b}")
        self.session = ort.InferenceSession(str(self.path), providers=providers or ["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name
        names = [o.name for o in self.session.get_outputs()]
        self.output_name = self.meta.get("output", names[0])
        if self.output_name not in names:
            raise SynthfaceError(f"{side}: output {self.output_name!r} is not in the model's outputs {names}")
        self.batch_size = batch_size
        self.schema = {k: v[0] for k, v in self.attributes.items()}

    def _prepare_tensor(self, x: torch.Tensor) -> torch.Tensor:
        """float [N, 3, H, W] in 0..255, FFHQ-aligned -> the model's normalised input (differentiable)."""
        if self.crop == "ffhq_attribute":
            x = attribute_crop(x, self.size)
        elif self.crop == "ffhq_arcface":
            x = arcface_crop(x, self.size)
        else:
            x = F.interpolate(x, size=(self.size, self.size), mode="bilinear", antialias=True, align_corners=False)
        if self.bgr:
            x = x.flip(1)
        return (x - self.mean) / self.std

    def preprocess(self, images) -> np.ndarray:
        return self._prepare_tensor(to_float(images)).numpy().astype(np.float32)

    def logits_tensor(self, images: torch.Tensor) -> torch.Tensor:
        """Logits of float images [N, 3, H, W] in 0..255 through the graph evaluated with torch ops
        (labelling.onnx_torch), so gradients reach the images."""
        if getattr(self, "_torch", None) is None:
            from .onnx_torch import OnnxAsTorch
            self._torch = OnnxAsTorch(self.path)
        return self._torch(self._prepare_tensor(images))

    def logits(self, images) -> np.ndarray:
        n = len(images)
        outs = [self.session.run([self.output_name], {self.input_name: self.preprocess(images[s:s + self.batch_size])})[0]
                for s in range(0, n, self.batch_size)]
        return np.concatenate(outs)

    def predict_proba(self, images) -> dict[str, np.ndarray]:
        z = torch.from_numpy(self.logits(images))
        out = {}
        for name, (_, (a, b)) in self.attributes.items():
            v = z[:, a:b]
            out[name] = (torch.softmax(v, 1) if self.activation == "softmax" else v).numpy()
        return out

    def classes(self, attribute: str) -> list[str]:
        return self.attributes[attribute][0]

    def describe(self) -> dict:
        return {"kind": "onnx", "path": str(self.path), "sha256": file_digest(self.path), "schema": self.schema}
