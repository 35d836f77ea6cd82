"""Recogniser thresholds at a false-match rate on reference faces, and how a dataset records them."""

import numpy as np
import pytest

from synthface.dataset.writer import DatasetConfig, check_threshold_config
from synthface.errors import SynthfaceError
from synthface.identity.thresholds import fmr_threshold, impostor_scores, load_reference, min_reference_pairs


def unit(x):
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_impostor_scores_are_every_pair_of_different_people_in_blocks():
    rng = np.random.default_rng(0)
    e = unit(rng.standard_normal((301, 16)).astype(np.float32))
    S = e @ e.T
    iu = np.triu_indices(301, 1)
    assert np.allclose(np.sort(impostor_scores(e, block=64)), np.sort(S[iu]), atol=1e-6)
    ids = np.repeat(np.arange(101), 3)[:301]  # three images per person: same-person pairs are not impostors
    keep = ids[iu[0]] != ids[iu[1]]
    got = impostor_scores(e, ids, block=50)
    assert got.size == keep.sum() and np.allclose(np.sort(got), np.sort(S[iu][keep]), atol=1e-6)


@pytest.mark.parametrize("fmr", [1e-2, 1e-3])
def test_fmr_threshold_matches_the_direct_quantile_of_a_known_distribution(fmr):
    # 1500 random 64-d directions: impostor cosines ~ N(0, 1/64); the threshold at FMR f is their
    # (1 - f) quantile, and at most a fraction f of impostor pairs reach it
    rng = np.random.default_rng(1)
    e = unit(rng.standard_normal((1500, 64)).astype(np.float32))
    r = fmr_threshold(e, fmr, source="gaussian")
    s = impostor_scores(e)
    assert r["impostor_pairs"] == s.size == 1500 * 1499 // 2 and r["faces"] == 1500 and r["kind"] == "fmr"
    assert (s >= r["threshold"]).mean() <= fmr
    assert abs(r["threshold"] - np.quantile(s, 1 - fmr)) < 2e-3
    from scipy.stats import norm  # the population value, within sampling error
    assert abs(r["threshold"] - norm.ppf(1 - fmr) / np.sqrt(64)) < 0.02


def test_fmr_threshold_refuses_too_few_pairs_and_bad_rates():
    e = unit(np.random.default_rng(2).standard_normal((100, 8)))
    with pytest.raises(SynthfaceError, match=r"needs at least 100,000 impostor pairs.*100 faces give 4,950"):
        fmr_threshold(e, 1e-4)
    assert min_reference_pairs(1e-4) == 100_000
    for bad in (0, 1, -0.1, float("nan")):
        with pytest.raises(SynthfaceError, match="false-match rate"):
            fmr_threshold(e, bad)


def test_reference_from_npy_and_image_folder(tmp_path):
    from PIL import Image

    e = np.random.default_rng(3).standard_normal((5, 8)).astype(np.float32)
    np.save(tmp_path / "ref.npy", e)
    r = load_reference(tmp_path / "ref.npy")
    assert np.array_equal(r["embeddings"], e) and "ref.npy" in r["source"]
    for who in ("anna", "bo"):
        for k in range(2):
            (tmp_path / "imgs" / who).mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.full((112, 112, 3), 40 * k, np.uint8)).save(tmp_path / "imgs" / who / f"{k}.png")
    r = load_reference(tmp_path / "imgs")
    assert r["images"].shape == (4, 112, 112, 3) and list(r["identities"]) == [0, 0, 1, 1]
    with pytest.raises(SynthfaceError, match="expected an .npy"):
        load_reference(tmp_path / "missing.txt")


def test_dataset_config_needs_reference_faces_or_an_explicit_fallback():
    with pytest.raises(SynthfaceError, match="--reference-embeddings"):
        check_threshold_config(DatasetConfig())
    check_threshold_config(DatasetConfig(reference="world"))
    check_threshold_config(DatasetConfig(separation_quantile=0.99))
    check_threshold_config(DatasetConfig(separation=0.4))
    with pytest.raises(SynthfaceError, match="--separation-fmr"):
        check_threshold_config(DatasetConfig(reference="world", separation_fmr=2.0))
    with pytest.raises(SynthfaceError, match="cosine"):
        check_threshold_config(DatasetConfig(separation=3.0))


def test_a_rerun_may_raise_the_budgets_but_not_change_other_settings(tmp_path):
    """The variation-budget error tells the user to raise --variation-budget and rerun: that resume works."""
    import json

    from synthface.dataset.writer import _check_or_write_meta

    meta = {"version": 1, "config": {"identity_budget": 50.0, "variation_budget": 20, "seed": 0}}
    _check_or_write_meta(tmp_path, meta)
    raised = {"version": 1, "config": {"identity_budget": 50.0, "variation_budget": 60, "seed": 0}}
    _check_or_write_meta(tmp_path, raised)
    assert json.loads((tmp_path / "dataset.json").read_text()) == raised
    for other in ({"identity_budget": 50.0, "variation_budget": 20, "seed": 0},   # lowered: refused
                  {"identity_budget": 50.0, "variation_budget": 60, "seed": 1}):  # another seed: refused
        with pytest.raises(SynthfaceError, match="different settings"):
            _check_or_write_meta(tmp_path, {"version": 1, "config": other})
