"""DemographicLatentModel on synthetic latents with known cells: projection, densities, lift,
sampling, save/load and errors."""

import warnings

import numpy as np
import pytest

from synthface.errors import SynthfaceError
from synthface.latent import DemographicLatentModel, parse_cell, parse_cells

SCHEMA = {"group": ["a", "b", "c"], "gender": ["f", "m"]}


def one_hot_probs(labels, k, p=0.97):
    P = np.full((len(labels), k), (1 - p) / (k - 1))
    P[np.arange(len(labels)), labels] = p
    return P


@pytest.fixture(scope="module")
def world():
    """Anisotropic Gaussian W whose mean depends on group and gender, biased cell sizes."""
    rng = np.random.default_rng(0)
    d, n = 48, 12000
    g = rng.choice(3, n, p=[0.6, 0.3, 0.1])
    s = rng.choice(2, n, p=[0.3, 0.7])
    mix = rng.standard_normal((d, d)) * 0.3 + np.eye(d)
    dirs = rng.standard_normal((5, d))
    W = rng.standard_normal((n, d)) @ mix + 1.2 * np.eye(3)[g] @ dirs[:3] + 1.2 * np.eye(2)[s] @ dirs[3:]
    probs = {"group": one_hot_probs(g, 3), "gender": one_hot_probs(s, 2)}
    # a tenth of the bank is unsure about the group: those must be left out of the fit
    unsure = rng.random(n) < 0.1
    probs["group"][unsure] = 1 / 3
    return W, probs, g, s, unsure, mix, dirs


def truth_cell(W, dirs, mix):
    """Bayes classifier of the generating model: the nearest cell mean in the Mahalanobis metric."""
    cov = mix.T @ mix
    P = np.linalg.inv(cov)
    means = {(gi, si): 1.2 * dirs[gi] + 1.2 * dirs[3 + si] for gi in range(3) for si in range(2)}
    keys = list(means)
    d = np.stack([np.einsum("nd,de,ne->n", W - means[k], P, W - means[k]) for k in keys], 1)
    return [keys[i] for i in d.argmin(1)]


@pytest.mark.parametrize("projection", ["lda", "svm", "pca-lda"])
@pytest.mark.parametrize("density", ["gaussian", "gmm"])
def test_sampled_latents_land_in_the_requested_cell(world, projection, density):
    W, probs, g, s, unsure, mix, dirs = world
    m = DemographicLatentModel(projection=projection, density=density, pca_dims=32).fit(W, probs, SCHEMA)
    assert m.report_["confident_samples"] == int((~unsure).sum())
    assert m.report_["holdout"]["accuracy"] > 0.9
    rng = np.random.default_rng(1)
    prior = W[rng.choice(len(W), 600)]
    # the rarest cell of the population (group c, gender f: 3%)
    Wn, which = m.sample({"group": "c", "gender": "f"}, 600, prior, seed=3)
    hit = np.mean([c == (2, 0) for c in truth_cell(Wn, dirs, mix)])
    # The lift is exact only when the projection holds all of the cell information: LDA's does.
    # One-vs-rest SVM normals and PCA-truncated LDA miss part of it, which the prior sample then
    # carries into the result (0.69 and 0.59 measured here), so they are options, not the default.
    assert hit > (0.95 if projection == "lda" else 0.5)
    # random prior draws are in that cell far less often
    assert np.mean([c == (2, 0) for c in truth_cell(prior, dirs, mix)]) < 0.1


def test_lift_sets_the_projection_exactly_and_keeps_the_rest_of_the_prior(world):
    W, probs, *_ = world
    m = DemographicLatentModel().fit(W, probs, SCHEMA)
    rng = np.random.default_rng(0)
    W0 = W[rng.choice(len(W), 2000)]
    S, _ = m.sample_projection({"group": "b"}, 2000, rng)
    W1 = m.lift(S, W0)
    assert np.allclose(m.project(W1), S, atol=1e-8)
    # The part of w0 the lift leaves alone is w0 - K s0; its spread is untouched (diversity of the prior).
    resid0 = W0 - m.project(W0) @ m.K_.T
    resid1 = W1 - m.project(W1) @ m.K_.T
    assert np.allclose(resid0, resid1, atol=1e-8)
    assert np.isclose(np.linalg.norm(np.cov(resid1, rowvar=False)), np.linalg.norm(np.cov(resid0, rowvar=False)))


def test_partial_cells_are_balanced_over_their_full_cells(world):
    W, probs, *_ = world
    m = DemographicLatentModel().fit(W, probs, SCHEMA)
    _, which = m.sample_projection({"gender": "f"}, 3000, np.random.default_rng(0))
    names = [m.cells_[i] for i in which]
    assert {c[1] for c in names} == {"f"}
    counts = np.array([sum(c[0] == grp for c in names) for grp in "abc"])
    assert np.all(np.abs(counts / 3000 - 1 / 3) < 0.04)


def test_truncation_pulls_toward_the_cell_mean(world):
    W, probs, *_ = world
    m = DemographicLatentModel().fit(W, probs, SCHEMA)
    c = m.cells_.index(("a", "m"))
    S1, _ = m.sample_projection({"group": "a", "gender": "m"}, 4000, np.random.default_rng(0), truncation=1.0)
    S5, _ = m.sample_projection({"group": "a", "gender": "m"}, 4000, np.random.default_rng(0), truncation=0.5)
    mu = m.means_[c, 0]
    assert np.allclose(S5 - mu, 0.5 * (S1 - mu))
    assert np.allclose(np.cov(S1, rowvar=False), m.covs_[c, 0], rtol=0.15, atol=0.05)


def test_save_load_round_trip(world, tmp_path):
    W, probs, *_ = world
    m = DemographicLatentModel(density="gmm").fit(W, probs, SCHEMA, source={"generator_hash": "abc",
                                                                           "truncation_psi": 0.7})
    p = m.save(tmp_path / "model.synthface")
    m2 = DemographicLatentModel.load(p)
    prior = W[:50]
    a, wa = m.sample({"group": "a"}, 50, prior, seed=5)
    b, wb = m2.sample({"group": "a"}, 50, prior, seed=5)
    assert np.array_equal(a, b) and np.array_equal(wa, wb)
    assert m2.report_ == m.report_ and m2.get_params() == m.get_params()
    assert m2.generator_hash_ == "abc" and m2.truncation_psi_ == 0.7 and m2.cells_ == m.cells_


def test_small_cells_warn_at_fit_and_refuse_to_sample(world):
    W, probs, g, s, *_ = world
    keep = ~((g == 2) & (s == 0)) | (np.arange(len(g)) % 40 == 0)  # leave a handful of c/f
    sub = {k: v[keep] for k, v in probs.items()}
    with pytest.warns(UserWarning, match="group=c,gender=f"):
        m = DemographicLatentModel(min_count=30).fit(W[keep], sub, SCHEMA)
    assert m.report_["too_small"] == ["group=c,gender=f"]
    with pytest.raises(SynthfaceError, match="cannot be sampled"):
        m.sample({"group": "c", "gender": "f"}, 5, W[:5])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        m.sample({"group": "c", "gender": "m"}, 5, W[:5])


def test_clear_errors(world, tmp_path):
    W, probs, *_ = world
    with pytest.raises(SynthfaceError, match="unknown attribute 'race'"):
        DemographicLatentModel(attributes=["race"]).fit(W, probs, SCHEMA)
    bad = W.copy()
    bad[3, 2] = np.nan
    with pytest.raises(SynthfaceError, match="NaN"):
        DemographicLatentModel().fit(bad, probs, SCHEMA)
    with pytest.raises(SynthfaceError, match="only 0 cell"):
        DemographicLatentModel(min_count=10**6).fit(W, probs, SCHEMA)
    with pytest.raises(SynthfaceError, match="projection must be one of"):
        DemographicLatentModel(projection="umap").fit(W, probs, SCHEMA)
    m = DemographicLatentModel().fit(W, probs, SCHEMA)
    with pytest.raises(SynthfaceError, match="unknown class 'x' for 'group'"):
        m.sample({"group": "x"}, 3, W[:3])
    with pytest.raises(SynthfaceError, match="prior_w must have shape"):
        m.sample({"group": "a"}, 3, W[:4])
    (tmp_path / "junk.synthface").write_bytes(b"not a model")
    with pytest.raises(SynthfaceError, match="not a synthface latent model"):
        DemographicLatentModel.load(tmp_path / "junk.synthface")
    with pytest.raises(SynthfaceError, match="not fitted"):
        DemographicLatentModel().project(W)


def test_cell_parsing():
    attrs = ["group", "gender"]
    assert list(parse_cell("gender=f, group=b", SCHEMA, attrs).items()) == [("group", "b"), ("gender", "f")]
    assert len(parse_cells("all", SCHEMA, attrs)) == 6
    assert parse_cells("group=a;gender=m", SCHEMA, attrs) == [{"group": "a"}, {"gender": "m"}]
    # all:ATTRS: every combination of those attributes (model order), the rest left free
    assert parse_cells("all:gender", SCHEMA, attrs) == [{"gender": c} for c in SCHEMA["gender"]]
    assert parse_cells("all: gender , group", SCHEMA, attrs) == parse_cells("all", SCHEMA, attrs)
    for bad in ("all:", "all:race", "all:group,group"):
        with pytest.raises(SynthfaceError, match="after 'all:'"):
            parse_cells(bad, SCHEMA, attrs)
    for bad, msg in [("group", "attribute=class"), ("race=a", "unknown attribute"), ("group=z", "unknown class"),
                     ("group=a,group=b", "twice"), ("", "empty cell")]:
        with pytest.raises(SynthfaceError, match=msg):
            parse_cell(bad, SCHEMA, attrs)
