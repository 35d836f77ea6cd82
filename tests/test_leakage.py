"""synthface.evaluation.leakage: fresh probes on identity-disjoint folds."""

import numpy as np
import pytest

from synthface.errors import SynthfaceError
from synthface.evaluation import leakage
from synthface.evaluation.leakage import identity_folds, leakage_markdown


def clusters(n_ids=40, per_id=5, d=16, seed=0, spread=0.1):
    """Tight identity clusters at random places: identity is easy, anything constant per identity but
    unrelated to the place (a random per-identity label) is not predictable for an unseen identity."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n_ids, d))
    ids = np.repeat(np.arange(n_ids), per_id)
    X = centres[ids] + spread * rng.normal(size=(len(ids), d))
    return X, ids, rng


def test_perfectly_encoded_attribute_is_found_by_every_default_probe():
    X, ids, rng = clusters()
    gender = np.repeat(rng.permutation(np.arange(40) % 2), 5)
    X[:, 0] += 6.0 * (2 * gender - 1)  # one coordinate encodes it, far beyond the identity spread
    r = leakage(X, {"gender": gender}, groups=ids)
    res = r["attributes"]["gender"]
    assert set(res["classifiers"]) == {"svm", "mlp", "rf"}
    assert res["chance_balanced"] == 0.5 and res["chance"] == 0.5
    for name, c in res["classifiers"].items():
        assert c["accuracy"] >= 0.97, name  # (the RBF SVM also weighs the 15 uninformative coordinates)
        assert c["balanced_accuracy"] >= 0.97, name
        assert c["accuracy_ci"][0] >= 0.94 and c["accuracy_ci"][1] == 1.0
        assert len(c["fold_accuracy"]) == 5


def test_per_identity_random_label_is_at_chance_because_folds_are_identity_disjoint():
    # A label constant within each identity but random across identities: a probe that saw the test
    # identity in training would score ~100 % (it recognises the person); identity-disjoint folds give chance.
    X, ids, rng = clusters(n_ids=60)
    label = np.repeat(rng.integers(0, 2, 60), 5)
    r = leakage(X, {"label": label}, groups=ids, classifiers=("rf", "logreg"), n_boot=300)
    for name, c in r["attributes"]["label"]["classifiers"].items():
        assert 0.3 <= c["accuracy"] <= 0.7, (name, c["accuracy"])
        lo, hi = c["accuracy_ci"]
        assert lo <= c["accuracy"] <= hi and hi - lo > 0.05  # identities resampled: a real interval
    # The same probe with identities shared between train and test memorises them.
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.model_selection import cross_val_score, KFold
    leaky = cross_val_score(RandomForestClassifier(n_estimators=50, random_state=0), X, label,
                            cv=KFold(5, shuffle=True, random_state=0)).mean()
    assert leaky > 0.9


def test_random_labels_per_image_are_at_chance_with_three_classes():
    X, ids, rng = clusters(n_ids=60)
    label = rng.integers(0, 3, len(X))
    r = leakage(X, {"group": label}, groups=ids, classifiers=["logreg"], n_boot=200)
    res = r["attributes"]["group"]
    assert abs(res["chance_balanced"] - 1 / 3) < 1e-12
    assert abs(res["classifiers"]["logreg"]["balanced_accuracy"] - 1 / 3) < 0.1
    assert "| group | logreg |" in leakage_markdown(r, "raw")


def test_folds_never_split_an_identity_and_are_reproducible():
    rng = np.random.default_rng(3)
    ids = rng.integers(0, 37, 400)  # unequal identity sizes
    y = rng.integers(0, 2, 400)
    f = identity_folds(y, ids, folds=5, seed=1)
    assert set(f.tolist()) == set(range(5))
    for i in np.unique(ids):
        assert len(set(f[ids == i].tolist())) == 1
    assert np.array_equal(f, identity_folds(y, ids, folds=5, seed=1))
    assert not np.array_equal(f, identity_folds(y, ids, folds=5, seed=2))


def test_custom_estimators_are_cloned_not_fitted_in_place():
    from sklearn.linear_model import LogisticRegression
    X, ids, rng = clusters()
    est = LogisticRegression()
    r = leakage(X, {"a": np.repeat(np.arange(40) % 2, 5)}, groups=ids, classifiers={"lr": est}, n_boot=50)
    assert "lr" in r["attributes"]["a"]["classifiers"]
    assert not hasattr(est, "coef_")


@pytest.mark.parametrize("case, message", [
    ("nan", "NaN"),
    ("length", "one label per embedding"),
    ("one_class", "single class"),
    ("no_groups", "groups="),
    ("few_ids", "identity-disjoint"),
    ("classifier", "unknown leakage classifier"),
    ("groups_len", "one identity per embedding"),
    ("empty", "non-empty mapping"),
])
def test_bad_input_gives_one_clear_error(case, message):
    X, ids, rng = clusters(n_ids=10, per_id=3)
    y = np.repeat(np.arange(10) % 2, 3)
    kw = dict(X=X, sensitive={"a": y}, groups=ids, classifiers=("logreg",), n_boot=10)
    if case == "nan":
        X = X.copy()
        X[4, 2] = np.nan
        kw["X"] = X
    elif case == "length":
        kw["sensitive"] = {"a": y[:-1]}
    elif case == "one_class":
        kw["sensitive"] = {"a": np.zeros(len(y))}
    elif case == "no_groups":
        kw["groups"] = None
    elif case == "few_ids":
        kw["groups"] = ids % 3
    elif case == "classifier":
        kw["classifiers"] = ("xgboost",)
    elif case == "groups_len":
        kw["groups"] = ids[:-2]
    elif case == "empty":
        kw["sensitive"] = {}
    with pytest.raises(SynthfaceError, match=message):
        leakage(**kw)
