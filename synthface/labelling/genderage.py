"""insightface's genderage model (from a model pack or an .onnx path) as a labeller.

The model reads a 96x96 square around the face box (insightface's Attribute crop) and outputs
[female score, male score, age / 100]. Its gender scores are turned into probabilities with a
softmax unless they already are probabilities. Age is a regression, so the `age` attribute is
one-hot over age bins (FairFace's nine by default).
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from ..align import attribute_crop
from ..errors import SynthfaceError
from ..fileio import file_digest

AGE_BINS = (3, 10, 20, 30, 40, 50, 60, 70)  # upper edges: 0-2, 3-9, ..., 60-69, 70+
AGE_CLASSES = ["0-2", "3-9", "10-19", "20-29", "30-39", "40-49", "50-59", "60-69", "70+"]


def find_genderage(path) -> Path:
    p = Path(path)
    if p.is_dir():
        hits = sorted(p.glob("genderage*.onnx"))
        if not hits:
            raise SynthfaceError(f"model pack {p} has no genderage*.onnx (insightface packs such as buffalo_l ship one)")
        return hits[0]
    if not p.is_file():
        raise SynthfaceError(f"genderage model {p} does not exist: give a model pack directory or an .onnx file")
    return p


def as_probabilities(scores: np.ndarray) -> np.ndarray:
    s = np.asarray(scores, np.float64)
    if (s >= 0).all() and (s <= 1).all() and np.allclose(s.sum(1), 1, atol=1e-3):
        return s
    e = np.exp(s - s.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


class GenderAgeLabeller:
    schema = {"gender": ["female", "male"], "age": AGE_CLASSES}

    def __init__(self, path, providers: Sequence[str] | None = None, batch_size: int = 256):
        from insightface.model_zoo import get_model

        self.path = find_genderage(path)
        # insightface's own loader decides the input size and normalisation, as FaceAnalysis would.
        self.model = get_model(str(self.path), providers=list(providers or ["CPUExecutionProvider"]))
        if self.model is None or getattr(self.model, "taskname", None) != "genderage":
            raise SynthfaceError(f"{self.path} is not a genderage model to insightface (its output must be "
                                 "3 values: female, male, age/100)")
        self.size = int(self.model.input_size[0])
        self.batch_size = batch_size

    def predict_proba(self, images) -> dict[str, np.ndarray]:
        outs = []
        for s in range(0, len(images), self.batch_size):
            x = attribute_crop(images[s:s + self.batch_size], self.size)
            x = ((x - self.model.input_mean) / self.model.input_std).numpy().astype(np.float32)
            outs.append(self.model.session.run(self.model.output_names, {self.model.input_name: x})[0])
        pred = np.concatenate(outs)
        age = np.digitize(np.round(pred[:, 2] * 100), AGE_BINS)
        return {"gender": as_probabilities(pred[:, :2]).astype(np.float32),
                "age": np.eye(len(AGE_CLASSES), dtype=np.float32)[age]}

    def describe(self) -> dict:
        return {"kind": "insightface-genderage", "path": str(self.path), "sha256": file_digest(self.path),
                "schema": self.schema}
