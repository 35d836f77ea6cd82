"""LEACE and INLP on small synthetic embeddings with planted gender and group directions."""

import warnings

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from synthface.errors import SynthfaceError
from synthface.methods.erasure import INLP, LEACE
from test_sensitivenets import embeddings


def train_accuracy(Z, y):
    """A logistic regression trained and scored on the same rows: the strongest linear fit of the data."""
    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=5000, C=100.0))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        clf.fit(Z, y)
    return float((clf.predict(Z) == y).mean())


def majority(y):
    return float(np.unique(y, return_counts=True)[1].max() / len(y))


@pytest.fixture(scope="module")
def data():
    return embeddings(ids_per_cell=12, per_id=6, d=32, seed=0)


def test_leace_puts_a_linear_classifier_at_chance_on_the_training_data(data):
    X, ident, sens = data
    before = {k: train_accuracy(X, v) for k, v in sens.items()}
    Z = LEACE().fit(X, ident, sens).transform(X)
    after = {k: train_accuracy(Z, v) for k, v in sens.items()}
    for k, y in sens.items():
        assert before[k] > majority(y) + 0.35, (k, before[k])
        # The guarantee: no linear predictor beats a constant; a 32-d fit on 432 rows may overfit a few points.
        assert after[k] <= majority(y) + 0.05, (k, after[k], majority(y))


def test_leace_zeroes_the_cross_covariance_and_keeps_orthogonal_information(data):
    X, ident, sens = data
    est = LEACE().fit(X, ident, sens)
    Z = est.transform(X).astype(np.float64)
    Xn = X / np.linalg.norm(X, axis=1, keepdims=True)
    for y in sens.values():
        onehot = (y[:, None] == np.unique(y)[None, :]).astype(float)
        cov = (Z - Z.mean(0)).T @ (onehot - onehot.mean(0)) / len(Z)
        raw = (Xn - Xn.mean(0)).T @ (onehot - onehot.mean(0)) / len(Z)
        assert np.abs(cov).max() < 1e-6 * np.abs(raw).max() + 1e-9
    assert est.rank_ == 3  # gender (2 classes) and group (3 classes): 1 + 2 directions
    # What is not the concept survives: the identity structure inside a cell (each image's nearest other
    # image is of the same person about as often as before).
    d_raw = np.linalg.norm(Xn[:, None] - Xn[None], axis=2)
    d_new = np.linalg.norm(Z[:, None] - Z[None], axis=2)
    nn_raw = ident[np.argsort(d_raw + np.eye(len(Z)) * 9, axis=1)[:, 0]] == ident
    nn_new = ident[np.argsort(d_new + np.eye(len(Z)) * 9, axis=1)[:, 0]] == ident
    assert nn_new.mean() >= nn_raw.mean() - 0.02


def test_leace_preserves_a_direction_uncorrelated_with_the_label():
    rng = np.random.default_rng(0)
    n, d = 600, 8
    y = rng.integers(0, 2, n)
    X = rng.normal(size=(n, d))
    X[:, 0] += 3.0 * (2 * y - 1)             # the concept lives on feature 0
    # Feature 3, made exactly uncorrelated (in this sample) with y and every other feature.
    others = np.column_stack([np.ones(n), y, np.delete(X, 3, axis=1)])
    X[:, 3] -= others @ np.linalg.lstsq(others, X[:, 3], rcond=None)[0]
    est = LEACE(normalize_input=False).fit(X, None, {"a": y})
    Z = est.transform(X)
    # LEACE must leave it as it was: it is orthogonal to the concept.
    assert np.allclose(Z[:, 3], X[:, 3], atol=1e-4)
    assert abs(np.corrcoef(Z[:, 0], y)[0, 1]) < 1e-4
    assert abs(np.corrcoef(X[:, 0], y)[0, 1]) > 0.8


def test_leace_rank_deficient_covariance_keeps_the_guarantee():
    rng = np.random.default_rng(1)
    n = 40                                    # fewer rows than dimensions: singular covariance
    y = np.repeat([0, 1], n // 2)
    X = rng.normal(size=(n, 64)) + 2.0 * np.outer(2 * y - 1, np.eye(64)[0])
    Z = LEACE(normalize_input=False).fit(X, None, {"a": y}).transform(X)
    assert np.isfinite(Z).all()
    assert abs(np.corrcoef(Z[:, 0], y)[0, 1]) < 1e-3
    cov = (Z - Z.mean(0)).T @ (y - y.mean()) / n
    assert np.abs(cov).max() < 1e-6


def test_leace_and_inlp_save_load_round_trip(tmp_path, data):
    X, ident, sens = data
    for est in (LEACE().fit(X, ident, sens), INLP(n_iterations=3).fit(X, ident, sens)):
        path = est.save(tmp_path / f"{type(est).__name__}.safetensors")
        back = type(est).load(path)
        assert back.get_params() == est.get_params()
        assert np.allclose(back.transform(X), est.transform(X), atol=1e-6)
    with pytest.raises(SynthfaceError, match="not a LEACE"):
        LEACE.load(tmp_path / "INLP.safetensors")


def test_inlp_removes_the_attributes_from_held_out_linear_probes(data):
    X, ident, sens = data
    est = INLP(n_iterations=15).fit(X, ident, sens)
    assert 0 < est.n_removed_ <= 3 * X.shape[1] // 4  # removes directions, not the whole space
    # Stops early: the last round found every attribute at chance on the held-out identities.
    assert len(est.history_) < 15
    assert all(v <= est.tol for v in est.history_[-1]["above_chance"].values())
    X2, ident2, sens2 = embeddings(ids_per_cell=12, per_id=6, d=32, seed=1)  # unseen identities
    Z, Z2 = est.transform(X), est.transform(X2)
    for k in sens:
        clf = LogisticRegression(max_iter=2000).fit(Z, sens[k])
        raw = LogisticRegression(max_iter=2000).fit(X, sens[k])
        assert (raw.predict(X2) == sens2[k]).mean() > 0.85
        # No guarantee (the stopping rule reads a small held-out part): far lower, not necessarily chance.
        assert (clf.predict(Z2) == sens2[k]).mean() < majority(sens2[k]) + 0.2


@pytest.mark.parametrize("make, call, match", [
    (lambda: LEACE(ridge=-1), "fit", "ridge"),
    (lambda: LEACE(), "fit_nan", "NaN"),
    (lambda: LEACE(), "fit_single_class", "single class"),
    (lambda: LEACE(), "transform_unfitted", "not fitted"),
    (lambda: INLP(n_iterations=0), "fit", "n_iterations"),
    (lambda: INLP(held_out=1.5), "fit", "held_out"),
    (lambda: INLP(), "fit_no_sensitive", "non-empty mapping"),
])
def test_bad_inputs_raise_synthface_error(make, call, match, data):
    X, ident, sens = data
    est = make()
    with pytest.raises(SynthfaceError, match=match):
        if call == "fit":
            est.fit(X, ident, sens)
        elif call == "fit_nan":
            Xb = X.copy()
            Xb[3, 0] = np.nan
            est.fit(Xb, ident, sens)
        elif call == "fit_single_class":
            est.fit(X, ident, {"gender": np.zeros(len(X))})
        elif call == "transform_unfitted":
            est.transform(X)
        elif call == "fit_no_sensitive":
            est.fit(X, ident, {})


def test_transform_checks_the_dimension(data):
    X, ident, sens = data
    est = LEACE().fit(X, ident, sens)
    with pytest.raises(SynthfaceError, match="32-d"):
        est.transform(X[:, :10])
