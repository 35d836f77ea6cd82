"""Named losses for face recognition training.

Margin losses follow arcface_torch's convention: a margin module maps the cosine between each
embedding and every class centre (an [N, C] matrix) plus the labels to scaled logits, and the
cross-entropy is taken by whoever holds the class centres (`MarginHead`). A label of -1 marks a
row whose class is not among the columns (arcface_torch's partial-FC sampling): it gets no margin.

The combined margin (Deng et al. 2019, section 3.3) replaces the true-class cosine cos(theta) by

    cos(m1 * theta + m2) - m3,        all logits then multiplied by s,

so m2 alone is ArcFace, m3 alone is CosFace and m1 alone is (a simplified) SphereFace.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import SynthfaceError


class CombinedMarginLoss(nn.Module):
    """Scaled logits with the combined margin on the true class.

    straight_through: as arcface_torch does, the margin changes the forward value of the
    true-class logit but its gradient with respect to the cosine is left at 1 (the derivative of
    cos(theta + m) with respect to cos(theta) grows without bound as theta -> 0, and this is what
    arcface_torch's recognisers were trained with). False gives the exact derivative, with the
    cosine clamped slightly inside [-1, 1] so arccos stays differentiable.
    """

    def __init__(self, s: float = 64.0, m1: float = 1.0, m2: float = 0.5, m3: float = 0.0,
                 straight_through: bool = True):
        super().__init__()
        if s <= 0:
            raise SynthfaceError(f"margin loss scale s is {s}; give a positive scale (arcface_torch uses 64)")
        if m1 <= 0:
            raise SynthfaceError(f"margin m1 is {m1}; give a positive angle multiplier (1 for ArcFace/CosFace)")
        self.s, self.m1, self.m2, self.m3 = float(s), float(m1), float(m2), float(m3)
        self.straight_through = straight_through

    def extra_repr(self) -> str:
        return f"s={self.s}, m1={self.m1}, m2={self.m2}, m3={self.m3}, straight_through={self.straight_through}"

    def target_logit(self, cos: torch.Tensor) -> torch.Tensor:
        """The margin-adjusted cosine of the true class (before scaling)."""
        if self.m1 == 1.0 and self.m2 == 0.0:
            return cos - self.m3          # CosFace: no angle needed
        theta = torch.acos(cos.clamp(-1 + 1e-7, 1 - 1e-7))
        return torch.cos(self.m1 * theta + self.m2) - self.m3

    def forward(self, cos: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        rows = torch.nonzero(labels != -1).flatten()
        cols = labels[rows]
        target = cos[rows, cols]
        if self.straight_through:
            with torch.no_grad():
                shift = self.target_logit(target) - target
            new = target + shift
        else:
            new = self.target_logit(target)
        # index_put out of place keeps autograd of the other logits intact
        logits = cos.index_put((rows, cols), new)
        return logits * self.s


class ArcFace(CombinedMarginLoss):
    """Additive angular margin: s * cos(theta + m) on the true class."""

    def __init__(self, s: float = 64.0, m: float = 0.5, straight_through: bool = True):
        super().__init__(s, 1.0, m, 0.0, straight_through)


class CosFace(CombinedMarginLoss):
    """Additive cosine margin: s * (cos(theta) - m) on the true class."""

    def __init__(self, s: float = 64.0, m: float = 0.4, straight_through: bool = True):
        super().__init__(s, 1.0, 0.0, m, straight_through)


MARGIN_LOSSES = {"arcface": ArcFace, "cosface": CosFace, "combined": CombinedMarginLoss}


def margin_loss(name: str, scale: float = 64.0, margin=None) -> CombinedMarginLoss:
    """Build a margin loss by name. `margin` is m for arcface/cosface, or (m1, m2, m3) for combined;
    None takes arcface_torch's defaults (0.5, 0.4, and (1, 0.5, 0))."""
    if name not in MARGIN_LOSSES:
        raise SynthfaceError(f"unknown loss {name!r}; choose one of {', '.join(MARGIN_LOSSES)}")
    if name == "combined":
        m = (1.0, 0.5, 0.0) if margin is None else tuple(float(v) for v in margin)
        if len(m) != 3:
            raise SynthfaceError(f"the combined margin takes three values m1,m2,m3 (got {margin!r})")
        return CombinedMarginLoss(scale, *m)
    if margin is not None and not isinstance(margin, (int, float)):
        raise SynthfaceError(f"{name} takes one margin value (got {margin!r})")
    return MARGIN_LOSSES[name](scale) if margin is None else MARGIN_LOSSES[name](scale, float(margin))


class MarginHead(nn.Module):
    """Class centres plus a margin loss: embeddings [N, D] and labels [N] -> mean cross-entropy.

    The centres are stored as `weight` [num_classes, embedding_dim] (arcface_torch's layout),
    initialised N(0, 0.01) as there; both embeddings and centres are L2-normalised.
    """

    def __init__(self, embedding_dim: int, num_classes: int, loss: CombinedMarginLoss | None = None):
        super().__init__()
        if num_classes < 2:
            raise SynthfaceError(f"a margin head needs at least 2 classes (got {num_classes})")
        self.embedding_dim, self.num_classes = int(embedding_dim), int(num_classes)
        self.loss = loss if loss is not None else ArcFace()
        self.weight = nn.Parameter(torch.normal(0, 0.01, (self.num_classes, self.embedding_dim)))

    def cosine(self, embeddings: torch.Tensor) -> torch.Tensor:
        # in fp32 even under autocast: a bf16 cosine near 1 is too coarse for the angle margins
        with torch.autocast(embeddings.device.type, enabled=False):
            return F.linear(F.normalize(embeddings.float(), dim=1), F.normalize(self.weight.float(), dim=1))

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        if labels.numel() and int(labels.max()) >= self.num_classes:
            raise SynthfaceError(f"label {int(labels.max())} is outside the head's {self.num_classes} classes")
        logits = self.loss(self.cosine(embeddings), labels)
        return F.cross_entropy(logits, labels, ignore_index=-1)


def pairwise_distances(emb: torch.Tensor) -> torch.Tensor:
    """Euclidean distances between rows; clamped before the square root so that coincident
    points (and the diagonal) keep a finite gradient."""
    sq = emb.square().sum(1)
    d2 = sq[:, None] + sq[None, :] - 2 * emb @ emb.t()
    return d2.clamp_min(1e-12).sqrt()


class TripletLoss(nn.Module):
    """Triplet loss with online mining within a batch, on L2-normalised embeddings.

    mining="semihard" (Schroff et al. 2015): every anchor-positive pair (a, p) of the batch is
    used with the closest negative that is still farther from a than p is; where no negative is
    farther, the farthest negative (the least hard one) is used, which keeps early training
    from collapsing all embeddings together.
    mining="hard" (Hermans et al. 2017, batch-hard): each anchor with its farthest positive and
    closest negative.
    Loss: mean of max(0, d(a, p) - d(a, n) + margin) over the mined triplets; anchors without a
    positive or a negative in the batch contribute nothing (a batch with none of them is an error).
    """

    def __init__(self, margin: float = 0.2, mining: str = "semihard"):
        super().__init__()
        if mining not in ("semihard", "hard"):
            raise SynthfaceError(f"unknown triplet mining {mining!r}; choose semihard or hard")
        if margin < 0:
            raise SynthfaceError(f"triplet margin is {margin}; give a non-negative margin")
        self.margin, self.mining = float(margin), mining

    def mine(self, dist: torch.Tensor, labels: torch.Tensor):
        """(anchor, positive, negative) index tensors of the mined triplets."""
        n = len(labels)
        same = labels[:, None] == labels[None, :]
        eye = torch.eye(n, dtype=torch.bool, device=labels.device)
        pos, neg = same & ~eye, ~same
        d = dist.detach()
        if self.mining == "hard":
            a = torch.nonzero(pos.any(1) & neg.any(1)).flatten()
            p = d.masked_fill(~pos, -math.inf)[a].argmax(1)
            nn_ = d.masked_fill(~neg, math.inf)[a].argmin(1)
            return a, p, nn_
        a, p = torch.nonzero(pos & neg.any(1, keepdim=True), as_tuple=True)
        d_an = d[a]                                   # [pairs, n]
        d_ap = d[a, p][:, None]
        valid = neg[a]
        farther = valid & (d_an > d_ap)
        semi = d_an.masked_fill(~farther, math.inf).argmin(1)
        easiest = d_an.masked_fill(~valid, -math.inf).argmax(1)
        return a, p, torch.where(farther.any(1), semi, easiest)

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        emb = F.normalize(embeddings.float(), dim=1)
        dist = pairwise_distances(emb)
        a, p, n = self.mine(dist, labels)
        if len(a) == 0:
            raise SynthfaceError("this batch has no anchor with both a positive and a negative: the triplet loss "
                                 "needs at least two images of some identity and two identities per batch")
        return F.relu(dist[a, p] - dist[a, n] + self.margin).mean()
