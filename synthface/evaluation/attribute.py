"""Evaluate a face-attribute classifier (any synthface labeller: `onnx:PATH` with its sidecar, the
demo world's, FairFace, ...) on an identity-labelled dataset: accuracy overall and across people
(synthface.evaluation.identity_robustness), and across demographic groups when the dataset has them.
`synthface evaluate-attribute --model M --dataset D` is the command line of `evaluate_attribute`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Optional

import numpy as np
from PIL import Image

from ..errors import SynthfaceError
from .identity_robustness import identity_robustness


def native_side(dataset) -> int:
    """Side of a FaceDataset's first image as stored (labellers and recognisers take full
    FFHQ-aligned faces and crop them themselves)."""
    from ..train.data import read_record_image
    p = dataset.paths_[0]
    im = read_record_image(dataset._rec, p) if dataset._rec is not None else Image.open(p)
    with im:
        return im.width


def model_spec(model: str) -> str:
    """A labeller spec from what a user gives: a spec (onnx:PATH, world, ...), an .onnx file, or the
    run directory of `synthface train attribute`."""
    p = Path(model)
    if p.is_dir():
        if not (p / "model.onnx").is_file():
            raise SynthfaceError(f"{p} holds no model.onnx; give a run directory of `synthface train attribute`, an "
                                 ".onnx file with its .json sidecar, or a labeller spec")
        return f"onnx:{p / 'model.onnx'}"
    if p.suffix == ".onnx":
        return f"onnx:{p}"
    return model


def evaluate_attribute(labeller, dataset, task: Optional[str] = None, groups: Optional[str] = None,
                       min_images: int = 2, batch: int = 128, log: Callable[[str], None] = lambda s: None) -> dict:
    """Predict `task` on every image of an identity-labelled dataset (a FaceDataset source whose
    rows carry the task's true label) and measure identity robustness. task defaults to the
    labeller's only attribute; groups names a demographic label column (e.g. group, gender) for
    per-(class, group) accuracies and the equal-opportunity gap. Classes are compared as text."""
    from ..train.data import FaceDataset

    schema = labeller.schema
    if task is None:
        if len(schema) != 1:
            raise SynthfaceError(f"the model predicts {', '.join(schema)}; choose one with --task")
        task = next(iter(schema))
    if task not in schema:
        raise SynthfaceError(f"the model does not predict {task!r}; it predicts {', '.join(schema)}")
    labels = (task,) + ((groups,) if groups and groups != task else ())
    ds = FaceDataset(dataset, labels=labels)
    ds.size, ds.crop = native_side(ds), "none"
    truth = np.array([str(r[task]) for r in ds.rows_])
    classes = [str(c) for c in schema[task]]
    unknown = sorted(set(truth) - set(classes))
    if unknown:
        raise SynthfaceError(f"{dataset} has {task} values {unknown[:5]} that the model's classes {classes} do not "
                             "include; evaluate on a dataset labelled with the same classes")
    log(f"predicting {task} for {len(ds)} images of {ds.num_classes} identities")
    pred = []
    for s in range(0, len(ds), batch):
        imgs = np.stack([ds.image(i) for i in range(s, min(s + batch, len(ds)))])
        pred.append(np.asarray(labeller.predict_proba(imgs)[task]).argmax(1))
    pred = np.array(classes)[np.concatenate(pred)]
    grp = np.array([str(r[groups]) for r in ds.rows_]) if groups else None
    positive = classes[1] if len(classes) == 2 else classes[0]
    res = identity_robustness(truth, pred, np.array([str(r["identity"]) for r in ds.rows_]), groups=grp,
                              min_images=min_images, positive=positive)
    confusion = {t: {p: int(((truth == t) & (pred == p)).sum()) for p in classes} for t in classes}
    describe = labeller.describe() if hasattr(labeller, "describe") else {}
    return {"task": task, "dataset": str(dataset), "model": describe, "classes": classes, "positive": positive,
            "groups": groups, "confusion": confusion, **res}


def run_evaluate_attribute(model: str, dataset, out=None, task: Optional[str] = None, groups: Optional[str] = None,
                           min_images: int = 2, device: str = "cpu",
                           log: Callable[[str], None] = lambda s: None) -> dict:
    """Load the model by spec, evaluate, and write out/metrics.json when out is given."""
    from ..fileio import write_json_atomic
    from ..labelling.registry import load_one

    lab = load_one(model_spec(model), device=device)
    res = evaluate_attribute(lab, dataset, task=task, groups=groups, min_images=min_images, log=log)
    if out is not None:
        write_json_atomic(Path(out) / "metrics.json", res)
    return res


def summary(res: dict) -> dict:
    """The headline figures (no per-identity table)."""
    keep = [k for k in res if k not in ("per_identity", "model", "confusion")]
    return {k: res[k] for k in keep}


__all__ = ["evaluate_attribute", "run_evaluate_attribute", "model_spec", "native_side", "summary"]
