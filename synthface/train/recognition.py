"""Train a face recogniser (a margin-loss classifier over identities, as arcface_torch does) on
any FaceDataset source, on the shared training stack.

Defaults follow arcface_torch: SGD with momentum 0.9, lr 0.1, weight decay 5e-4, a polynomial
(power 2) decay after a linear warm-up, ArcFace with s = 64, m = 0.5, 512-d embeddings. A fraction
of the identities is held out: after each epoch the backbone embeds their images and scores
genuine / impostor pairs among them (10-fold verification accuracy, as LFW/RFW). The run directory
ends with:

    checkpoint.pt            resumable state (see synthface.train.engine)
    log.jsonl                step losses and epoch metrics
    backbone.safetensors     + backbone.json (synthface.nets.load_backbone reads it)
    model.onnx               insightface's model_zoo routes it as recognition (input 1x3x112x112)
    curves.png, README.md    training curves and a short card
    results.json             settings, data summary and final metrics
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Optional, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import SynthfaceError
from ..fairness.metrics import kfold_accuracy
from ..fileio import atomic_write, write_json_atomic
from .data import FaceDataset, augment_level
from .engine import PolyWarmup, Trainer, init_distributed, leave_distributed, seed_everything
from .losses import MarginHead, margin_loss

# recognisers train in channels_last on every device: faster convolutions on CUDA and, with oneDNN, on CPU
# (scripts/bench_train.py times synthface's side this way)
CHANNELS_LAST = True


@dataclass
class RecognitionConfig:
    data: str = ""
    out: str = "runs/recognition"
    backbone: str = "r50"
    loss: str = "arcface"               # arcface | cosface | combined
    margin: Optional[str] = None        # m (arcface/cosface) or "m1,m2,m3" (combined); None: arcface_torch's
    scale: float = 64.0
    embedding_dim: int = 512
    epochs: int = 20
    batch: int = 128                    # global batch (split over torchrun's processes)
    lr: float = 0.1
    weight_decay: float = 5e-4
    momentum: float = 0.9
    warmup_epochs: float = 1.0
    held_out: float = 0.1               # fraction of identities kept for verification
    pairs: int = 3000                   # genuine pairs (and as many impostor pairs) scored per epoch at most
    augment: Union[bool, str] = True    # none | basic (= True: flip + colour jitter) | strong (+ rotation, scale,
                                        # shift, blur: train/data.py)
    drop_small: bool = False            # drop identities with one image instead of stopping
    data_format: str = "auto"
    crop: str = "none"                  # "arcface": warp FFHQ-aligned full faces to the ArcFace crop first
    seed: int = 0
    device: str = "auto"
    amp: str = "auto"                   # auto: bf16 on CUDA, none on CPU
    workers: int = 0
    checkpoint_every: int = 0
    resume: bool = False


class RecognitionModel(nn.Module):
    """Backbone + margin head; forward(batch) -> mean margin loss (what the engine steps on)."""

    def __init__(self, backbone: nn.Module, head: MarginHead):
        super().__init__()
        self.backbone = backbone
        self.head = head

    def forward(self, batch: dict):
        emb = self.backbone(batch["image"])
        return self.head(emb, batch["identity"])


def parse_margin(loss: str, margin):
    if margin is None or margin == "":
        return None
    if isinstance(margin, (int, float)):
        return float(margin)
    parts = [p for p in str(margin).replace(" ", "").split(",") if p]
    try:
        vals = [float(p) for p in parts]
    except ValueError:
        raise SynthfaceError(f"--margin {margin!r}: give a number, or m1,m2,m3 for the combined loss") from None
    if loss == "combined":
        return tuple(vals)
    if len(vals) != 1:
        raise SynthfaceError(f"--loss {loss} takes one --margin value (got {margin!r}); m1,m2,m3 needs "
                             "--loss combined")
    return vals[0]


def verification_pairs(identity: np.ndarray, max_genuine: int, seed: int = 0):
    """Up to max_genuine genuine pairs (every pair when there are fewer) and as many impostor
    pairs, seeded; folds are assigned by identity of the first image, so no identity's pairs
    decide its own fold's threshold."""
    rng = np.random.default_rng(seed)
    by_id: dict[int, np.ndarray] = {}
    for v in np.unique(identity):
        by_id[int(v)] = np.flatnonzero(identity == v)
    gen = [(a, b) for rows in by_id.values() for i, a in enumerate(rows) for b in rows[i + 1:]]
    if not gen:
        raise SynthfaceError("the held-out identities have no two images to make a genuine pair")
    if len(gen) > max_genuine:
        gen = [gen[i] for i in sorted(rng.choice(len(gen), max_genuine, replace=False))]
    n = len(identity)
    imp = []
    while len(imp) < len(gen):
        a, b = rng.integers(n, size=2)
        if identity[a] != identity[b]:
            imp.append((a, b))
    pairs = np.array(gen + imp)
    same = np.r_[np.ones(len(gen), bool), np.zeros(len(imp), bool)]
    ids = np.unique(identity)
    fold_of = {int(v): k % 10 for k, v in enumerate(rng.permutation(ids))}
    folds = np.array([fold_of[int(identity[a])] for a in pairs[:, 0]])
    return pairs[:, 0], pairs[:, 1], same, folds


@torch.no_grad()
def embed(backbone: nn.Module, dataset: FaceDataset, device, batch: int = 128) -> np.ndarray:
    """L2-normalised embeddings of every item (no augmentation), in item order."""
    out = []
    was = dataset.augment
    dataset.augment = False
    try:
        for s in range(0, len(dataset), batch):
            x = torch.stack([dataset[i]["image"] for i in range(s, min(s + batch, len(dataset)))]).to(device)
            out.append(F.normalize(backbone(x).float(), dim=1).cpu())
    finally:
        dataset.augment = was
    return torch.cat(out).numpy()


def export_recognition_onnx(backbone: nn.Module, path, size: int = 112) -> Path:
    """ONNX that insightface's model_zoo routes as recognition (ArcFaceONNX): one float input
    [batch, 3, size, size] with static H/W named input.1, one output; normalisation is left
    to insightface (mean = std = 127.5), not baked into the graph."""
    import copy
    import io
    import warnings

    net = copy.deepcopy(backbone).float().cpu().eval()
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net, (torch.zeros(2, 3, size, size),), buf, dynamo=False, opset_version=17,
                          input_names=["input.1"], output_names=["embedding"],
                          dynamic_axes={"input.1": {0: "batch"}, "embedding": {0: "batch"}})
    return atomic_write(path, lambda f: f.write(buf.getvalue()))


def _backbone(cfg: RecognitionConfig, factory):
    if factory is not None:
        return factory(cfg.embedding_dim)
    from ..nets import build_backbone
    return build_backbone(cfg.backbone, cfg.embedding_dim)


def _check_config(cfg: RecognitionConfig) -> nn.Module:
    """The margin loss of the configuration, after checking the settings fit together."""
    if cfg.loss not in ("arcface", "cosface", "combined"):
        raise SynthfaceError(f"--loss {cfg.loss!r}: choose arcface, cosface or combined")
    loss_fn = margin_loss(cfg.loss, cfg.scale, parse_margin(cfg.loss, cfg.margin))
    if cfg.embedding_dim < 2:
        raise SynthfaceError(f"--embedding-dim {cfg.embedding_dim}: give at least 2")
    if not 0 < cfg.held_out < 1:
        raise SynthfaceError(f"held-out fraction {cfg.held_out}: give a fraction in (0, 1)")
    return loss_fn


def _split_data(cfg: RecognitionConfig):
    """(the whole set, training identities, held-out identities for verification)."""
    full = FaceDataset(cfg.data, labels=(), format=cfg.data_format, crop=cfg.crop, min_images=2,
                       drop_small=cfg.drop_small, seed=cfg.seed)
    train_items, val_items = full.split_identities(cfg.held_out, seed=cfg.seed)
    train_set, val_set = full.subset(train_items), full.subset(val_items)
    train_set.augment = augment_level(cfg.augment)
    if train_set.num_classes < 2:
        raise SynthfaceError(f"{cfg.data}: {train_set.num_classes} training identity after holding out "
                             f"{val_set.num_classes}; a margin loss needs at least 2")
    return full, train_set, val_set


def _make_trainer(cfg: RecognitionConfig, stop_after, progress, say) -> Trainer:
    cuda = torch.cuda.is_available() and cfg.device != "cpu"
    amp = cfg.amp if cfg.amp != "auto" else ("bf16" if cuda and torch.cuda.is_bf16_supported() else "none")
    return Trainer(Path(cfg.out), cfg.epochs, cfg.batch, seed=cfg.seed, device=cfg.device, amp=amp,
                   channels_last=CHANNELS_LAST, num_workers=cfg.workers, checkpoint_every=cfg.checkpoint_every,
                   resume=cfg.resume, stop_after=stop_after, progress=progress, log=say)


def _optimizer_and_schedule(cfg: RecognitionConfig):
    """SGD with momentum; the learning rate warms up, then decays polynomially (power 2)."""
    def make_optimizer(m):
        return torch.optim.SGD(m.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)

    def make_scheduler(opt, total):
        warmup = min(total, int(round(cfg.warmup_epochs * total / cfg.epochs)))
        return torch.optim.lr_scheduler.LambdaLR(opt, PolyWarmup(total, warmup, 2.0))
    return make_optimizer, make_scheduler


def _verification(cfg: RecognitionConfig, val_set):
    """(evaluate(model, epoch) -> held-out verification metrics, number of pairs it scores)."""
    a, b, same, folds = verification_pairs(val_set.targets_["identity"].numpy(), cfg.pairs, cfg.seed)

    def evaluate(m, epoch):
        e = embed(m.backbone, val_set, next(m.parameters()).device)
        scores = (e[a] * e[b]).sum(1)
        acc, _ = kfold_accuracy(scores, same, folds)
        return {"val_accuracy": acc, "val_genuine_mean": float(scores[same].mean()),
                "val_impostor_mean": float(scores[~same].mean())}
    return evaluate, int(len(a))


def _results(cfg: RecognitionConfig, full, train_set, val_set, trainer: Trainer, n_pairs: int, seconds: float):
    """(results.json's content, the run's log.jsonl rows)."""
    history = [json.loads(line) for line in trainer.log_path.read_text().splitlines() if line.strip()]
    evals = [h for h in history if "val_accuracy" in h]
    results = {"config": asdict(cfg), "data": {"source": str(cfg.data), "format": full.format_,
                                                "images": len(full), "identities": full.num_classes,
                                                "train_images": len(train_set),
                                                "train_identities": train_set.num_classes,
                                                "held_out_identities": val_set.num_classes,
                                                "held_out_images": len(val_set),
                                                "dropped_identities": full.dropped_identities_,
                                                "pairs": n_pairs},
               "steps": trainer.step_, "train_seconds": round(seconds, 1),
               "val_accuracy": evals[-1]["val_accuracy"] if evals else None,
               "val_accuracy_per_epoch": [h["val_accuracy"] for h in evals]}
    return results, history


def train_recognition(cfg: RecognitionConfig, log: Callable[[str], None] = lambda s: print(s, file=sys.stderr),
                      backbone_factory: Optional[Callable[[int], nn.Module]] = None,
                      stop_after: Optional[int] = None, progress: Optional[bool] = None) -> dict:
    """Train (or resume) and, on the main process, write the outputs. Returns the results dict
    (on other torchrun processes: {"rank": r}). backbone_factory(embedding_dim) replaces
    synthface.nets.build_backbone(cfg.backbone, ...) (tests use tiny nets)."""
    loss_fn = _check_config(cfg)
    full, train_set, val_set = _split_data(cfg)
    di = init_distributed(cfg.device)  # joined here (not in fit) so that only the main process logs
    main = di.is_main
    say = log if main else (lambda s: None)
    say(f"{cfg.data}: {len(full)} images of {full.num_classes} identities ({full.format_}); training on "
        f"{len(train_set)} images of {train_set.num_classes}, verification on {val_set.num_classes} held out"
        + (f"; {full.dropped_identities_} identities with one image dropped" if full.dropped_identities_ else ""))

    seed_everything(cfg.seed)
    backbone = _backbone(cfg, backbone_factory)
    model = RecognitionModel(backbone, MarginHead(cfg.embedding_dim, train_set.num_classes, loss_fn))
    out = Path(cfg.out)
    trainer = _make_trainer(cfg, stop_after, progress, say)
    make_optimizer, make_scheduler = _optimizer_and_schedule(cfg)
    evaluate, n_pairs = _verification(cfg, val_set)
    meta = {"task": "recognition", "backbone": cfg.backbone if backbone_factory is None else "custom",
            "embedding_dim": cfg.embedding_dim, "num_classes": train_set.num_classes, "loss": cfg.loss,
            "margin": cfg.margin, "scale": cfg.scale, "held_out": cfg.held_out, "images": len(train_set)}
    t0 = time.perf_counter()
    finished = False
    try:
        trainer.fit(model, train_set, make_optimizer, make_scheduler, evaluate=evaluate, meta=meta)
        finished = True
    finally:
        leave_distributed(di, finished)
    if not main:
        return {"rank": di.rank}
    if trainer.stopped_:
        return {"stopped_at_step": trainer.step_}
    model = trainer.model_.cpu().eval()
    results, history = _results(cfg, full, train_set, val_set, trainer, n_pairs, time.perf_counter() - t0)
    _write_outputs(cfg, model.backbone, results, history, out, backbone_factory is None)
    log(f"wrote {out}/backbone.safetensors, model.onnx and README.md (held-out verification accuracy "
        f"{results['val_accuracy']:.4f})")
    return results


def _write_outputs(cfg, backbone: nn.Module, results: dict, history: list, out: Path, registered: bool):
    if registered:
        from ..nets import save_backbone
        save_backbone(backbone, cfg.backbone, out / "backbone.safetensors",
                      training={"loss": cfg.loss, "margin": cfg.margin, "scale": cfg.scale, "data": str(cfg.data),
                                "epochs": cfg.epochs, "val_accuracy": results["val_accuracy"]})
    else:  # a custom test net: the tensors alone
        from safetensors.torch import save
        state = {k: v.detach().contiguous() for k, v in backbone.state_dict().items()}
        atomic_write(out / "backbone.safetensors", lambda f: f.write(save(state)))
    export_recognition_onnx(backbone, out / "model.onnx")
    _plot_curves(history, out / "curves.png")
    write_json_atomic(out / "results.json", results)
    atomic_write(out / "README.md", lambda f: f.write(card(results).encode()))


def _plot_curves(history: list, path: Path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [(h["step"], h["loss"]) for h in history if "loss" in h]
    evals = [(h["epoch"], h["val_accuracy"]) for h in history if "val_accuracy" in h]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 3.2))
    if steps:
        ax1.plot(*zip(*steps), lw=1)
    ax1.set(xlabel="step", ylabel="margin loss", title="training loss")
    if evals:
        ax2.plot(*zip(*evals), marker="o")
    ax2.set(xlabel="epoch", ylabel="accuracy", title="held-out verification", ylim=(0.45, 1.0))
    fig.tight_layout()
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=100))
    plt.close(fig)


def card(results: dict) -> str:
    c, d = results["config"], results["data"]
    per_epoch = ", ".join(f"{v:.4f}" for v in results["val_accuracy_per_epoch"])
    acc = results["val_accuracy"]
    return f"""# Face recogniser trained with synthface

**Held-out verification accuracy: {acc:.4f}** ({d['pairs']} genuine and as many impostor pairs among
{d['held_out_identities']} identities never trained on, 10-fold threshold, as LFW/RFW).

## Data

`{d['source']}` ({d['format']}): {d['images']} images of {d['identities']} identities; trained on
{d['train_images']} images of {d['train_identities']} identities{f", {d['dropped_identities']} identities with one image dropped" if d['dropped_identities'] else ""}.

## Settings

| backbone | loss | margin | scale | embedding | epochs | global batch | lr | weight decay | warm-up epochs | seed |
|---|---|---|---|---|---|---|---|---|---|---|
| {c['backbone']} | {c['loss']} | {c['margin'] if c['margin'] is not None else 'default'} | {c['scale']} | {c['embedding_dim']} | {c['epochs']} | {c['batch']} | {c['lr']} | {c['weight_decay']} | {c['warmup_epochs']} | {c['seed']} |

SGD (momentum {c['momentum']}), polynomial decay (power 2) after a linear warm-up; {results['steps']} steps in
{results['train_seconds']} s. Accuracy per epoch: {per_epoch}.

![training curves](curves.png)

## Files

`backbone.safetensors` + `backbone.json` (`synthface.nets.load_backbone`), `model.onnx` (insightface
`model_zoo` routes it as recognition; input RGB 112x112, (x - 127.5) / 127.5 applied by insightface),
`log.jsonl` (losses and metrics), `checkpoint.pt` (resume with `--resume`), `results.json`.
"""
