"""Train a face-attribute classifier (smile, glasses, gender, any categorical label column) on the
shared training stack, with optional per-sample weights (issue 16: ERM, CID, the identity oracle).

The weights themselves come from the caller (`synthface.methods`, which sits beside this layer and
builds on it): `train_attribute(cfg, weigh=...)` hands the loaded training set to `weigh`, which
returns the dataset to train on, its items carrying a `weight` (weights in the loss) or resampled
(weights as a sampler). The loss is (1/B) sum_i w_i l_i; items without a weight count 1.

The run directory ends with:

    checkpoint.pt, log.jsonl           the engine's resumable state and log
    attribute.safetensors + .json      the whole classifier (load_attribute_model reads it)
    model.onnx + model.json            an ONNX classifier with the sidecar synthface's labellers read
                                       (`--labeller onnx:RUN/model.onnx`), logits over the task's classes
    results.json, README.md            settings, data, weights summary, held-out accuracy
"""

from __future__ import annotations

import copy
import io
import json
import sys
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import SynthfaceError
from ..fileio import atomic_write, write_json_atomic
from .data import FaceDataset
from .engine import PolyWarmup, Trainer

FORMAT = "synthface.attribute-model"
FORMAT_VERSION = 1
SIDECAR_FORMAT = "synthface.onnx-classifier"
# crop of FaceDataset -> how synthface's ONNX labellers cut an FFHQ-aligned image the same way
_LABELLER_CROP = {"none": "none", "arcface": "ffhq_arcface"}


@dataclass
class AttributeConfig:
    data: str = ""
    out: str = "runs/attribute"
    task: str = "smile"                 # a categorical label column of the dataset
    backbone: str = "small"             # small (SmallCNN) or a synthface.nets architecture (r18, mbf, ...)
    width: int = 16                     # SmallCNN's first width
    embedding_dim: int = 64             # trunk features under the linear head
    size: int = 64                      # input side (images are resized, or cropped with crop="arcface")
    crop: str = "none"                  # none | arcface (FFHQ-aligned full faces to the ArcFace crop first)
    region: Optional[tuple] = None      # (top, bottom, left, right) fractions the network looks at
    epochs: int = 10
    batch: int = 64
    lr: float = 2e-3
    weight_decay: float = 1e-4
    warmup_epochs: float = 0.5
    held_out: float = 0.1               # fraction of identities kept to report accuracy (0: none)
    augment: bool = True                # flip + small colour jitter
    weights: str = "erm"                # recorded in the outputs: what the caller's weigh() applied
    weighting: str = "loss"             # loss | sampler (recorded likewise)
    seed: int = 0
    device: str = "auto"
    amp: str = "none"
    workers: int = 0
    resume: bool = False


class AttributeModel(nn.Module):
    """[region crop ->] trunk -> linear head; forward(images) -> class logits [N, n_classes].

    region = (top, bottom, left, right) as fractions of the input side: the network looks only at
    that part of the (aligned) face, e.g. eyes and mouth for smiling. Several regions (4 values
    each, all of the same pixel size) are stacked as channels, e.g. eyes and mouth without the
    pixels between them. It is part of the graph, so the exported ONNX takes the whole face like
    any labeller."""

    def __init__(self, trunk: nn.Module, features: int, n_classes: int, region: Optional[Sequence[float]] = None):
        super().__init__()
        self.trunk = trunk
        self.head = nn.Linear(features, n_classes)
        self.region = tuple(float(v) for v in region) if region else None

    def forward(self, x):
        if self.region is not None:
            h, w = int(x.shape[-2]), int(x.shape[-1])  # static in the exported graph too
            crops = []
            for k in range(0, len(self.region), 4):
                t, b, l, r = self.region[k:k + 4]
                crops.append(x[..., int(round(t * h)):int(round(b * h)), int(round(l * w)):int(round(r * w))])
            x = crops[0] if len(crops) == 1 else torch.cat(crops, 1)
        return self.head(self.trunk(x))


def _check_region(region, size: int, backbone: str) -> Optional[list]:
    if region is None:
        return None
    region = [float(v) for v in region]
    quads = [region[k:k + 4] for k in range(0, len(region), 4)]
    if not region or len(region) % 4 or not all(0 <= t < b <= 1 and 0 <= l < r <= 1 for t, b, l, r in quads):
        raise SynthfaceError(f"region {region}: give top,bottom,left,right as fractions with top < bottom and "
                             "left < right, e.g. 0.375,0.94,0.22,0.78 (or several such groups of 4)")
    shapes = {(round(b * size) - round(t * size), round(r * size) - round(l * size)) for t, b, l, r in quads}
    if len(quads) > 1 and (len(shapes) > 1 or backbone != "small"):
        raise SynthfaceError(f"regions {quads}: stacked regions need the small backbone and the same pixel size "
                             f"at input side {size} (got {sorted(shapes)})")
    return region


def build_attribute_model(backbone: str, n_classes: int, embedding_dim: int = 64, width: int = 16,
                          size: int = 64, region: Optional[Sequence[float]] = None) -> AttributeModel:
    """A fresh classifier: backbone "small" (SmallCNN of this width) or any synthface.nets
    architecture (its embedding is the head's input); region: see AttributeModel."""
    if n_classes < 2:
        raise SynthfaceError(f"a classifier needs at least 2 classes, got {n_classes}")
    region = _check_region(region, size, backbone)
    if backbone == "small":
        from ..nets.attribute_nets import SmallCNN
        trunk = SmallCNN(width=width, embedding=embedding_dim, in_channels=3 * (len(region) // 4 if region else 1))
    else:
        from ..nets import build_backbone
        kw = {"in_size": size} if backbone == "world-recognizer" else {}
        trunk = build_backbone(backbone, embedding_dim, **kw)
    model = AttributeModel(trunk, embedding_dim, n_classes, region)
    model.synthface_attribute = {"backbone": backbone, "n_classes": n_classes, "embedding_dim": embedding_dim,
                                 "width": width, "size": size, "region": region}
    return model


class WeightedObjective(nn.Module):
    """What the engine steps on: (1/B) sum_i w_i * cross-entropy_i, with the batch accuracy."""

    def __init__(self, model: nn.Module, label_key: str = "label"):
        super().__init__()
        self.model = model
        self.label_key = label_key

    def forward(self, batch: dict):
        logits = self.model(batch["image"])
        y = batch[self.label_key].long()
        losses = F.cross_entropy(logits.float(), y, reduction="none")
        w = batch.get("weight")
        loss = (losses * w.to(losses.dtype)).mean() if w is not None else losses.mean()
        return loss, {"batch_accuracy": (logits.argmax(1) == y).float().mean().detach()}


@torch.no_grad()
def predict_logits(model: nn.Module, dataset, batch: int = 256, device="cpu") -> np.ndarray:
    """Logits of every item (augmentation off), in item order."""
    was = getattr(dataset, "augment", None)
    if was is not None:
        dataset.augment = False
    model.eval()
    out = []
    try:
        for s in range(0, len(dataset), batch):
            x = torch.stack([dataset[i]["image"] for i in range(s, min(s + batch, len(dataset)))]).to(device)
            out.append(model(x).float().cpu())
    finally:
        if was is not None:
            dataset.augment = was
    return torch.cat(out).numpy() if out else np.zeros((0, 0), np.float32)


def fit_attribute(model: AttributeModel, dataset, out, epochs: int, batch: int, lr: float = 2e-3,
                  weight_decay: float = 1e-4, warmup_epochs: float = 0.5, label_key: str = "label", seed: int = 0,
                  device: str = "cpu", amp: str = "none", workers: int = 0, resume: bool = False,
                  evaluate: Optional[Callable] = None, meta: Optional[dict] = None, stop_after: Optional[int] = None,
                  log: Callable[[str], None] = lambda s: None) -> Trainer:
    """Train `model` on a map-style dataset of dicts (`image`, `label_key`, optionally `weight`) with
    the shared Trainer (AdamW, linear warm-up then polynomial decay); returns the Trainer, whose
    model_.model is the trained classifier."""
    trainer = Trainer(out, epochs, batch, seed=seed, device=device, amp=amp, num_workers=workers, resume=resume,
                      stop_after=stop_after, progress=False, log=log)

    def make_optimizer(m):
        return torch.optim.AdamW(m.parameters(), lr=lr, weight_decay=weight_decay)

    def make_scheduler(opt, total):
        warm = min(total, int(round(warmup_epochs * total / epochs)))
        return torch.optim.lr_scheduler.LambdaLR(opt, PolyWarmup(total, warm, 1.0))

    ev = (lambda m, epoch: evaluate(m.model, epoch)) if evaluate is not None else None
    trainer.fit(WeightedObjective(model, label_key), dataset, make_optimizer, make_scheduler, evaluate=ev,
                meta=meta or {})
    return trainer


# ------------------------------------------------------------------------------ the CLI's trainer

def load_task_dataset(cfg: AttributeConfig) -> FaceDataset:
    if cfg.crop not in _LABELLER_CROP:
        raise SynthfaceError(f"--crop {cfg.crop!r}: choose none or arcface")
    ds = FaceDataset(cfg.data, labels=(cfg.task,), size=cfg.size, crop=cfg.crop, seed=cfg.seed)
    if cfg.task not in ds.classes_:
        raise SynthfaceError(f"label {cfg.task!r} of {cfg.data} is numeric with many values; an attribute "
                             "classifier needs a categorical column (threshold it first)")
    if len(ds.classes_[cfg.task]) < 2:
        raise SynthfaceError(f"every image of {cfg.data} has {cfg.task} = {ds.classes_[cfg.task][0]!r}; "
                             "a classifier needs at least two classes")
    return ds


class _TaskView(torch.utils.data.Dataset):
    """FaceDataset items with the task's class index under `label`."""

    def __init__(self, base: FaceDataset, task: str):
        self.base, self.task = base, task

    def __len__(self):
        return len(self.base)

    def set_epoch(self, epoch):
        self.base.set_epoch(epoch)

    def __getitem__(self, i):
        item = self.base[i]
        return {"image": item["image"], "label": item[self.task], "identity": item["identity"]}


def train_attribute(cfg: AttributeConfig, weigh: Optional[Callable] = None,
                    log: Callable[[str], None] = lambda s: print(s, file=sys.stderr),
                    stop_after: Optional[int] = None) -> dict:
    """Train (or resume) and write the outputs. weigh(train_set) -> (dataset, info): the training
    set as it should be trained on (items carrying `weight`, or resampled) and a JSON-able summary
    of the weights; None trains unweighted (ERM)."""
    full = load_task_dataset(cfg)
    if cfg.held_out > 0:
        tr_items, va_items = full.split_identities(cfg.held_out, seed=cfg.seed)
        train_set, val_set = full.subset(tr_items), full.subset(va_items)
    else:
        train_set, val_set = full, None
    train_set.augment = cfg.augment
    classes = [str(c) for c in full.classes_[cfg.task]]
    log(f"{cfg.data}: {len(full)} images of {full.num_classes} identities; {cfg.task} classes "
        + ", ".join(f"{k}: {v}" for k, v in full.label_counts(cfg.task).items())
        + (f"; {len(val_set)} images of {val_set.num_classes} identities held out" if val_set is not None else ""))
    view = _TaskView(train_set, cfg.task)
    data, winfo = (view, {"scheme": "erm"}) if weigh is None else weigh(view)
    torch.manual_seed(cfg.seed)
    model = build_attribute_model(cfg.backbone, len(classes), cfg.embedding_dim, cfg.width, cfg.size, cfg.region)

    def evaluate(m, epoch):
        if val_set is None:
            return {}
        pred = predict_logits(m, _TaskView(val_set, cfg.task), device=next(m.parameters()).device).argmax(1)
        return {"val_accuracy": float((pred == val_set.targets_[cfg.task].numpy()).mean())}

    meta = {"task": cfg.task, "backbone": cfg.backbone, "classes": classes, "images": len(data),
            "weights": cfg.weights, "weighting": cfg.weighting}
    t0 = time.perf_counter()
    trainer = fit_attribute(model, data, cfg.out, cfg.epochs, cfg.batch, cfg.lr, cfg.weight_decay,
                            cfg.warmup_epochs, seed=cfg.seed, device=cfg.device, amp=cfg.amp, workers=cfg.workers,
                            resume=cfg.resume, evaluate=evaluate, meta=meta, stop_after=stop_after, log=log)
    if trainer.stopped_:
        return {"stopped_at_step": trainer.step_}
    model = trainer.model_.model.cpu().eval()
    history = [json.loads(line) for line in trainer.log_path.read_text().splitlines() if line.strip()]
    evals = [h["val_accuracy"] for h in history if "val_accuracy" in h]
    results = {"config": asdict(cfg), "classes": classes,
               "data": {"source": str(cfg.data), "format": full.format_, "images": len(full),
                        "identities": full.num_classes, "train_images": len(train_set),
                        "held_out_images": len(val_set) if val_set is not None else 0,
                        "class_counts": {str(k): v for k, v in train_set.label_counts(cfg.task).items()}},
               "weights": winfo, "steps": trainer.step_, "train_seconds": round(time.perf_counter() - t0, 1),
               "val_accuracy": evals[-1] if evals else None, "val_accuracy_per_epoch": evals}
    export_attribute(model, cfg.out, cfg.task, classes, size=cfg.size, crop=cfg.crop, mean=full.mean, std=full.std,
                     training={k: results["config"][k] for k in ("data", "epochs", "weights", "weighting", "seed")})
    write_json_atomic(Path(cfg.out) / "results.json", results)
    atomic_write(Path(cfg.out) / "README.md", lambda f: f.write(card(results).encode()))
    log(f"wrote {cfg.out}/model.onnx (+ model.json: use it as --labeller onnx:{cfg.out}/model.onnx) and "
        f"attribute.safetensors" + (f"; held-out accuracy {results['val_accuracy']:.4f}" if evals else ""))
    return results


# ------------------------------------------------------------------------------ export and loading

def export_attribute(model: AttributeModel, out, task: str, classes: Sequence[str], size: int, crop: str = "none",
                     mean: float = 127.5, std: float = 127.5, training: Optional[dict] = None) -> Path:
    """attribute.safetensors + attribute.json (the torch model) and model.onnx + model.json (the
    sidecar synthface.labelling.OnnxClassifier reads: input convention, logits slice per class)."""
    from safetensors.torch import save

    out = Path(out)
    arch = dict(getattr(model, "synthface_attribute", {}))
    if not arch:
        raise SynthfaceError("export_attribute takes a model made by build_attribute_model")
    inp = {"size": int(size), "channels": "RGB", "layout": "NCHW", "mean": float(mean), "std": float(std),
           "crop": _LABELLER_CROP[crop]}
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    atomic_write(out / "attribute.safetensors", lambda f: f.write(save(state)))
    write_json_atomic(out / "attribute.json", {"format": FORMAT, "format_version": FORMAT_VERSION, **arch,
                                               "task": task, "classes": list(classes), "input": inp,
                                               "training": training or {}})
    net = copy.deepcopy(model).float().cpu().eval()
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net, (torch.zeros(2, 3, size, size),), buf, dynamo=False, opset_version=17,
                          input_names=["input"], output_names=["logits"],
                          dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}})
    atomic_write(out / "model.onnx", lambda f: f.write(buf.getvalue()))
    write_json_atomic(out / "model.json", {
        "format": SIDECAR_FORMAT, "format_version": 1, "name": f"{task} classifier", "input": inp,
        "output": "logits", "activation": "softmax",
        "attributes": {task: {"classes": list(classes), "slice": [0, len(classes)]}}, "training": training or {}})
    return out / "model.onnx"


def load_attribute_model(path) -> tuple[AttributeModel, dict]:
    """(model in eval mode, its description) from a run directory or its attribute.safetensors."""
    from safetensors.torch import load_file

    p = Path(path)
    if p.is_dir():
        p = p / "attribute.safetensors"
    side = p.with_suffix(".json")
    if not p.is_file() or not side.is_file():
        raise SynthfaceError(f"{path}: no attribute.safetensors with its attribute.json; give the run directory of "
                             "`synthface train attribute`")
    desc = json.loads(side.read_text())
    if desc.get("format") != FORMAT:
        raise SynthfaceError(f"{side} is not a synthface attribute model description")
    model = build_attribute_model(desc["backbone"], desc["n_classes"], desc["embedding_dim"], desc["width"],
                                  desc["size"], desc.get("region"))
    from .engine import load_state_strict
    load_state_strict(model, load_file(str(p)), str(p))
    return model.eval(), desc


def card(results: dict) -> str:
    c, d, w = results["config"], results["data"], results["weights"]
    acc = results["val_accuracy"]
    return f"""# {c['task']} classifier trained with synthface

{'**Held-out accuracy: %.4f** (identities never trained on).' % acc if acc is not None else 'No held-out identities.'}

Data: `{d['source']}` ({d['format']}), {d['images']} images of {d['identities']} identities; trained on
{d['train_images']} images, classes {', '.join(f'{k}: {v}' for k, v in d['class_counts'].items())}.

Weights: **{c['weights']}** as {'per-sample loss weights' if c['weighting'] == 'loss' else 'a weighted sampler'}
({json.dumps(w)}).

| backbone | input | crop | region | epochs | batch | lr | weight decay | seed |
|---|---|---|---|---|---|---|---|---|
| {c['backbone']} | {c['size']} | {c['crop']} | {c['region'] or 'all'} | {c['epochs']} | {c['batch']} | {c['lr']} \
| {c['weight_decay']} | {c['seed']} |

Files: `model.onnx` + `model.json` (a synthface labeller: `--labeller onnx:model.onnx`; evaluate it with
`synthface evaluate-attribute --model model.onnx --dataset D`), `attribute.safetensors` + `.json`
(`synthface.train.attribute.load_attribute_model`), `log.jsonl`, `checkpoint.pt`, `results.json`.
"""
