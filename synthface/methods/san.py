"""Semi-Adversarial Networks (Mirjalili, Raschka, Namboodiri, Ross, ICB 2018): a small convolutional
autoencoder perturbs a face so that a gender classifier is confounded while a face matcher still matches it.

Specification: ../shared/docs/fairness-methods.md §3 (architecture, prototypes, losses of the official code)
and §6 (acceptance). What is reproduced, and the project's choices ([D] there):

* the autoencoder: grey face + RGB prototype (4 channels) -> conv 8, avg-pool -> conv 12, avg-pool -> conv 256,
  nearest x2 -> conv 128, nearest x2 (3x3 convolutions, LeakyReLU); one 1x1 "prototype combiner" (131 -> 1,
  sigmoid) shared by the same-, opposite- and neutral-prototype outputs. 324,248 parameters at the official
  widths, whatever the input side. `rgb=True` widens the first convolution to 6 inputs and the combiner to
  3 outputs; `enc_channels` / `dec_channels` are parameters so a CPU run can be smaller;
* prototypes: the mean training face of each gender, and a neutral one (their count-weighted mean). Faces in
  synthface datasets are already aligned, so the per-face landmark warping of the original is not needed;
* objective of the official training loop: CE(f_G(X_sm), y) + CE(f_G(X_op), 1 - y) + mean|X - X_sm| and, from
  epoch `matcher_start` on, matcher_weight * sum over the batch and descriptor of
  ((R(X_sm) + R(X_op)) / 2 - R(X))^2 with L2-normalised descriptors (the code matches the mean of the two
  outputs, not X_sm alone); Adam lr 2e-4, batch 8. Every weight and the switch epoch are parameters.
  `pretrain_epochs` of reconstruction alone (same prototype) come first, as the shipped autoencoder was;
* both auxiliary networks are frozen and differentiable (synthface.methods.san_aux); the matcher sees the
  input in the model's colour mode (grey replicated to RGB when rgb=False), as the original's grey VGG-Face.
* [D] an optional embedding-space auxiliary, not in the paper (`embedding_weight` > 0): a linear gender probe
  on a recogniser's L2-normalised descriptors (`embedding_matcher`, the matcher by default), with the same two cross-entropies as the image classifier
  (same output keeps its gender, opposite output takes the other). Why: a fresh logistic regression on an
  unseen recogniser's embeddings still reads gender from faces that image classifiers no longer can
  (docs/experiments.md); the image term alone leaves the descriptor's gender direction untouched. The probe
  is given to `fit` (e.g. learnt on real faces) or else learnt there on the training faces' descriptors.
* [D] an optional residual skip (`skip_input=True`, not in the paper): the combiner's output is added to the
  input's logit, so the network learns a change to the face rather than the whole face.
  The official decoder ends in an up-sampling, so every output is rebuilt from half-resolution features and
  the same-prototype output alone loses matching accuracy; the skip lets the face's detail through.

Images are uint8 [N, S, S, 3] RGB in and out, like the rest of synthface (a grey model's output is
replicated into three channels). `layout` says how they are framed (ArcFace crops, as synthface datasets
store them, or full FFHQ-aligned faces), so the auxiliary networks get the crop they were trained on.
"""

from __future__ import annotations

import json
import math
import tempfile
import time
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np
import torch
from sklearn.base import BaseEstimator, TransformerMixin
from torch import nn
from torch.nn import functional as F

from ..errors import SynthfaceError
from ..fileio import atomic_write
from .san_aux import LAYOUTS, load_gender_classifier, load_matcher

FORMAT_NAME = "synthface.methods.san"
FORMAT_VERSION = 1
GENDERS = ("female", "male")  # index 0 / 1, as the demo world numbers them
PROTOTYPES = ("same", "opposite", "neutral")
MATCHER_TARGETS = ("mean", "each")


class SANAutoencoder(nn.Module):
    """The official convolutional autoencoder with its shared prototype combiner."""

    def __init__(self, rgb: bool = False, enc_channels: Sequence[int] = (8, 12),
                 dec_channels: Sequence[int] = (256, 128), skip_input: bool = False):
        super().__init__()
        c_img = 3 if rgb else 1
        layers: list[nn.Module] = []
        width = c_img + 3
        for c in enc_channels:
            layers += [nn.Conv2d(width, c, 3, 1, 1), nn.LeakyReLU(), nn.AvgPool2d(2)]
            width = c
        for c in dec_channels:
            layers += [nn.Conv2d(width, c, 3, 1, 1), nn.LeakyReLU(), nn.Upsample(scale_factor=2, mode="nearest")]
            width = c
        self.body = nn.Sequential(*layers)
        # skip_input (see the class docstring): a zero combiner output returns the face itself. An input
        # concatenated to the combiner's features instead barely helped in a short test (large 1x1 weights needed)
        self.skip_input = bool(skip_input)
        self.combiner = nn.Sequential(nn.Conv2d(width + 3, c_img, 1))  # the sigmoid is applied in forward
        self.levels = len(enc_channels)
        if len(dec_channels) != len(enc_channels):
            raise SynthfaceError("enc_channels and dec_channels need as many stages each (every pooling is undone "
                                 "by one up-sampling)")

    def forward(self, x: torch.Tensor, same: torch.Tensor, others: Sequence[torch.Tensor] = ()) -> list[torch.Tensor]:
        """x [N, C, S, S] in 0..1 and the same-gender prototype [N, 3, S, S]; returns the outputs with the same
        prototype and with each of `others` (the decoder runs once, the combiner once per prototype)."""
        h = self.body(torch.cat([x, same], 1))
        base = torch.logit(x, eps=1e-3) if self.skip_input else 0
        return [torch.sigmoid(self.combiner(torch.cat([h, p], 1)) + base) for p in (same, *others)]


def gender_codes(gender, n: Optional[int] = None, what: str = "gender") -> np.ndarray:
    """female/male names (any case) or 0/1 -> int codes (0 female, 1 male)."""
    g = np.asarray(gender)
    if g.ndim != 1 or (n is not None and len(g) != n):
        raise SynthfaceError(f"{what} must hold one label per image ({n} images), got shape {g.shape}")
    if g.dtype.kind in "iub":
        codes = g.astype(np.int64)
        if not np.isin(codes, (0, 1)).all():
            raise SynthfaceError(f"{what} codes must be 0 (female) or 1 (male), got {sorted(set(codes.tolist()))[:5]}")
        return codes
    names = np.char.lower(g.astype(str))
    bad = sorted(set(names.tolist()) - set(GENDERS))
    if bad:
        raise SynthfaceError(f"{what} labels must be female or male, got {bad[:5]}")
    return (names == "male").astype(np.int64)


def check_images(images, size: Optional[int] = None, what: str = "images") -> np.ndarray:
    """uint8 [N, S, S, 3] RGB, square, of side `size` when given; else one clear SynthfaceError."""
    x = np.asarray(images)
    if x.dtype != np.uint8:
        raise SynthfaceError(f"{what} must be uint8 RGB (0..255), got {x.dtype}")
    if x.ndim != 4 or x.shape[-1] != 3:
        raise SynthfaceError(f"{what} must have shape [N, S, S, 3] (RGB, channels last), got {x.shape}; "
                             "convert grey or RGBA images to RGB first")
    if x.shape[1] != x.shape[2]:
        raise SynthfaceError(f"{what} must be square, got {x.shape[1]}x{x.shape[2]}")
    if size is not None and x.shape[1] != size:
        raise SynthfaceError(f"{what} are {x.shape[1]}x{x.shape[2]} but this SAN works at {size}x{size}; resize "
                             f"them, or train a SAN with size={x.shape[1]}")
    if len(x) == 0:
        raise SynthfaceError(f"{what} is empty")
    return x


def to_unit(images: np.ndarray, rgb: bool) -> torch.Tensor:
    """uint8 [N, S, S, 3] -> float [N, C, S, S] in 0..1 (C = 1 grey with ITU-R 601 weights, as PIL's L)."""
    x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float() / 255.0
    if rgb:
        return x
    w = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
    return (x * w).sum(1, keepdim=True)


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """float [N, C, S, S] in 0..1 -> uint8 [N, S, S, 3] (grey replicated)."""
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    return (x.clamp(0, 1) * 255).round().byte().permute(0, 2, 3, 1).cpu().numpy()


def gender_prototypes(images: np.ndarray, codes: np.ndarray) -> tuple[np.ndarray, dict]:
    """(prototypes float32 [3, 3, S, S] in 0..1: female, male, neutral; counts per gender). The neutral
    prototype is the count-weighted mean of the two, i.e. the mean face of the whole set."""
    counts = {g: int((codes == k).sum()) for k, g in enumerate(GENDERS)}
    empty = [g for g, c in counts.items() if c == 0]
    if empty:
        raise SynthfaceError(f"the training set has no {' and no '.join(empty)} faces ({counts}); SAN's gender "
                             "prototypes need faces of both genders")
    means = []
    for k in range(2):
        acc = np.zeros(images.shape[1:], np.float64)
        for s in range(0, len(images), 1024):  # chunks: a float copy of a large set does not fit
            chunk = images[s:s + 1024][codes[s:s + 1024] == k]
            acc += chunk.sum(0, dtype=np.float64)
        means.append(acc / counts[GENDERS[k]] / 255.0)
    n = counts["female"] + counts["male"]
    neutral = (means[0] * counts["female"] + means[1] * counts["male"]) / n
    protos = np.stack([means[0], means[1], neutral]).transpose(0, 3, 1, 2).astype(np.float32)
    return protos, counts


class SANData(torch.utils.data.Dataset):
    """Training items for the shared Trainer: image (0..1, the model's colour mode), gender code and the
    epoch (so the loss schedule is a function of the data the step sees, which resumption restores).
    Horizontal flips are drawn from (seed, epoch, item)."""

    def __init__(self, images: np.ndarray, codes: np.ndarray, rgb: bool, augment: bool, seed: int):
        self.images, self.codes, self.rgb, self.augment, self.seed = images, codes, rgb, augment, seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> dict:
        x = to_unit(self.images[i:i + 1], self.rgb)[0]
        if self.augment and np.random.default_rng([self.seed, self.epoch, i]).random() < 0.5:
            x = x.flip(-1)
        return {"image": x, "gender": int(self.codes[i]), "epoch": self.epoch}


class SANObjective(nn.Module):
    """What the Trainer steps on. `net` is the only registered (trainable, checkpointed) module; the frozen
    classifier and matcher are held outside the module tree and follow it to its device."""

    def __init__(self, net: SANAutoencoder, prototypes: torch.Tensor, classifier, matcher, mode: str = "san",
                 gender_weight: float = 1.0, rec_weight: float = 1.0, matcher_weight: float = 8.0,
                 matcher_start: int = 5, embedding_weight: float = 0.0, probe: Optional[tuple] = None,
                 embedder=None, matcher_target: str = "mean"):
        super().__init__()
        self.net = net
        self.register_buffer("prototypes", prototypes, persistent=False)
        self._aux = [classifier, matcher, embedder if embedder is not None else matcher]
        self.mode = mode
        self.gender_weight, self.rec_weight = float(gender_weight), float(rec_weight)
        self.matcher_weight, self.matcher_start = float(matcher_weight), int(matcher_start)
        self.embedding_weight = float(embedding_weight)
        self.matcher_target = matcher_target
        if self.embedding_weight > 0 and probe is None:
            raise SynthfaceError("embedding_weight > 0 needs a gender probe on the matcher's descriptors")
        # (coefficients [D], intercept) of P(male) = sigmoid(d . w + b), frozen
        self._probe = None if probe is None else (torch.as_tensor(probe[0], dtype=torch.float32).flatten(),
                                                   torch.as_tensor(probe[1], dtype=torch.float32).reshape(()))

    def matcher_on(self, epoch: int) -> bool:
        """The official schedule: no matcher term in the first `matcher_start` epochs (0-based epoch < start)."""
        return self.mode == "san" and self.matcher_weight > 0 and epoch >= self.matcher_start

    def forward(self, batch: dict):
        x, y = batch["image"], batch["gender"].long()
        epoch = int(batch["epoch"][0])
        protos = self.prototypes
        same, opp = protos[y], protos[1 - y]
        if self.mode == "pretrain":
            (x_sm,) = self.net(x, same)
            rec = (x - x_sm).abs().mean()
            return rec, {"rec": rec.detach()}
        x_sm, x_op = self.net(x, same, [opp])
        clf, matcher, embedder = self._aux
        for m in (clf, matcher, embedder):
            if m is not None and next(m.parameters()).device != x.device:
                m.to(x.device)
        g_sm = F.cross_entropy(clf(x_sm), y)
        g_op = F.cross_entropy(clf(x_op), 1 - y)
        rec = (x - x_sm).abs().mean()
        loss = self.gender_weight * (g_sm + g_op) + self.rec_weight * rec
        zero = torch.zeros((), device=x.device)
        match, e_sm, e_op = zero, zero, zero
        embed_on = self.embedding_weight > 0
        if self.matcher_on(epoch) or (embed_on and embedder is matcher):
            d_sm, d_op = matcher(x_sm), matcher(x_op)  # one pass serves both terms when the embedder is the matcher
        if embed_on:
            w, b = (t.to(x.device) for t in self._probe)
            yf = y.float()
            s_sm, s_op = (d_sm, d_op) if embedder is matcher else (embedder(x_sm), embedder(x_op))
            e_sm = F.binary_cross_entropy_with_logits(s_sm @ w + b, yf)
            e_op = F.binary_cross_entropy_with_logits(s_op @ w + b, 1 - yf)
            loss = loss + self.embedding_weight * (e_sm + e_op)
        if self.matcher_on(epoch):
            with torch.no_grad():
                r_x = matcher(x)
            if self.matcher_target == "each":  # both outputs near the original (>= the mean's distance)
                match = ((d_sm - r_x).pow(2).sum() + (d_op - r_x).pow(2).sum()) / 2
            else:
                mean_desc = (d_sm + d_op) / 2
                match = (mean_desc - r_x).pow(2).sum()  # the original's sum reduction (over batch and descriptor)
            loss = loss + self.matcher_weight * match
        out = {"gender_same": g_sm.detach(), "gender_opposite": g_op.detach(), "rec": rec.detach(),
               "match": match.detach(), "matcher_on": float(self.matcher_on(epoch))}
        if embed_on:
            out.update(embedding_same=e_sm.detach(), embedding_opposite=e_op.detach())
        return loss, out


def _epoch_history(log_path: Path, stage: str) -> list[dict]:
    """Per-epoch means of the step rows of a Trainer log.jsonl."""
    rows = [json.loads(line) for line in log_path.read_text().splitlines() if line.strip()]
    out: dict[int, dict] = {}
    for r in rows:
        if "loss" not in r:
            continue
        e = out.setdefault(int(r["epoch"]), {"n": 0})
        e["n"] += 1
        for k, v in r.items():
            if k not in ("step", "epoch", "lr", "sec_per_step") and isinstance(v, (int, float)):
                e[k] = e.get(k, 0.0) + float(v)
    hist = []
    for ep in sorted(out):
        e = out[ep]
        n = e.pop("n")
        hist.append({"stage": stage, "epoch": ep, **{k: v / n for k, v in e.items()}})
    return hist


class SemiAdversarialNet(BaseEstimator, TransformerMixin):
    """Perturb face images so gender classifiers are confounded while face matchers still match them.

    Parameters (configuration only; `fit` sets the trailing-underscore state):
      size: image side the network works at (224 as published; 112 for synthface's ArcFace crops).
      rgb: False = the official grey model (grey face + RGB prototype in, grey out); True = RGB in and out.
      layout: "arcface" (synthface dataset crops) or "ffhq" (full aligned faces): how images are framed.
      enc_channels, dec_channels: the encoder's and decoder's widths ((8, 12) and (256, 128) official).
      skip_input: False (official) or True: the 1x1 combiner's output is added to the input's logit before the
        sigmoid, a residual skip past the autoencoder. The official output is rebuilt from the decoder's
        half-resolution features, so it is blurred, which costs matching even with the same prototype; with
        the skip the face's detail passes through and the network learns a change to it.
      gender_classifier, matcher: specs of the frozen auxiliary networks (synthface.methods.san_aux);
        fit(..., classifier=, matcher=) may pass loaded ones instead.
      pretrain_epochs: epochs of reconstruction alone (same prototype) before the SAN objective.
      epochs: epochs of the SAN objective; matcher_start: its epochs without the matcher term (official 5).
      gender_weight, rec_weight, matcher_weight: weights of the gender, L1 and matcher terms (1, 1, 8).
      embedding_weight: weight of the gender term on the matcher's descriptors (0: off, as published; see the
        module docstring); its probe is fit's `embedding_probe`, else a logistic regression learnt in fit on the
        training faces' descriptors.
      embedding_matcher: the recogniser whose descriptors that term reads (a matcher spec; None: the matcher).
        One that holds gender more linearly than the matcher does gives the term more to remove.
      matcher_target: "mean" (official: the mean of the same- and opposite-prototype outputs' descriptors is held
        to the original's) or "each" ([D]: each output's is, so the released opposite output cannot drift while
        the same output makes up for it).
      lr, batch_size: Adam's learning rate and the batch (official 2e-4 and 8; the matcher term is a sum
        over the batch, so its scale follows the batch size as in the original).
      augment: random horizontal flips; seed, device ("auto", "cpu", "cuda").
      work_dir: where the Trainer writes checkpoints and logs (None: a temporary folder, removed after fit).
    """

    def __init__(self, size: int = 112, rgb: bool = False, layout: str = "arcface",
                 enc_channels: Sequence[int] = (8, 12), dec_channels: Sequence[int] = (256, 128),
                 skip_input: bool = False, gender_classifier: Optional[str] = "world-attributes",
                 matcher: Optional[str] = "world-recognizer",
                 pretrain_epochs: int = 1, epochs: int = 20, matcher_start: int = 5, gender_weight: float = 1.0,
                 rec_weight: float = 1.0, matcher_weight: float = 8.0, embedding_weight: float = 0.0,
                 embedding_matcher: Optional[str] = None, matcher_target: str = "mean", lr: float = 2e-4,
                 batch_size: int = 8, augment: bool = True, seed: int = 0, device: str = "auto",
                 work_dir: Optional[str] = None):
        self.size = size
        self.rgb = rgb
        self.layout = layout
        self.enc_channels = enc_channels
        self.dec_channels = dec_channels
        self.skip_input = skip_input
        self.gender_classifier = gender_classifier
        self.matcher = matcher
        self.pretrain_epochs = pretrain_epochs
        self.epochs = epochs
        self.matcher_start = matcher_start
        self.gender_weight = gender_weight
        self.rec_weight = rec_weight
        self.matcher_weight = matcher_weight
        self.embedding_weight = embedding_weight
        self.embedding_matcher = embedding_matcher
        self.matcher_target = matcher_target
        self.lr = lr
        self.batch_size = batch_size
        self.augment = augment
        self.seed = seed
        self.device = device
        self.work_dir = work_dir

    def _check_params(self) -> None:
        if self.matcher_target not in MATCHER_TARGETS:
            raise SynthfaceError(f"matcher_target must be one of {', '.join(MATCHER_TARGETS)}, got "
                                 f"{self.matcher_target!r}")
        if self.layout not in LAYOUTS:
            raise SynthfaceError(f"layout must be one of {', '.join(LAYOUTS)}, got {self.layout!r}")
        levels = len(self.enc_channels)
        if not isinstance(self.size, (int, np.integer)) or self.size < 2 ** levels or self.size % 2 ** levels:
            raise SynthfaceError(f"size must be a positive multiple of {2 ** levels} (two poolings), got {self.size!r}")
        for name in ("epochs", "batch_size"):
            v = getattr(self, name)
            if not isinstance(v, (int, np.integer)) or v < 1:
                raise SynthfaceError(f"{name} must be a positive integer, got {v!r}")
        for name in ("pretrain_epochs", "matcher_start"):
            v = getattr(self, name)
            if not isinstance(v, (int, np.integer)) or v < 0:
                raise SynthfaceError(f"{name} must be an integer >= 0, got {v!r}")
        for name in ("gender_weight", "rec_weight", "matcher_weight", "embedding_weight", "lr"):
            v = getattr(self, name)
            if not isinstance(v, (int, float, np.number)) or not math.isfinite(v) or v < 0:
                raise SynthfaceError(f"{name} must be a finite number >= 0, got {v!r}")
        if not isinstance(self.skip_input, (bool, np.bool_)):
            raise SynthfaceError(f"skip_input must be True or False, got {self.skip_input!r}")
        if any(int(c) < 1 for c in (*self.enc_channels, *self.dec_channels)):
            raise SynthfaceError("enc_channels and dec_channels must be positive widths")

    def _new_net(self) -> SANAutoencoder:
        with torch.random.fork_rng(devices=[]):  # seeded initial weights without touching the global stream
            torch.manual_seed(int(self.seed))
            return SANAutoencoder(bool(self.rgb), [int(c) for c in self.enc_channels],
                                  [int(c) for c in self.dec_channels], bool(self.skip_input))

    def _train_stage(self, objective: SANObjective, data: SANData, epochs: int, out: Path, log) -> list[dict]:
        from ..train.engine import Trainer

        trainer = Trainer(out, epochs, int(self.batch_size), seed=int(self.seed), device=self.device, log_every=1,
                          progress=False, log=log or (lambda s: None))
        trainer.fit(objective, data, lambda m: torch.optim.Adam(m.net.parameters(), lr=float(self.lr)),
                    meta={"stage": objective.mode, "images": len(data), "size": int(self.size)})
        return _epoch_history(trainer.log_path, objective.mode)

    def fit(self, images, gender, classifier=None, matcher=None, embedding_probe=None, embedding_matcher=None,
            log: Optional[Callable[[str], None]] = None):
        """Train on uint8 [N, S, S, 3] faces with gender labels (female/male or 0/1). classifier / matcher:
        loaded auxiliary networks (GenderClassifier / Matcher, or specs), else the constructor's specs.
        embedding_probe: (coefficients [D], intercept) of a logistic P(male) on the matcher's L2-normalised
        descriptors, used when embedding_weight > 0 (default: learnt here on the training faces);
        embedding_matcher: a loaded Matcher (or spec) for that term instead of the constructor's."""
        self._check_params()
        images = check_images(images, int(self.size))
        codes = gender_codes(gender, len(images))
        protos, counts = gender_prototypes(images, codes)
        clf = load_gender_classifier(classifier if classifier is not None else self._spec("gender_classifier"),
                                     self.layout) if self.epochs else None
        mat = None
        embed = self.embedding_weight > 0 and self.epochs > 0
        if (self.matcher_weight > 0 and self.epochs > self.matcher_start) or embed:
            mat = load_matcher(matcher if matcher is not None else self._spec("matcher"), self.layout)
        probe, emb = None, None
        if embed:
            spec = embedding_matcher if embedding_matcher is not None else self.embedding_matcher
            emb = mat if spec is None else load_matcher(spec, self.layout)
            probe = (check_probe(embedding_probe, emb, images) if embedding_probe is not None
                     else fit_embedding_probe(emb, images, codes, bool(self.rgb), int(self.seed)))
        net = self._new_net()
        data = SANData(images, codes, bool(self.rgb), bool(self.augment), int(self.seed))
        t0 = time.perf_counter()
        with tempfile.TemporaryDirectory(prefix="san-") as tmp:
            work = Path(self.work_dir) if self.work_dir else Path(tmp)
            kw = dict(gender_weight=self.gender_weight, rec_weight=self.rec_weight,
                      matcher_weight=self.matcher_weight, matcher_start=self.matcher_start)
            history = []
            if self.pretrain_epochs:
                obj = SANObjective(net, torch.from_numpy(protos[:2]), None, None, "pretrain", **kw)
                history += self._train_stage(obj, data, int(self.pretrain_epochs), work / "pretrain", log)
            obj = SANObjective(net, torch.from_numpy(protos[:2]), clf, mat, "san", **kw,
                               embedding_weight=self.embedding_weight if embed else 0.0, probe=probe,
                               embedder=emb, matcher_target=self.matcher_target)
            history += self._train_stage(obj, data, int(self.epochs), work / "san", log)
        self.fit_seconds_ = time.perf_counter() - t0
        self.net_ = net.cpu().eval().requires_grad_(False)
        self.prototypes_ = protos
        self.counts_ = counts
        self.history_ = history
        self.aux_ = {"gender_classifier": getattr(clf, "spec", None), "matcher": getattr(mat, "spec", None),
                     "embedding_matcher": getattr(emb, "spec", None)}
        if probe is not None:
            self.embedding_probe_ = (np.asarray(probe[0], np.float32), float(probe[1]))
        return self

    def _spec(self, name: str):
        v = getattr(self, name)
        if v is None:
            raise SynthfaceError(f"no {name.replace('_', ' ')}: give {name}= a spec, or pass a loaded one to fit")
        return v

    # ------------------------------------------------------------------------------------ inference

    def _check_fitted(self) -> None:
        if not hasattr(self, "net_"):
            raise SynthfaceError("this SemiAdversarialNet is not fitted yet: call fit(images, gender) or "
                                 "SemiAdversarialNet.load(path) first")

    def _proto_index(self, prototype: str, codes: Optional[np.ndarray], n: int) -> np.ndarray:
        if prototype not in PROTOTYPES:
            raise SynthfaceError(f"prototype must be one of {', '.join(PROTOTYPES)}, got {prototype!r}")
        if prototype == "neutral":
            return np.full(n, 2)
        if codes is None:
            raise SynthfaceError(f"the {prototype} prototype depends on each face's gender: pass gender=")
        return codes if prototype == "same" else 1 - codes

    @torch.no_grad()
    def outputs(self, images, gender=None, prototypes: Sequence[str] = PROTOTYPES, batch: int = 64,
                device: str = "cpu") -> dict[str, np.ndarray]:
        """{prototype name: uint8 [N, S, S, 3]} for each named prototype (the decoder runs once per batch).
        gender (female/male or 0/1) is needed for same and opposite; the input's same-gender prototype is
        what the encoder sees, as in training (the neutral one when gender is not given)."""
        self._check_fitted()
        images = check_images(images, int(self.size))
        codes = gender_codes(gender, len(images)) if gender is not None else None
        idx = {p: self._proto_index(p, codes, len(images)) for p in prototypes}
        enc_idx = codes if codes is not None else np.full(len(images), 2)
        net = self.net_.to(device)
        P = torch.from_numpy(self.prototypes_).to(device)
        out: dict[str, list] = {p: [] for p in prototypes}
        for s in range(0, len(images), batch):
            x = to_unit(images[s:s + batch], bool(self.rgb)).to(device)
            sl = slice(s, s + len(x))
            res = net(x, P[enc_idx[sl]], [P[idx[p][sl]] for p in prototypes])[1:]
            for p, r in zip(prototypes, res):
                out[p].append(to_uint8(r))
        self.net_.cpu()
        return {p: np.concatenate(v) for p, v in out.items()}

    def transform(self, images, prototype: str = "opposite", gender=None, batch: int = 64) -> np.ndarray:
        """Perturbed faces, uint8 [N, S, S, 3]; prototype "opposite" is the privacy output."""
        return self.outputs(images, gender, (prototype,), batch)[prototype]

    # ------------------------------------------------------------------------------------ persistence

    def _meta(self) -> dict:
        return {"params": self.get_params(), "counts": self.counts_, "history": getattr(self, "history_", []),
                "aux": getattr(self, "aux_", {}), "fit_seconds": getattr(self, "fit_seconds_", None)}

    def state_tensors(self) -> dict[str, torch.Tensor]:
        self._check_fitted()
        t = {f"net.{k}": v.detach().cpu().contiguous() for k, v in self.net_.state_dict().items()}
        t["prototypes"] = torch.from_numpy(np.ascontiguousarray(self.prototypes_))
        if hasattr(self, "embedding_probe_"):
            t["embedding_probe.coef"] = torch.from_numpy(np.ascontiguousarray(self.embedding_probe_[0]))
            t["embedding_probe.intercept"] = torch.tensor([self.embedding_probe_[1]], dtype=torch.float32)
        return t

    @classmethod
    def from_state(cls, meta: dict, tensors: dict, where: str) -> "SemiAdversarialNet":
        est = cls(**meta["params"])
        est.net_ = est._new_net()
        try:
            est.net_.load_state_dict({k[4:]: v for k, v in tensors.items() if k.startswith("net.")}, strict=True)
        except RuntimeError as e:
            raise SynthfaceError(f"{where}: weights do not match the stored configuration ({e})") from None
        est.net_.eval().requires_grad_(False)
        est.prototypes_ = tensors["prototypes"].numpy()
        if "embedding_probe.coef" in tensors:
            est.embedding_probe_ = (tensors["embedding_probe.coef"].numpy(),
                                    float(tensors["embedding_probe.intercept"][0]))
        est.counts_ = meta["counts"]
        est.history_ = meta.get("history", [])
        est.aux_ = meta.get("aux", {})
        est.fit_seconds_ = meta.get("fit_seconds")
        return est

    def save(self, path) -> Path:
        """One .safetensors file: weights and prototypes, and in its metadata the JSON of the configuration,
        gender counts, auxiliary specs and training history (versioned)."""
        from safetensors.torch import save as st_save

        blob = st_save(self.state_tensors(), metadata={
            "format": FORMAT_NAME, "version": str(FORMAT_VERSION), "config": json.dumps(self._meta(), default=_plain)})
        return atomic_write(path, lambda f: f.write(blob))

    @classmethod
    def load(cls, path) -> "SemiAdversarialNet":
        """Read a file written by save(); never executes code from it."""
        meta, tensors = read_safetensors(path, FORMAT_NAME, "SemiAdversarialNet")
        return cls.from_state(json.loads(meta["config"]), tensors, str(path))


@torch.no_grad()
def descriptors(matcher, images: np.ndarray, rgb: bool, batch: int = 64) -> np.ndarray:
    """The matcher's L2-normalised descriptors of uint8 faces, seen in the SAN's colour mode."""
    return np.concatenate([matcher(to_unit(images[s:s + batch], rgb)).numpy()
                           for s in range(0, len(images), batch)]).astype(np.float32)


def fit_embedding_probe(matcher, images: np.ndarray, codes: np.ndarray, rgb: bool, seed: int = 0) -> tuple:
    """(coefficients, intercept) of a logistic regression P(male | descriptor) on these faces."""
    from sklearn.linear_model import LogisticRegression
    lr = LogisticRegression(C=1.0, max_iter=2000, random_state=seed).fit(descriptors(matcher, images, rgb), codes)
    return lr.coef_[0].astype(np.float32), float(lr.intercept_[0])


def check_probe(probe, matcher, images: np.ndarray) -> tuple:
    """A given (coefficients [D], intercept) pair, checked against the matcher's descriptor width."""
    try:
        coef, intercept = probe
        coef, intercept = np.asarray(coef, np.float32).ravel(), float(intercept)
    except (TypeError, ValueError):
        raise SynthfaceError("embedding_probe must be a pair (coefficients [D], intercept) of a logistic "
                             "regression on the matcher's descriptors") from None
    with torch.no_grad():
        width = int(matcher(to_unit(images[:1], True)).shape[1])
    if len(coef) != width:
        raise SynthfaceError(f"embedding_probe has {len(coef)} coefficients but the matcher's descriptors have "
                             f"{width}; learn the probe on this matcher's descriptors")
    return coef, intercept


def read_safetensors(path, format_name: str, what: str) -> tuple[dict, dict]:
    """(metadata, tensors) of a SAN-family file of this format and FORMAT_VERSION (methods.method_io)."""
    from .method_io import read_method_file
    return read_method_file(path, format_name, FORMAT_VERSION, what)


def _plain(o):
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    if isinstance(o, (np.ndarray, tuple)):
        return list(o.tolist() if isinstance(o, np.ndarray) else o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")
