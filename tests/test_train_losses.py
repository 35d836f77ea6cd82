"""Margin and triplet losses against their direct formulas."""

import math

import pytest
import torch
import torch.nn.functional as F

from synthface.errors import SynthfaceError
from synthface.train.losses import (ArcFace, CombinedMarginLoss, CosFace, MarginHead, TripletLoss, margin_loss,
                                    pairwise_distances)


def _cos(n=6, c=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, c, generator=g) * 1.8 - 0.9, torch.randint(0, c, (n,), generator=g)


def test_combined_margin_equals_arcface_and_direct_formula():
    cos, y = _cos()
    s, m = 64.0, 0.5
    expect = cos.clone()
    rows = torch.arange(len(y))
    expect[rows, y] = torch.cos(torch.acos(cos[rows, y]) + m)
    expect *= s
    got_comb = CombinedMarginLoss(s, 1.0, m, 0.0)(cos, y)
    got_arc = ArcFace(s, m)(cos, y)
    torch.testing.assert_close(got_comb, expect, atol=1e-4, rtol=1e-5)
    torch.testing.assert_close(got_arc, got_comb)
    # non-target logits untouched apart from the scale
    mask = torch.ones_like(cos, dtype=torch.bool)
    mask[rows, y] = False
    assert torch.equal(got_arc[mask], cos[mask] * s)


def test_m3_alone_is_cosface_and_m1_is_angle_multiplier():
    cos, y = _cos(seed=1)
    rows = torch.arange(len(y))
    expect = cos.clone()
    expect[rows, y] -= 0.35
    torch.testing.assert_close(CombinedMarginLoss(30.0, 1.0, 0.0, 0.35)(cos, y), expect * 30)
    torch.testing.assert_close(CosFace(30.0, 0.35)(cos, y), expect * 30)
    # the general combination
    expect = cos.clone()
    expect[rows, y] = torch.cos(1.2 * torch.acos(cos[rows, y]) + 0.3) - 0.2
    torch.testing.assert_close(CombinedMarginLoss(10.0, 1.2, 0.3, 0.2)(cos, y), expect * 10, atol=1e-5, rtol=1e-5)


def test_label_minus_one_gets_no_margin():
    cos, y = _cos()
    y[2] = -1
    out = ArcFace(64.0, 0.5)(cos, y)
    assert torch.equal(out[2], cos[2] * 64)


def test_straight_through_gradient_vs_exact():
    cos, y = _cos(seed=2)
    w = torch.randn(cos.shape, generator=torch.Generator().manual_seed(3))
    c1 = cos.clone().requires_grad_(True)
    (ArcFace(2.0, 0.5)(c1, y) * w).sum().backward()
    # straight-through: d logits / d cos is just the scale, as in arcface_torch
    torch.testing.assert_close(c1.grad, 2.0 * w)
    c2 = cos.clone().requires_grad_(True)
    (ArcFace(2.0, 0.5, straight_through=False)(c2, y) * w).sum().backward()
    rows = torch.arange(len(y))
    t = cos[rows, y]
    exact = torch.sin(torch.acos(t) + 0.5) / torch.sqrt(1 - t * t)
    torch.testing.assert_close(c2.grad[rows, y], 2.0 * w[rows, y] * exact, atol=1e-4, rtol=1e-4)


def test_margin_head_cross_entropy():
    torch.manual_seed(0)
    head = MarginHead(8, 4, CosFace(16.0, 0.3))
    emb = torch.randn(5, 8)
    y = torch.tensor([0, 1, 2, 3, 1])
    cos = F.normalize(emb) @ F.normalize(head.weight).t()
    logits = cos.detach().clone()
    logits[torch.arange(5), y] -= 0.3
    expect = F.cross_entropy(16 * logits, y)
    torch.testing.assert_close(head(emb, y), expect)
    with pytest.raises(SynthfaceError, match="outside the head's 4 classes"):
        head(emb, torch.tensor([0, 1, 2, 3, 4]))


def test_margin_loss_by_name():
    assert isinstance(margin_loss("arcface", 64, 0.5), ArcFace)
    comb = margin_loss("combined", 32, (1.0, 0.3, 0.2))
    assert (comb.m1, comb.m2, comb.m3, comb.s) == (1.0, 0.3, 0.2, 32.0)
    with pytest.raises(SynthfaceError, match="unknown loss 'softmax'"):
        margin_loss("softmax")
    with pytest.raises(SynthfaceError, match="three values"):
        margin_loss("combined", 64, (0.5,))


def _line_batch():
    # points on a unit circle at chosen angles; distances are chords 2 sin(dphi/2)
    ang = torch.tensor([0.0, 0.3, 0.9, 0.5, 1.6, 2.5])
    emb = torch.stack([torch.cos(ang), torch.sin(ang)], 1)
    labels = torch.tensor([0, 0, 0, 1, 1, 2])
    return ang, emb, labels


def test_semihard_mining_on_hand_made_batch():
    ang, emb, labels = _line_batch()
    loss = TripletLoss(margin=0.2, mining="semihard")
    a, p, n = loss.mine(pairwise_distances(emb), labels)
    got = {(int(i), int(j)): int(k) for i, j, k in zip(a, p, n)}
    # anchor 0 (angle 0): negatives at 0.5 (3), 1.6 (4), 2.5 (5)
    assert got[(0, 1)] == 3      # d_ap for angle 0.3; the closest farther negative is 0.5
    assert got[(0, 2)] == 4      # d_ap for 0.9: 0.5 is closer (not semi-hard), 1.6 is next
    # anchor 2 (0.9) with positive 0 (0.9 away): negatives 3 (0.4), 4 (0.7), 5 (1.6) -> 5
    assert got[(2, 0)] == 5
    # anchor 1 (0.3), positive 2 (0.6 away): 3 is 0.2 away, 4 is 1.3 away -> 4
    assert got[(1, 2)] == 4
    # anchor 3 (0.5) positive 4 (1.1 away): negatives 0 (0.5), 1 (0.2), 2 (0.4), 5 (2.0) -> 5
    assert got[(3, 4)] == 5
    # identity 2 has no positive: never an anchor
    assert 5 not in set(a.tolist())
    assert len(got) == 3 * 2 + 2

    def chord(x, y):
        return 2 * math.sin(abs(float(ang[x] - ang[y])) / 2)

    expect = sum(max(0.0, chord(i, j) - chord(i, k) + 0.2) for (i, j), k in got.items()) / len(got)
    assert abs(loss(emb, labels).item() - expect) < 1e-5


def test_semihard_falls_back_to_farthest_negative_and_batch_hard():
    emb = torch.tensor([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0], [0.1, 1.0]])
    labels = torch.tensor([0, 0, 1, 1])
    a, p, n = TripletLoss(mining="semihard").mine(pairwise_distances(F.normalize(emb)), labels)
    # anchor 0's positive is opposite (distance 2); no negative is farther: the farthest one is used
    got = {(int(i), int(j)): int(k) for i, j, k in zip(a, p, n)}
    assert got[(0, 1)] == 2
    ang, emb, labels = _line_batch()
    a, p, n = TripletLoss(mining="hard").mine(pairwise_distances(emb), labels)
    assert a.tolist() == [0, 1, 2, 3, 4]
    assert p.tolist() == [2, 2, 0, 4, 3]
    assert n.tolist() == [3, 3, 3, 1, 2]


def test_triplet_batch_without_pairs_is_an_error():
    with pytest.raises(SynthfaceError, match="at least two images of some identity"):
        TripletLoss()(torch.randn(3, 4), torch.tensor([0, 1, 2]))
