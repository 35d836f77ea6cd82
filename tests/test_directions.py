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


def test_offsets_move_toward_the_target_and_keep_the_projection(fitted):
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
    assert np.abs(moved[0] - 0.2).mean() < np.abs(before - 0.2).mean()


def test_round_trip_of_the_arrays(fitted):
    _, _, d = fitted
    e = NuisanceDirections.from_arrays(d.arrays())
    assert e.names == d.names and np.array_equal(e.readout, d.readout) and np.array_equal(e.targets, d.targets)


def test_stages_shrink_on_a_fixed_schedule():
    # 2 images wanted: stages of 10 attempts, the last stage takes every attempt after 30
    assert [variation_stage(a, 2) for a in (0, 9, 10, 19, 20, 30, 39, 1000)] == [0, 0, 1, 1, 2, 3, 3, STAGES - 1]
    assert variation_stage(0, 1) == 0 and variation_stage(4, 1) == 0 and variation_stage(5, 1) == 1


def test_too_few_faces_is_refused(demo_latent_model):
    with pytest.raises(SynthfaceError, match="at least 50"):
        fit_directions(demo_latent_model[0], load_generator(generator_path()), Brightness(), n=10)


def test_variation_settings_that_cannot_work_are_refused():
    from synthface.dataset.writer import DatasetConfig, check_variation_config, variation_mode, variation_strength
    with pytest.raises(SynthfaceError, match="--nuisance-regressor onnx:PATH"):
        check_variation_config(DatasetConfig(variations="labelled"))
    with pytest.raises(SynthfaceError, match="labelled or pca"):
        check_variation_config(DatasetConfig(variations="random"))
    # without a regressor the default is the PCA directions at strength 0.5; with one, labelled at 1.0
    assert variation_mode(DatasetConfig()) == "pca" and variation_strength(DatasetConfig()) == 0.5
    cfg = DatasetConfig(nuisance_regressor="world")
    assert variation_mode(cfg) == "labelled" and variation_strength(cfg) == 1.0


def test_a_nuisance_regressor_without_its_sidecar_is_refused(tmp_path):
    from synthface.labelling.nuisance import load_nuisance_regressor
    (tmp_path / "r.onnx").write_bytes(b"not a model")
    with pytest.raises(SynthfaceError, match="JSON sidecar"):
        load_nuisance_regressor(f"onnx:{tmp_path / 'r.onnx'}")
    with pytest.raises(SynthfaceError, match="unknown nuisance regressor"):
        load_nuisance_regressor("pose.onnx")


def test_the_world_regressor_reads_renderer_nuisances():
    """The shipped regressor on renderer people it never saw: yaw and smile track the truth."""
    from synthface.align import arcface_crop
    from synthface.labelling.nuisance import load_nuisance_regressor
    from synthface.world import World
    from synthface.world.nuisance import nuisance_values
    from synthface.world.renderer import render
    from synthface.world.world import take
    world = World(seed=0)
    ident = take(world.identities(range(9_900_000, 9_900_040)), np.repeat(np.arange(40), 3))
    q = world.nuisance(ident, np.tile(np.arange(3), 40))
    imgs = render(ident, q, 64)
    reg = load_nuisance_regressor("world")
    pred = reg.predict(imgs)
    truth = nuisance_values(q)
    crops = arcface_crop(imgs, 112).round().clamp(0, 255).byte().permute(0, 2, 3, 1).numpy()
    from_crops = reg.predict(crops, aligned=True)
    # held-out R^2 at build time: yaw 0.86, smile 0.71, light_x 0.96 (nuisance.json)
    for k, name, floor in ((0, "yaw", 0.85), (2, "smile", 0.7), (4, "light_x", 0.9)):
        assert np.corrcoef(pred[name], truth[:, k])[0, 1] > floor, name
        assert np.corrcoef(from_crops[name], truth[:, k])[0, 1] > floor, name
    assert ((pred["glasses"] > 0) == (truth[:, 7] > 0.5)).mean() > 0.95
