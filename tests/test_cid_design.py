"""The CID sweep's evaluation people (issue 26, experiments/cid_design.py): look-alikes, per-person
label mixes, the touched people's scores and the bandwidth choice on calibration people."""

import numpy as np
import pytest

from synthface.errors import SynthfaceError
from synthface.experiments.cid_design import choose_factor, designed_people, label_draws, lookalikes, score
from synthface.world import BALANCED, World


@pytest.fixture(scope="module")
def world():
    return World(seed=0, distribution=BALANCED)


@pytest.fixture(scope="module")
def dominant(world):
    cand = world.identities(range(60))
    return world.identities([int(i) for i, h in zip(cand["index"], cand["glasses_habit"]) if h][:2])


def test_lookalikes_blend_the_dominant_faces(world, dominant):
    same = lookalikes(world, dominant, 7_000_000, 4, blend=0.0)
    fresh = world.identities(range(7_000_000, 7_000_004))
    assert same["index"].tolist() == list(range(7_000_000, 7_000_004))  # fresh indices: their own images
    assert same["lookalike_of"].tolist() == [dominant["index"][0], dominant["index"][1]] * 2
    for k in ("tone", "eye_w", "mouth_w", "iris", "brow_thick"):  # blend 0: the dominant face exactly
        np.testing.assert_array_equal(same[k], np.asarray(dominant[k])[[0, 1, 0, 1]])
    half = lookalikes(world, dominant, 7_000_000, 4, blend=0.5)
    np.testing.assert_allclose(half["eye_w"], 0.5 * np.asarray(dominant["eye_w"])[[0, 1, 0, 1]] + 0.5 * fresh["eye_w"])
    assert half["glasses_habit"].all()  # the habit comes with the dominant face
    np.testing.assert_array_equal(half["group"], np.asarray(dominant["group"])[[0, 1, 0, 1]])
    with pytest.raises(SynthfaceError, match="lookalike_blend"):
        lookalikes(world, dominant, 7_000_000, 2, blend=1.5)


def test_designed_people_have_the_label_mixes_and_touched_flags(world, dominant):
    d = designed_people(world, 6_000_000, 6, 4, [0.25, 0.75], 16, dominant=dominant, n_lookalikes=4,
                        lookalike_first=6_500_000)
    ids = list(dict.fromkeys(d["identity"].tolist()))
    assert len(ids) == 10 and len(d["identity"]) == 40 and d["images"].shape == (40, 16, 16, 3)
    frac = [d["smile"][d["identity"] == i].mean() for i in ids]
    # the mix cycles over the general people and, separately, over the look-alikes
    assert frac == [0.25, 0.75] * 3 + [0.25, 0.75] * 2
    look = np.array([d["lookalike"][d["identity"] == i][0] for i in ids])
    assert look.tolist() == [0] * 6 + [1] * 4 and all(i >= 6_500_000 for i in ids[6:])
    np.testing.assert_array_equal(d["touched"], np.maximum(d["habit"], d["lookalike"]))
    assert d["habit"][d["lookalike"] == 1].all()
    with pytest.raises(SynthfaceError, match="test_smile_mix"):
        designed_people(world, 6_000_000, 2, 4, [1.2], 16)


def test_half_mix_without_lookalikes_is_issue_16s_test_set(world):
    """[0.5] and no look-alikes picks the images issue 16's builder picked: per person the first
    half smiling draws, then the first non-smiling ones, out of 6 x images draws."""
    n, images = 5, 4
    d = designed_people(world, 1_000_000, n, images, [0.5], 16)
    people = world.identities(range(1_000_000, 1_000_000 + n))
    draws = label_draws(world, people, 6 * images)
    js = []
    for r in range(n):
        js += np.flatnonzero(draws["smile"][r] == 1)[:2].tolist() + np.flatnonzero(draws["smile"][r] == 0)[:2].tolist()
    from synthface.experiments.cid_data import render_images
    old = render_images(world, people, np.repeat(np.arange(n), images), np.array(js), 16)
    np.testing.assert_array_equal(d["images"], old)
    assert (d["lookalike"] == 0).all() and d["smile"].tolist() == [1, 1, 0, 0] * n


def _toy_people():
    # 4 people x 4 images: A, B glasses habit (touched), C, D not; A, C mostly not smiling
    smile = np.array([1, 0, 0, 0, 1, 1, 1, 0, 1, 0, 0, 0, 1, 1, 1, 0])
    ident = np.repeat([10, 11, 12, 13], 4)
    habit = np.repeat([1, 1, 0, 0], 4)
    return {"smile": smile, "identity": ident, "habit": habit, "lookalike": np.zeros(16, int), "touched": habit,
            "group": np.repeat([0, 1, 0, 1], 4)}


def test_score_reads_the_shortcut_off_the_touched_people():
    p = _toy_people()
    shortcut = p["habit"].copy()  # "glasses habit -> smiling"
    s = score(p, shortcut)
    # per person: A 1/4, B 3/4, C 3/4, D 1/4
    assert s["accuracy"] == pytest.approx(0.5)
    assert s["worst_10pct_identity_accuracy"] == pytest.approx(0.25)
    assert s["touched_accuracy"] == pytest.approx(0.5) and s["touched_worst_10pct_identity_accuracy"] == 0.25
    assert s["touched_people"] == 2 and "lookalike_accuracy" not in s  # no look-alikes here
    assert s["false_smile_rate_glasses_habit"] == pytest.approx(1.0)
    perfect = score(p, p["smile"])
    assert perfect["touched_worst_10pct_identity_accuracy"] == 1.0 and perfect["false_smile_rate_glasses_habit"] == 0


def test_choose_factor_prefers_worst_decile_then_accuracy_then_the_smaller_factor():
    s = lambda w, a: {"worst_10pct_identity_accuracy": w, "accuracy": a}  # noqa: E731
    assert choose_factor({0.25: s(0.3, 0.9), 0.5: s(0.4, 0.6), 1.0: s(0.35, 0.8)}) == 0.5
    assert choose_factor({0.25: s(0.4, 0.7), 0.5: s(0.4, 0.8)}) == 0.5
    assert choose_factor({0.25: s(0.4, 0.8), 0.5: s(0.4, 0.8)}) == 0.25
    with pytest.raises(SynthfaceError):
        choose_factor({})
