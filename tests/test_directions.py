"""Labelled variation directions: readouts fitted from a regressor's values on generated faces move
an identity toward a target nuisance value without touching the demographic projection; the
staged fallback shrinks the step deterministically."""

import numpy as np
import pytest

from synthface.errors import SynthfaceError
from synthface.generator import load_generator
from synthface.generator.synthesis import prior_latents, synthesize
from synthface.identity.directions import NuisanceDirections, fit_directions
from synthface.identity.identities import STAGES, variation_stage
from synthface.utils import keyed_rng
from synthface.world.assets import generator_path


class Brightness:
    """A stand-in regressor with one output whose truth is known from the pixels: mean brightness,
    and one that is pure noise (no readout in W can explain it)."""
    names = ["brightness", "noise"]

    def predict_matrix(self, images, aligned=False):
        rng = np.random.default_rng(len(images))
        return np.stack([images.reshape(len(images), -1).mean(1) / 255.0, rng.standard_normal(len(images))], 1)


@pytest.fixture(scope="module")
def fitted(demo_latent_model):
    model = demo_latent_model[0]
    G = load_generator(generator_path())
    targets = np.array([[0.2, 0.0], [0.8, 0.0]])
    d = fit_directions(model, G, Brightness(), n=600, seed=0, log=lambda m: None)
    d.targets = targets  # aim at two known values
    return model, G, d.prepare(model.A_)


def test_readout_explains_brightness_and_not_noise(fitted):
    _, _, d = fitted
    assert d.r2[0] > 0.5
    assert d.r2[1] < 0.05 and not d.used[1]   # the noise column is not varied


def test_offsets_reach_the_target_and_keep_the_projection(fitted):
    model, G, d = fitted
    W = prior_latents(G, list(range(500, 516)), model.truncation_psi_).astype(np.float64)
    before = Brightness().predict_matrix(synthesize(G, W.astype(np.float32), "const"))[:, 0]
    moved = {}
    for t in (0, 1):
        rng = keyed_rng(0, 1)
        d.targets = np.array([[0.2, 0.0], [0.8, 0.0]])[[t]]
        delta = np.stack([d.offsets(w, rng, 1.0) for w in W]).astype(np.float64)
        # the demographic projection is unchanged (A^T delta = 0)
        assert np.abs(model.project(W + delta) - model.project(W)).max() < 1e-3
        moved[t] = Brightness().predict_matrix(synthesize(G, (W + delta).astype(np.float32), "const"))[:, 0]
    # darker toward 0.2, brighter toward 0.8, for (nearly) every face
    assert (moved[0] < before).mean() >= 0.9 and (moved[1] > before).mean() >= 0.9
    assert np.abs(moved[1] - 0.8).mean() < np.abs(before - 0.8).mean()


def test_round_trip_of_the_arrays(fitted):
    _, _, d = fitted
    e = NuisanceDirections.from_arrays(d.arrays())
    assert e.names == d.names and np.array_equal(e.readout, d.readout) and np.array_equal(e.targets, d.targets)


def test_stages_shrink_on_a_fixed_schedule():
    # 20 attempts per image, 2 images: 40 attempts in 4 stages of 10
    assert [variation_stage(a, 2, 20) for a in (0, 9, 10, 19, 20, 30, 39, 100)] == [0, 0, 1, 1, 2, 3, 3, STAGES - 1]
    assert variation_stage(0, 1, 1) == 0


def test_too_few_faces_is_refused(demo_latent_model):
    with pytest.raises(SynthfaceError, match="at least 50"):
        fit_directions(demo_latent_model[0], load_generator(generator_path()), Brightness(), n=10)
