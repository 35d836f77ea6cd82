"""Training plumbing for weighted attribute models (synthface.methods.weighting): scheme weights,
weighted losses, loss vs sampler modes, and the bias-injected training sets of the CID experiment."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

from synthface.errors import SynthfaceError
from synthface.methods.cid import CIDWeights
from synthface.methods.weighting import (bias_injected_indices, resampled_dataset, training_weights,
                                         weighted_cross_entropy, weighted_data, weighted_loss)


def people(seed=0):
    rng = np.random.default_rng(seed)
    ident = np.repeat(np.arange(40), rng.integers(1, 6, 40))
    centres = rng.standard_normal((40, 8))
    X = centres[ident] + 0.1 * rng.standard_normal((len(ident), 8))
    y = ident % 2
    return X, y, ident


@pytest.mark.parametrize("scheme", ["erm", "cid", "oracle"])
def test_training_weights_keep_class_means_at_one(scheme):
    X, y, ident = people()
    w = training_weights(scheme, y, embeddings=X, identity=ident, cid=CIDWeights(k=2, bandwidth=0.3))
    for c in (0, 1):
        assert w[y == c].mean() == pytest.approx(1.0)
    if scheme == "oracle":
        # every identity gets the same total weight within its class
        totals = np.bincount(ident, weights=w)
        np.testing.assert_allclose(totals[y[np.unique(ident, return_index=True)[1]] == 1],
                                   totals[ident[y == 1][0]])
    if scheme == "cid":
        assert w.std() > 0.1  # near-duplicate people are down-weighted


def test_training_weights_bad_inputs():
    with pytest.raises(SynthfaceError, match="need the training images' recogniser embeddings"):
        training_weights("cid", [0, 1])
    with pytest.raises(SynthfaceError, match="ground-truth identity"):
        training_weights("oracle", [0, 1])
    with pytest.raises(SynthfaceError, match="weights='uniform'; use one of erm, cid, oracle"):
        training_weights("uniform", [0, 1])


def test_weighted_losses_match_hand_computation():
    torch.manual_seed(0)
    loss, w = torch.rand(6), torch.tensor([1.0, 2, 0, 1, 3, 0.5])
    assert weighted_loss(loss, w).item() == pytest.approx(float((loss * w).sum() / 6))
    with pytest.raises(SynthfaceError, match="reduction='none'"):
        weighted_loss(loss, w[:5])
    logits, t = torch.randn(6, 3), torch.tensor([0, 2, 1, 1, 0, 2])
    ref = (F.cross_entropy(logits, t, reduction="none") * w).mean()
    assert weighted_cross_entropy(logits, t, w).item() == pytest.approx(ref.item())
    logit1, t1 = torch.randn(6, 1), torch.tensor([0, 1, 1, 0, 1, 0])
    ref = (F.binary_cross_entropy_with_logits(logit1[:, 0], t1.float(), reduction="none") * w).mean()
    assert weighted_cross_entropy(logit1, t1, w).item() == pytest.approx(ref.item())


def test_integer_weights_equal_duplicating_samples():
    """Weight 2 in the loss is the same objective (and gradient) as the sample present twice."""
    torch.manual_seed(1)
    X, t = torch.randn(5, 4), torch.tensor([0, 1, 1, 0, 1])
    w = torch.tensor([1.0, 2.0, 1.0, 3.0, 1.0])
    lin = torch.nn.Linear(4, 1)
    g1 = torch.autograd.grad(weighted_cross_entropy(lin(X), t, w) * 5 / w.sum(), lin.weight)[0]
    rep = torch.repeat_interleave(torch.arange(5), w.long())
    g2 = torch.autograd.grad(weighted_cross_entropy(lin(X[rep]), t[rep], torch.ones(len(rep))), lin.weight)[0]
    np.testing.assert_allclose(g1.numpy(), g2.numpy(), rtol=1e-5, atol=1e-7)


def test_weighted_data_loss_mode_carries_weights_and_visits_each_item_once():
    ds = TensorDataset(torch.arange(10).float(), torch.arange(10) % 2)
    w = np.linspace(0.5, 2.0, 10)
    wds, sampler = weighted_data(ds, w, mode="loss", seed=3)
    x, y, wt = next(iter(DataLoader(wds, batch_size=10, sampler=sampler)))
    assert sorted(x.long().tolist()) == list(range(10))
    np.testing.assert_allclose(wt.numpy(), w[x.long().numpy()], rtol=1e-6)
    again = next(iter(DataLoader(weighted_data(ds, w, seed=3)[0], batch_size=10, sampler=weighted_data(ds, w, seed=3)[1])))
    assert torch.equal(again[0], x)


def test_weighted_data_sampler_mode_draws_in_proportion():
    ds = TensorDataset(torch.arange(3).float())
    wds, sampler = weighted_data(ds, [1.0, 3.0, 0.0], mode="sampler", seed=0, num_samples=20000)
    assert len(list(sampler)) == 20000
    draws = np.bincount(list(sampler), minlength=3)
    assert draws[2] == 0
    assert draws[1] / draws[0] == pytest.approx(3.0, rel=0.06)
    x, wt = wds[1]
    assert wt.item() == 1.0  # the sampler does the weighting; the loss stays plain
    dict_ds = weighted_data([{"x": 1}, {"x": 2}], [1, 1])[0]
    assert dict_ds[0]["weight"].item() == 1.0


def test_resampled_dataset_draws_once_in_proportion():
    ds = TensorDataset(torch.arange(3).float())
    rs = resampled_dataset(ds, [1.0, 3.0, 0.0], num_samples=20000, seed=0)
    assert len(rs) == 20000
    draws = np.bincount([int(rs[i][0]) for i in range(len(rs))], minlength=3)
    assert draws[2] == 0 and draws[1] / draws[0] == pytest.approx(3.0, rel=0.06)
    assert rs[0][1].item() == 1.0
    same = resampled_dataset(ds, [1.0, 3.0, 0.0], num_samples=50, seed=0)
    assert [int(same[i][0]) for i in range(50)] == [int(rs[i][0]) for i in range(50)]
    with pytest.raises(SynthfaceError, match="not all 0"):
        resampled_dataset(ds, [0.0, 0.0, 0.0])


@pytest.mark.parametrize("weights, message", [([1.0, 2.0], "2 weights for a dataset of 3"),
                                              ([1.0, -1.0, 1.0], "non-negative"),
                                              ([0.0, 0.0, 0.0], "not all 0")])
def test_weighted_data_bad_weights(weights, message):
    with pytest.raises(SynthfaceError, match=message):
        weighted_data(TensorDataset(torch.zeros(3)), weights)
    with pytest.raises(SynthfaceError, match="weighting mode 'both'"):
        weighted_data(TensorDataset(torch.zeros(3)), [1, 1, 1], mode="both")


def pool(seed=0):
    """200 identities x 20 images, half of each identity's images positive, except 4 people (ids
    10, 20, 30, 40) with 60 positive images each."""
    rng = np.random.default_rng(seed)
    ident = np.r_[np.repeat(np.arange(200), 20), np.repeat([10, 20, 30, 40], 50)]
    y = np.r_[np.tile(np.r_[np.ones(10), np.zeros(10)], 200), np.ones(200)].astype(int)
    perm = rng.permutation(len(y))
    return ident[perm], y[perm]


def test_bias_injection_keeps_size_and_sets_the_dominant_share():
    ident, y = pool()
    runs = {rho: bias_injected_indices(ident, y, rho, n_train=400, n_dominant=4, seed=0)
            for rho in (0.0, 0.25, 0.5, 0.75, 0.9)}
    dom = runs[0.0].dominant
    assert sorted(dom) == [10, 20, 30, 40]  # the people with the most positive images
    for rho, split in runs.items():
        idx = split.indices
        np.testing.assert_array_equal(split.dominant, dom)  # the same people at every rho
        assert len(idx) == 400 and len(np.unique(idx)) == 400
        yy, ii = y[idx], ident[idx]
        assert (yy == 1).sum() == 200
        from_dom = np.isin(ii, dom)
        assert from_dom[yy == 1].sum() == round(rho * 200)
        assert not from_dom[yy == 0].any()  # dominant people are never negatives
        # each dominant person gives an equal share
        per = np.bincount(np.searchsorted(np.sort(dom), ii[from_dom]), minlength=4)
        assert per.max() - per.min() <= 1
        # everyone else is spread: 196 other identities for <= 200 positives -> at most 2 each
        others = np.bincount(ii[(yy == 1) & ~from_dom])
        assert others.max() <= 2
    # reproducible
    np.testing.assert_array_equal(bias_injected_indices(ident, y, 0.5, 400, n_dominant=4, seed=0).indices,
                                  runs[0.5].indices)


def test_bias_injection_errors():
    ident, y = pool()
    with pytest.raises(SynthfaceError, match="rho=1.5"):
        bias_injected_indices(ident, y, 1.5, 100)
    with pytest.raises(SynthfaceError, match="identity [1-4]0 has 60 positive images but rho=0.9 needs 113"):
        bias_injected_indices(ident, y, 0.9, 500, n_dominant=2)
    with pytest.raises(SynthfaceError, match="usable negative images but the training set needs"):
        bias_injected_indices(ident, y, 0.0, 5000, positive_fraction=0.1)
    with pytest.raises(SynthfaceError, match="no image in the pool has label 7"):
        bias_injected_indices(ident, y, 0.5, 100, positive=7)


def toy_world(n_id, per_id, seed, extra=0):
    """Image features for an attribute model (identity look, a glasses trait, a noisy smile cue) and a
    smile-invariant recogniser embedding of the same people. People 0-4 wear glasses and, with
    `extra`, have that many more images (the pool the over-represented people are drawn from)."""
    rng = np.random.default_rng(seed)
    C = rng.standard_normal((n_id, 32))
    glasses = rng.random(n_id) < 0.3
    glasses[:5] = True
    ident = np.r_[np.repeat(np.arange(n_id), per_id), np.repeat(np.arange(5), extra)].astype(int)
    smile = (rng.random(len(ident)) < rng.uniform(0.2, 0.8, n_id)[ident]).astype(int)
    feat = np.c_[C[ident] + 0.3 * rng.standard_normal((len(ident), 32)),
                 2.0 * glasses[ident] + 0.3 * rng.standard_normal(len(ident)),
                 smile + rng.standard_normal(len(ident))]
    emb = np.c_[C[ident], glasses[ident]] + 0.25 * rng.standard_normal((len(ident), 33))
    return feat, emb / np.linalg.norm(emb, axis=1, keepdims=True), smile, ident


def test_cid_reduces_the_identity_shortcut_in_a_toy_world():
    """End to end through bias injection, weights and identity-robustness: when 90 % of the
    smiling training images come from 5 glasses-wearing people, ERM learns glasses -> smile and
    fails on test people with glasses; CID (identity proxy only) and the oracle recover much of it."""
    from sklearn.linear_model import LogisticRegression

    from synthface.evaluation.identity_robustness import identity_robustness
    feat, emb, smile, ident = toy_world(1500, 30, seed=0, extra=1500)
    t_feat, _, t_smile, t_ident = toy_world(300, 20, seed=1)
    idx = bias_injected_indices(ident, smile, 0.9, n_train=3000, dominant=np.arange(5), seed=0).indices
    worst = {}
    for scheme in ("erm", "cid", "oracle"):
        w = training_weights(scheme, smile[idx], embeddings=emb[idx], identity=ident[idx],
                             cid=CIDWeights(bandwidth=0.3))
        clf = LogisticRegression(max_iter=2000).fit(feat[idx], smile[idx], sample_weight=w)
        worst[scheme] = identity_robustness(t_smile, clf.predict(t_feat), t_ident)["worst_10pct_identity_accuracy"]
    assert worst["cid"] > worst["erm"] + 0.05, worst
    assert worst["oracle"] > worst["erm"] + 0.1, worst
