"""CID weights (synthface.methods.cid) against a direct O(n^2) computation, the inverse-identity-
frequency limit the spec states, clipping, leave-one-out, and bad inputs."""

import numpy as np
import pytest
from scipy.spatial.distance import cdist

from synthface.errors import SynthfaceError
from synthface.methods.cid import CIDWeights, oracle_identity_weights


def direct_cid(X, y, estimator="kde", k=10, bandwidth=None, gamma=1.0, max_ratio=10.0, leave_one_out=False,
               normalize="per_class"):
    """The formula of fairness-methods.md section 2.3 written out plainly, pair by pair."""
    X, y = np.asarray(X, float), np.asarray(y)
    raw, bands = np.empty(len(y)), {}
    for c in np.unique(y):
        rows = np.flatnonzero(y == c)
        D = cdist(X[rows], X[rows])  # direct differences, no |a|^2 + |b|^2 - 2ab
        kth = np.sort(D + np.diag(np.full(len(rows), np.inf)), axis=1)[:, k - 1]
        if estimator == "knn":
            w = kth ** gamma
        else:
            h = np.median(kth) if bandwidth is None else bandwidth
            bands[c] = h
            K = np.exp(-D ** 2 / (2 * h * h))
            if leave_one_out:
                np.fill_diagonal(K, 0.0)
            p = K.sum(1) / (len(rows) - 1 if leave_one_out else len(rows))
            w = p ** -gamma
        if max_ratio is not None:
            w = np.minimum(w, max_ratio * w.min())
        raw[rows] = w
    if normalize == "global":
        return raw / raw.mean(), bands
    out = np.empty_like(raw)
    for c in np.unique(y):
        out[y == c] = raw[y == c] / raw[y == c].mean()
    return out, bands


def clustered(n_people=60, per_person=(1, 6), dim=16, spread=0.3, seed=0, classes=2):
    """Unit-norm embeddings: people with a few images each around a person centre."""
    rng = np.random.default_rng(seed)
    X, y, ident = [], [], []
    for p in range(n_people):
        centre = rng.standard_normal(dim)
        m = int(rng.integers(per_person[0], per_person[1] + 1))
        X.append(centre + spread * rng.standard_normal((m, dim)))
        y += [p % classes] * m
        ident += [p] * m
    X = np.concatenate(X)
    return X / np.linalg.norm(X, axis=1, keepdims=True), np.array(y), np.array(ident)


def duplicated_identity(m=8, singletons=200, dim=512, noise=1e-3, seed=1):
    """Class 1: one person with m near-duplicate images, every other person one image; class 0: singletons."""
    rng = np.random.default_rng(seed)
    person = rng.standard_normal(dim)
    dup = person + noise * rng.standard_normal((m, dim))
    X = np.concatenate([dup, rng.standard_normal((2 * singletons, dim))])
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    y = np.array([1] * m + [1] * singletons + [0] * singletons)
    ident = np.array([0] * m + list(range(1, 2 * singletons + 1)))
    return X, y, ident


@pytest.mark.parametrize("config", [
    {},
    {"bandwidth": 0.5},
    {"gamma": 0.5, "max_ratio": None},
    {"max_ratio": 1.5},
    {"leave_one_out": True},
    {"leave_one_out": True, "bandwidth": 0.3, "max_ratio": 3.0},
    {"normalize": "global", "bandwidth": 0.6},
    {"estimator": "knn"},
    {"estimator": "knn", "k": 3, "gamma": 2.0, "max_ratio": None},
])
def test_matches_direct_computation(config):
    X, y, _ = clustered()
    ours = CIDWeights(**config).fit(X, y)
    ref, bands = direct_cid(X, y, **config)
    np.testing.assert_allclose(ours.weights_, ref, rtol=1e-10, atol=0)
    for c, h in bands.items():
        assert ours.bandwidth_[list(ours.classes_).index(c)] == pytest.approx(h, rel=1e-12)
    for c in ours.classes_:
        if config.get("normalize", "per_class") == "per_class":
            assert ours.weights_[y == c].mean() == pytest.approx(1.0, abs=1e-12)
    assert ours.weights_.mean() == pytest.approx(1.0, abs=1e-12)


def test_near_duplicates_get_inverse_identity_frequency():
    """The spec's sanity property: small bandwidth, one person with m near-duplicates in a class,
    everyone else one image: each duplicate gets 1/m (+-10 %) of a singleton's weight."""
    m = 8
    X, y, ident = duplicated_identity(m=m)
    w = CIDWeights(bandwidth=0.05, max_ratio=None).fit_transform(X, y)
    singleton = np.median(w[m:200 + m])
    ratio = w[:m] / singleton
    assert np.all(np.abs(ratio - 1 / m) <= 0.1 / m), ratio
    # the identity as a whole gets about one singleton's weight, as the oracle gives it
    oracle = oracle_identity_weights(ident, y, normalize="per_class")
    np.testing.assert_allclose(w, oracle, rtol=0.02)
    # with the default bandwidth (median 10th-neighbour distance) the effect is much weaker
    w_default = CIDWeights(max_ratio=None).fit_transform(X, y)
    assert w_default[:m].mean() / np.median(w_default[m:200 + m]) > 0.5


def test_clip_caps_the_ratio_to_the_smallest_weight_then_renormalises():
    m = 8
    X, y, _ = duplicated_identity(m=m)
    model = CIDWeights(bandwidth=0.05, max_ratio=4.0).fit(X, y)
    w = model.weights_
    cls1 = y == 1
    assert w[cls1].max() / w[cls1].min() == pytest.approx(4.0, rel=1e-12)
    assert w[cls1].mean() == pytest.approx(1.0, abs=1e-12)
    # singletons (ratio 8 before the clip) are the clipped ones; duplicates keep the class minimum
    assert model.clipped_[m:200 + m].all() and not model.clipped_[:m].any()
    np.testing.assert_allclose(w[:m], w[cls1].min(), rtol=1e-3)
    # class 0 holds singletons only: all equal, nothing clipped, weights 1
    np.testing.assert_allclose(w[~cls1], 1.0, rtol=1e-9)


def test_leave_one_out_isolated_samples_are_bounded_by_the_clip():
    m = 8
    X, y, _ = duplicated_identity(m=m)
    model = CIDWeights(bandwidth=0.05, leave_one_out=True, max_ratio=10.0).fit(X, y)
    w = model.weights_[y == 1]
    # isolated samples have density ~exp(-1/(2*0.05^2)) (underflows: recomputed in the log domain)
    assert np.isfinite(model.log_density_).all()
    assert model.log_density_[m:200 + m].max() < -150
    ref = direct_cid(X, y, bandwidth=0.05, leave_one_out=True, max_ratio=10.0)[0]
    np.testing.assert_allclose(model.weights_[:m], ref[:m], rtol=1e-9)
    assert w.max() / w.min() == pytest.approx(10.0, rel=1e-12)
    assert model.clipped_[m:200 + m].all()


def test_leave_one_out_log_density_matches_logsumexp_when_sums_underflow():
    from scipy.special import logsumexp
    X, y, _ = clustered(n_people=30, spread=0.05, seed=3)
    h = 0.01  # most kernel sums underflow to 0 in float64
    model = CIDWeights(bandwidth=h, leave_one_out=True, max_ratio=None).fit(X, y)
    for c in (0, 1):
        rows = np.flatnonzero(y == c)
        D2 = cdist(X[rows], X[rows]) ** 2
        np.fill_diagonal(D2, np.inf)
        ref = logsumexp(-D2 / (2 * h * h), axis=1) - np.log(len(rows) - 1)
        np.testing.assert_allclose(model.log_density_[rows], ref, rtol=1e-9)
    small_blocks = CIDWeights(bandwidth=h, leave_one_out=True, max_ratio=None, block_size=16).fit(X, y)
    np.testing.assert_allclose(small_blocks.log_density_, model.log_density_, rtol=1e-12)


def test_blocked_equals_direct_on_a_few_thousand_points():
    X, y, _ = clustered(n_people=900, per_person=(1, 6), dim=32, spread=0.4, seed=5)
    assert len(y) > 2500
    ref, _ = direct_cid(X, y)
    blocked = CIDWeights(block_size=600, bandwidth_queries=None).fit(X, y)
    np.testing.assert_allclose(blocked.weights_, ref, rtol=1e-9)
    auto = CIDWeights(bandwidth_queries=None).fit(X, y)  # one block per class
    np.testing.assert_allclose(auto.weights_, blocked.weights_, rtol=1e-12)
    f32 = CIDWeights(block_size=600, dtype="float32", bandwidth_queries=None).fit(X, y)
    np.testing.assert_allclose(f32.weights_, ref, rtol=1e-4)
    knn = CIDWeights(estimator="knn", block_size=500).fit(X, y)
    np.testing.assert_allclose(knn.weights_, direct_cid(X, y, estimator="knn")[0], rtol=1e-9)


def test_bandwidth_from_a_subset_of_queries_is_seeded_and_close():
    X, y, _ = clustered(n_people=900, dim=32, spread=0.4, seed=5)
    full = CIDWeights(bandwidth_queries=None).fit(X, y).bandwidth_
    a = CIDWeights(bandwidth_queries=400, random_state=1).fit(X, y)
    b = CIDWeights(bandwidth_queries=400, random_state=1).fit(X, y)
    np.testing.assert_array_equal(a.weights_, b.weights_)
    np.testing.assert_allclose(a.bandwidth_, full, rtol=0.03)
    # the weights are exact for the bandwidth it recorded
    for c in (0, 1):
        rows = y == c
        ref, _ = direct_cid(X[rows], y[rows], bandwidth=a.bandwidth_[c])
        np.testing.assert_allclose(a.weights_[rows], ref, rtol=1e-9)


def test_per_class_bandwidth_mapping_and_string_labels():
    X, y, _ = clustered()
    labels = np.where(y == 1, "smile", "neutral")
    model = CIDWeights(bandwidth={"smile": 0.4, "neutral": 0.7}).fit(X, labels)
    assert list(model.classes_) == ["neutral", "smile"]
    np.testing.assert_allclose(model.bandwidth_, [0.7, 0.4])
    ref = np.empty(len(y))
    for c, h in ((0, 0.7), (1, 0.4)):
        ref[y == c] = direct_cid(X[y == c], y[y == c], bandwidth=h)[0]
    np.testing.assert_allclose(model.weights_, ref, rtol=1e-10)


def test_gamma_zero_gives_uniform_weights_and_fit_transform_returns_weights():
    X, y, _ = clustered()
    model = CIDWeights(gamma=0.0)
    w = model.fit_transform(X, y)
    assert w is model.weights_
    np.testing.assert_array_equal(w, 1.0)


def test_params_and_save_load_round_trip(tmp_path):
    X, y, _ = clustered()
    model = CIDWeights(k=5, gamma=0.7, bandwidth={0: 0.5, 1: 0.6}, max_ratio=5.0)
    assert model.get_params()["k"] == 5
    assert model.set_params(k=4) is model and model.k == 4
    with pytest.raises(SynthfaceError, match="no parameter 'kk'"):
        model.set_params(kk=3)
    assert "k=4" in repr(model)
    model.fit(X, y)
    path = model.save(tmp_path / "cid.safetensors")
    back = CIDWeights.load(path)
    assert back.get_params() == model.get_params()
    for name in ("weights_", "log_density_", "bandwidth_", "clipped_", "class_counts_", "codes_", "classes_"):
        np.testing.assert_array_equal(getattr(back, name), getattr(model, name))
    assert back.summary() == model.summary()
    assert set(model.summary()) == {"0", "1"}


def test_load_rejects_other_files_and_versions(tmp_path):
    import json

    from safetensors.numpy import save_file
    with pytest.raises(SynthfaceError, match="does not exist"):
        CIDWeights.load(tmp_path / "missing.safetensors")
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not a safetensors file at all")
    with pytest.raises(SynthfaceError, match="not a synthface CID weights file"):
        CIDWeights.load(junk)
    future = tmp_path / "future.safetensors"
    save_file({"weights": np.ones(2)}, str(future),
              metadata={"synthface": json.dumps({"format": "synthface-cid-weights", "version": 99})})
    with pytest.raises(SynthfaceError, match="version 99 is not supported"):
        CIDWeights.load(future)


@pytest.mark.parametrize("X, y, config, message", [
    (np.zeros((10, 4)), np.zeros(9), {}, "10 rows but y has 9 labels"),
    (np.array([[0.0, np.nan]] + [[1.0, 2.0]] * 20), np.zeros(21), {}, "NaN or inf .first: row 0"),
    (np.random.default_rng(0).standard_normal((21, 4)), np.array([0] * 20 + [1]), {},
     "class 1 has 1 sample.*at least k \\+ 1 = 11"),
    (np.random.default_rng(0).standard_normal((25, 4)), np.array([0] * 20 + [1] * 5), {"estimator": "knn"},
     "class 1 has 5 sample"),
    (np.random.default_rng(0).standard_normal((21, 4)), np.array([0] * 20 + [1]),
     {"bandwidth": 1.0, "leave_one_out": True}, "class 1 has a single sample; leave_one_out"),
    (np.ones((30, 8)), np.zeros(30), {}, "median distance to the 10-th neighbour is 0"),
    (np.ones((30, 8)), np.zeros(30), {"estimator": "knn"}, "exact duplicates"),
    (np.zeros((0, 4)), np.zeros(0), {}, "non-empty 2-D"),
    (np.zeros(12), np.zeros(12), {}, "non-empty 2-D"),
    (np.zeros((12, 3)), np.zeros((12, 2)), {}, "labels y must be 1-D"),
    (np.zeros((12, 3)), np.zeros(12), {"estimator": "gauss"}, "estimator='gauss'"),
    (np.zeros((12, 3)), np.zeros(12), {"k": 0}, "k=0"),
    (np.zeros((12, 3)), np.zeros(12), {"bandwidth": -1.0}, "bandwidth=-1.0"),
    (np.zeros((12, 3)), np.zeros(12), {"bandwidth": {1: 0.5}}, "no entry for class 0"),
    (np.zeros((12, 3)), np.zeros(12), {"gamma": -1}, "gamma=-1"),
    (np.zeros((12, 3)), np.zeros(12), {"max_ratio": 0.5}, "max_ratio=0.5"),
    (np.zeros((12, 3)), np.zeros(12), {"normalize": "none"}, "normalize='none'"),
    (np.zeros((12, 3)), np.zeros(12), {"dtype": "float16"}, "dtype='float16'"),
])
def test_bad_inputs_give_one_clear_error(X, y, config, message):
    with pytest.raises(SynthfaceError, match=message):
        CIDWeights(**config).fit(X, y)


def test_unfitted_model_says_so():
    with pytest.raises(SynthfaceError, match="not fitted yet"):
        CIDWeights().summary()


def test_oracle_identity_weights():
    identity = np.array(["a", "a", "a", "b", "a", "c", "c"])
    y = np.array([1, 1, 1, 1, 0, 0, 0])
    np.testing.assert_allclose(oracle_identity_weights(identity, y), [1 / 3, 1 / 3, 1 / 3, 1, 1, 1 / 2, 1 / 2])
    w = oracle_identity_weights(identity, y, normalize="per_class")
    assert w[y == 1].mean() == pytest.approx(1.0) and w[y == 0].mean() == pytest.approx(1.0)
    # each (identity, class) cell has the same total weight within its class
    assert w[:3].sum() == pytest.approx(w[3])
    with pytest.raises(SynthfaceError, match="identity has 3 entries but y has 2"):
        oracle_identity_weights([1, 2, 3], [0, 1])
    with pytest.raises(SynthfaceError, match="normalize='mean'"):
        oracle_identity_weights([1, 2], [0, 1], normalize="mean")


def test_unusable_device_is_reported():
    import torch
    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    X, y, _ = clustered()
    with pytest.raises(SynthfaceError, match="device='cuda' is not usable here"):
        CIDWeights(device="cuda").fit(X, y)
