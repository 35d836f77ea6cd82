"""Identity-robustness metrics against a hand-computed example."""

import numpy as np
import pytest

from synthface.errors import SynthfaceError
from synthface.evaluation.identity_robustness import identity_robustness


def example():
    # identities a (4 images, 3 right), b (2 images, both right), c (2, none right), d (1 image, right)
    identity = np.array(["a", "a", "a", "a", "b", "b", "c", "c", "d"])
    y_true = np.array([1, 1, 0, 0, 1, 0, 1, 0, 1])
    y_pred = np.array([1, 1, 0, 1, 1, 0, 0, 1, 1])
    groups = np.array(["f", "f", "f", "f", "m", "m", "m", "m", "f"])
    return y_true, y_pred, identity, groups


def test_hand_computed_example():
    y_true, y_pred, identity, groups = example()
    r = identity_robustness(y_true, y_pred, identity, groups, min_images=2, worst=(0.05, 0.5))
    assert r["accuracy"] == pytest.approx(6 / 9)
    assert r["n_identities"] == 3  # d has one image
    assert r["per_identity"] == {"a": 0.75, "b": 1.0, "c": 0.0}
    assert r["identity_accuracy_mean"] == pytest.approx(1.75 / 3)
    assert r["identity_accuracy_std"] == pytest.approx(np.std([0.75, 1.0, 0.0], ddof=1))
    assert r["worst_5pct_identity_accuracy"] == 0.0           # ceil(0.05 * 3) = 1 identity: c
    assert r["worst_50pct_identity_accuracy"] == pytest.approx(0.375)  # ceil(1.5) = 2: c and a
    # cells (true class / group): 1/f = {0,1,8} all right; 0/f = {2,3}: 1 of 2; 1/m = {4,6}: 1 of 2; 0/m = {5,7}: 1 of 2
    assert r["cell_accuracy"] == {"0/f": 0.5, "0/m": 0.5, "1/f": 1.0, "1/m": 0.5}
    assert r["worst_group_accuracy"] == 0.5
    assert r["tpr_by_group"] == {"f": 1.0, "m": 0.5}
    assert r["equal_opportunity_gap"] == 0.5


def test_min_images_one_counts_everyone_and_perfect_predictions_are_uniform():
    y_true, _, identity, groups = example()
    r = identity_robustness(y_true, y_true, identity, groups, min_images=1)
    assert r["n_identities"] == 4
    assert r["identity_accuracy_std"] == 0.0 and r["worst_10pct_identity_accuracy"] == 1.0
    assert r["equal_opportunity_gap"] == 0.0
    assert "cell_accuracy" not in identity_robustness(y_true, y_true, identity)


@pytest.mark.parametrize("kwargs, message", [
    ({"y_pred": [1, 0]}, "y_pred has shape .2,. but y_true has 9 entries"),
    ({"groups": ["f"] * 8}, "groups has shape"),
    ({"min_images": 5}, "no identity has 5 or more images .most: 4."),
    ({"worst": (0.0,)}, "worst=0.0"),
])
def test_bad_inputs(kwargs, message):
    y_true, y_pred, identity, _ = example()
    args = {"y_true": y_true, "y_pred": y_pred, "identity": identity, **kwargs}
    with pytest.raises(SynthfaceError, match=message):
        identity_robustness(**args)
