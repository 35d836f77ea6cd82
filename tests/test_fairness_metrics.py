"""Fairness metrics against hand-computed and published values."""

import numpy as np
import pytest

from synthface import fairness as fm

FMR = (0.001, 0.002, 0.004)
FNMR = (0.01, 0.02, 0.05)


def test_worked_example():
    assert fm.fdr(FMR, FNMR, alpha=0.5) == pytest.approx(0.9785, abs=1e-12)
    assert fm.inequity_rate(FMR, FNMR, alpha=0.5) == pytest.approx(4.4721, abs=1e-4)
    assert fm.inequity_rate(FMR, FNMR) == pytest.approx(2 * np.sqrt(5), rel=1e-12)
    assert fm.gini(FMR) == pytest.approx(0.428571, abs=1e-6)
    assert fm.gini(FNMR) == pytest.approx(0.5, abs=1e-12)
    assert fm.garbe(FMR, FNMR, alpha=0.5) == pytest.approx(0.464286, abs=1e-6)


def test_identical_groups_are_perfectly_fair():
    rates, accs = (0.01, 0.01, 0.01), (90.0, 90.0, 90.0)
    assert fm.fdr(rates, rates) == 1.0
    assert fm.inequity_rate(rates, rates) == 1.0
    assert fm.garbe(rates, rates) == 0.0
    assert fm.ser(accs) == 1.0
    assert fm.std_accuracy(accs) == 0.0


def test_rfw_published_arcface_accuracies():
    accs = (92.15, 88.00, 83.98, 84.93)  # Caucasian, Asian, Indian, African (RFW paper, ArcFace)
    assert fm.std_accuracy(accs, ddof=1) == pytest.approx(3.681, abs=5e-4)
    assert fm.ser(accs) == pytest.approx(2.041, abs=5e-4)


def test_inequity_rate_zero_rates():
    assert np.isnan(fm.inequity_rate((0.0, 0.01), (0.1, 0.2)))
    assert fm.inequity_rate((0.0, 0.01), (0.1, 0.2), floor=0.001) == pytest.approx(np.sqrt(10) * np.sqrt(2))


def test_rates_thresholds_roc_eer_on_small_sets():
    genuine = np.array([0.9, 0.8, 0.7, 0.35, 0.2])
    impostor = np.array([0.1, 0.2, 0.3, 0.4, 0.5, 0.05, 0.0, -0.1, -0.2, -0.3])
    assert fm.fmr(impostor, 0.3) == 0.3 and fm.fnmr(genuine, 0.3) == 0.2
    t = fm.threshold_at_fmr(impostor, 0.1)  # one false match allowed: only 0.5 may pass
    assert fm.fmr(impostor, t) == 0.1 and 0.4 < t <= 0.5
    assert fm.tar_at_fmr(genuine, impostor, 0.1) == 0.6
    assert fm.fmr(impostor, fm.threshold_at_fmr(impostor, 0.0)) == 0.0
    far, tar, thr = fm.roc(genuine, impostor)
    assert np.all(np.diff(thr) < 0) and np.all(np.diff(far) >= 0) and np.all(np.diff(tar) >= 0)
    assert far[-1] == 1.0 and tar[-1] == 1.0
    assert fm.eer(genuine, impostor) == pytest.approx(0.2)
    assert fm.eer([1.0, 2.0], [-1.0, 0.0]) == 0.0


def test_kfold_accuracy_uses_thresholds_from_other_folds():
    # Separable except fold 1, whose genuine pair sits below every impostor of the other folds.
    scores = np.array([0.9, 0.1, 0.8, 0.2, 0.05, 0.15, 0.95, 0.3])
    labels = np.array([1, 0, 1, 0, 1, 0, 1, 0], dtype=bool)
    folds = np.array([0, 0, 0, 0, 1, 1, 2, 2])
    mean, per_fold = fm.kfold_accuracy(scores, labels, folds)
    np.testing.assert_allclose(per_fold, [1.0, 0.5, 1.0])
    assert mean == pytest.approx(2.5 / 3)


def test_bad_scores_are_reported():
    with pytest.raises(ValueError, match="NaN"):
        fm.fmr([0.1, np.nan], 0.0)
    with pytest.raises(ValueError, match="empty"):
        fm.fnmr([], 0.0)


def test_bootstrap_ci_brackets_the_estimate():
    rng = np.random.default_rng(0)
    g, i = rng.normal(0.6, 0.1, 500), rng.normal(0.1, 0.1, 500)
    est = fm.eer(g, i)
    lo, hi = fm.bootstrap_ci(fm.eer, [g, i], n_boot=200, seed=1)
    assert lo <= est <= hi and hi - lo < 0.05
