"""Precision / recall / density / coverage (Kynkaanniemi 2019, Naeem 2020) on cases worked by hand
and on distributions whose relation is known."""

import numpy as np
import pytest

from synthface.errors import SynthfaceError
from synthface.evaluation.coverage import intra_identity_spread, knn_radii, prdc


def _unit(a):
    a = np.asarray(a, float)
    return a / np.linalg.norm(a, axis=1, keepdims=True)


def test_prdc_by_hand_on_the_circle():
    # real: 8 points evenly on a quarter circle; k=1 balls reach the neighbouring point
    ang = np.linspace(0, np.pi / 2, 8)
    real = np.stack([np.cos(ang), np.sin(ang)], 1)
    step = ang[1] - ang[0]
    # synthetic: near the first 4 real points only (a quarter of a step away), plus two copies
    fake_ang = np.array([ang[0], ang[1], ang[2], ang[3]]) + step / 4
    fake = np.stack([np.cos(fake_ang), np.sin(fake_ang)], 1)
    r = prdc(real, fake, k=1)
    assert r["precision"] == 1.0          # every synthetic point lies inside a real ball
    assert r["coverage"] == pytest.approx(5 / 8)  # balls of real 0..3 hold one, and real 4's ball holds fake 3
    # synthetic balls (k=1 within 4 points: one step) reach real points 0..4 only
    assert r["recall"] == pytest.approx(5 / 8)
    # each fake lies in its two neighbouring real balls (k=1 radius = one step)
    assert r["density"] == pytest.approx(2.0)


def test_same_distribution_covers_a_mode_dropping_one_does_not():
    rng = np.random.default_rng(0)
    centres = _unit(rng.standard_normal((8, 16)))
    def sample(modes, n):
        c = centres[rng.choice(modes, n)]
        return c + 0.15 * rng.standard_normal((n, 16))
    real, same, dropped = sample(range(8), 400), sample(range(8), 400), sample(range(4), 400)
    full, half = prdc(real, same), prdc(real, dropped)
    assert full["coverage"] > 0.9 and full["recall"] > 0.9
    assert half["coverage"] < 0.6 and half["recall"] < 0.6      # half the modes are missing
    assert half["precision"] > 0.9                               # what it makes is still realistic


def test_knn_radii_excludes_the_point_itself():
    X = np.array([[0.0, 0], [1, 0], [3, 0]])
    assert knn_radii(X, 1).tolist() == [1.0, 1.0, 4.0]


def test_too_few_samples_and_bad_features_are_refused():
    with pytest.raises(SynthfaceError, match="more than k=5"):
        prdc(np.eye(4), np.eye(4))
    with pytest.raises(SynthfaceError, match="finite"):
        prdc(np.full((10, 3), np.nan), np.ones((10, 3)))


def test_intra_identity_spread_is_the_mean_within_identity_std():
    v = np.array([[0.0], [2.0], [10.0], [10.0]])
    assert intra_identity_spread(v, np.array([0, 0, 1, 1]))[0] == pytest.approx(np.std([0, 2], ddof=1) / 2)


def test_renderer_coverage_sets_do_not_depend_on_the_render_chunk(monkeypatch):
    """The renderer reference sets are drawn in chunks (memory); each face comes from its own
    identity's stream, so the chunk size changes nothing."""
    from synthface.world import reference as R

    cell = "group=group2,gender=female"
    monkeypatch.setattr(R, "RENDER_CHUNK", 7)
    a = R.renderer_coverage_sets([cell], 4, 3)[cell]
    monkeypatch.setattr(R, "RENDER_CHUNK", 1000)
    b = R.renderer_coverage_sets([cell], 4, 3)[cell]
    assert a["real"].shape == (12, 112, 112, 3) and a["real"].dtype == np.uint8
    for k in ("real", "real2", "real_identity", "real2_identity"):
        np.testing.assert_array_equal(a[k], b[k])
    assert not np.array_equal(a["real"], a["real2"])  # two disjoint sets of people
