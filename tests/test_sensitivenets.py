"""SensitiveNets on small synthetic embeddings: identity clusters with planted gender and group directions."""

import numpy as np
import pytest
import torch

from synthface.errors import SynthfaceError
from synthface.evaluation import leakage
from synthface.methods import SensitiveNets


def embeddings(ids_per_cell=12, per_id=6, d=32, seed=0, strength=0.8, noise=0.35):
    """Identity centres N(0, I/d) plus +-strength/2 along a gender direction and a group offset of length
    strength/2 in a 2-d group plane (3 groups at 120 degrees); images = centre + noise. A linear probe finds
    gender and group on unseen identities about 95 % of the time; identities are well separated."""
    rng = np.random.default_rng(seed)
    basis = np.linalg.qr(np.random.default_rng(1234).normal(size=(d, d)))[0]  # same directions for all seeds
    gender_dir, group_plane = basis[:, 0], basis[:, 1:3]
    group_at = np.array([[1, 0], [-0.5, 0.866], [-0.5, -0.866]])
    X, ident, gender, group = [], [], [], []
    for gr in range(3):
        for ge in range(2):
            for _ in range(ids_per_cell):
                c = rng.normal(size=d) / np.sqrt(d)
                c += strength * 0.5 * ((2 * ge - 1) * gender_dir + group_plane @ group_at[gr])
                X.append(c + noise * rng.normal(size=(per_id, d)) / np.sqrt(d))
                pid = len(ident) // per_id + 100_000 * seed
                ident += [pid] * per_id
                gender += [["female", "male"][ge]] * per_id
                group += [f"group{gr + 1}"] * per_id
    return np.concatenate(X).astype(np.float32), np.array(ident), {"gender": np.array(gender),
                                                                      "group": np.array(group)}


def verification_accuracy(Z, ident):
    """Best-threshold accuracy over all pairs, genuine and impostor pairs weighted equally."""
    Z = Z / np.linalg.norm(Z, axis=1, keepdims=True)
    iu = np.triu_indices(len(Z), 1)
    s = (Z @ Z.T)[iu]
    same = (ident[:, None] == ident[None, :])[iu]
    best = 0.0
    for t in np.quantile(s, np.linspace(0.5, 1, 200)):
        best = max(best, 0.5 * ((s[same] >= t).mean() + (s[~same] < t).mean()))
    return best


FAST = dict(epochs=25, batch_size=24, detector_steps=40, seed=0)


@pytest.fixture(scope="module")
def fitted():
    torch.set_num_threads(1)  # small matrices: threads only add contention, and keep the result reproducible
    X, ident, sens = embeddings(seed=0)
    return SensitiveNets(**FAST).fit(X, ident, sens), X, ident, sens


def test_untrained_projection_is_the_normalised_input():
    X, ident, sens = embeddings(ids_per_cell=2, per_id=3)
    m = SensitiveNets(epochs=1, lam=0.0, lr=1e-12, detector_steps=5, seed=3).fit(X, ident, sens)
    # With a vanishing learning rate the zero-initialised last layer stays (almost) zero.
    Xn = X / np.linalg.norm(X, axis=1, keepdims=True)
    assert np.allclose(m.transform(X), Xn, atol=1e-6)
    fresh = SensitiveNets(epochs=1)
    fresh._check_params()
    from synthface.methods.sensitivenets import _Projection
    p = _Projection(32, [32])
    z = torch.nn.functional.normalize(torch.randn(5, 32), dim=1)
    assert torch.equal(p(z), torch.nn.functional.normalize(z, dim=1))


def test_fit_removes_gender_and_group_and_keeps_identity(fitted):
    m, X, ident, sens = fitted
    Xt, it, st = embeddings(seed=1)  # unseen identities
    before = leakage(Xt, st, groups=it, classifiers=("logreg", "rf"), n_boot=50)
    after = leakage(m.transform(Xt), st, groups=it, classifiers=("logreg", "rf"), n_boot=50)
    for clf in ("logreg", "rf"):
        g0 = before["attributes"]["gender"]["classifiers"][clf]["accuracy"]
        g1 = after["attributes"]["gender"]["classifiers"][clf]["accuracy"]
        assert g0 > 0.9 and g1 < 0.75, (clf, g0, g1)
        r0 = before["attributes"]["group"]["classifiers"][clf]["accuracy"]
        r1 = after["attributes"]["group"]["classifiers"][clf]["accuracy"]
        assert r0 > 0.75 and r1 < r0 - 0.2, (clf, r0, r1)
    v0, v1 = verification_accuracy(Xt, it), verification_accuracy(m.transform(Xt), it)
    assert v0 > 0.98 and v1 > v0 - 0.02, (v0, v1)
    # The log: one record per epoch, held-out detector accuracy falling from the raw level.
    h = m.history_
    assert len(h) == FAST["epochs"] and h[0]["removing"] is False and h[-1]["removing"] is True
    assert h[0]["detector_acc"]["gender"] > 0.9
    assert min(r["detector_acc"]["gender"] for r in h[-5:]) < 0.75
    assert all(np.isfinite(r["loss"]) and r["removal"] >= 0 for r in h)


def test_lam_zero_keeps_verification():
    torch.set_num_threads(1)
    X, ident, sens = embeddings(ids_per_cell=6, seed=0)
    Xt, it, _ = embeddings(ids_per_cell=6, seed=1)
    m = SensitiveNets(**{**FAST, "epochs": 5, "lam": 0.0}).fit(X, ident, sens)
    assert verification_accuracy(m.transform(Xt), it) >= verification_accuracy(Xt, it) - 0.005
    assert all(r["removal"] == 0 for r in m.history_)


def test_fit_is_reproducible_and_save_load_round_trips(fitted, tmp_path):
    m, X, ident, sens = fitted
    path = m.save(tmp_path / "m.sensitivenets")
    back = SensitiveNets.load(path)
    assert np.array_equal(back.transform(X), m.transform(X))
    assert back.get_params() == m.get_params()
    assert back.classes_ == {"gender": ["female", "male"], "group": ["group1", "group2", "group3"]}
    assert back.tau_ == {"gender": 0.5, "group": pytest.approx(1 / 3)}
    assert len(back.history_) == FAST["epochs"]
    # A second fit with the same seed gives the same projection.
    X2, i2, s2 = embeddings(ids_per_cell=3, per_id=4)
    a = SensitiveNets(epochs=2, batch_size=24, detector_steps=10).fit(X2, i2, s2).transform(X2)
    b = SensitiveNets(epochs=2, batch_size=24, detector_steps=10).fit(X2, i2, s2).transform(X2)
    assert np.array_equal(a, b)


@pytest.mark.parametrize("detectors,target", [("fixed", "true_class"), ("online", "fixed_class")])
def test_detector_variants_run_and_log(detectors, target):
    X, ident, sens = embeddings(ids_per_cell=3, per_id=4)
    lines = []
    m = SensitiveNets(epochs=3, batch_size=24, detector_steps=10, detectors=detectors, target=target,
                      target_prob=0.9 if target == "fixed_class" else None).fit(X, ident, sens, log=lines.append)
    assert len(lines) == 3 and "held-out detector accuracy" in lines[-1]
    assert m.history_[-1]["removal"] > 0
    assert m.tau_["gender"] == (0.9 if target == "fixed_class" else 0.5)
    if detectors == "fixed":
        assert "fixed_detector_acc" in m.history_[-1]


def test_diverse_pool_holds_one_detector_per_width_and_reinitialises_on_schedule(monkeypatch):
    X, ident, sens = embeddings(ids_per_cell=3, per_id=4)
    made = []
    orig = SensitiveNets._new_detector

    def spy(self, dim, hidden, n_classes, gen, device):
        made.append(int(hidden))
        return orig(self, dim, hidden, n_classes, gen, device)

    monkeypatch.setattr(SensitiveNets, "_new_detector", spy)
    m = SensitiveNets(epochs=5, batch_size=24, detector_steps=10, detectors="diverse", detector_widths=(0, 16),
                      reinit_every=2, warmup_epochs=1).fit(X, ident, sens)
    assert all(r["removal"] > 0 for r in m.history_[1:]) and m.history_[0]["removal"] == 0
    # 5 epochs: 5 monitoring detectors (width 0) per attribute; the pool: 2 widths x 2 attributes at the
    # start, then after removal epochs 1..3 (none after the last), width j is re-made when (epoch + j) is
    # even: width 16 after epochs 1 and 3, width 0 after epoch 2.
    pool_made = made.copy()
    for _ in range(5 * 2):
        pool_made.remove(0)
    assert sorted(pool_made) == sorted([0, 16] * 2 + [16, 16] * 2 + [0] * 2)


def test_leace_pre_erasure_feeds_the_projection_and_round_trips(tmp_path):
    from sklearn.linear_model import LogisticRegression
    X, ident, sens = embeddings(ids_per_cell=6, per_id=4)
    m = SensitiveNets(epochs=1, lam=0.0, lr=1e-12, detector_steps=5, pre_erasure="leace").fit(X, ident, sens)
    # An (almost) untrained projection returns the normalised LEACE output: linear probes on the training
    # data fall from far above chance to near it (the re-normalisation may restore a little).
    Z = m.transform(X)
    for k, y in sens.items():
        raw = (LogisticRegression(max_iter=3000, C=100).fit(X, y).predict(X) == y).mean()
        after = (LogisticRegression(max_iter=3000, C=100).fit(Z, y).predict(Z) == y).mean()
        top = np.unique(y, return_counts=True)[1].max() / len(y)
        assert raw > top + 0.3 and after < top + 0.12, (k, raw, after, top)
    back = SensitiveNets.load(m.save(tmp_path / "m.sensitivenets"))
    assert back.pre_erasure_ is not None
    assert np.allclose(back.transform(X), Z, atol=1e-6)


def test_get_set_params():
    m = SensitiveNets(lam=0.3)
    assert m.get_params()["lam"] == 0.3
    m.set_params(lam=3.0, detectors="online")
    assert m.lam == 3.0 and m.detectors == "online"
    from sklearn.base import clone
    assert clone(m).get_params() == m.get_params()


def test_load_rejects_other_files(tmp_path):
    from safetensors.torch import save_file
    p = tmp_path / "other.safetensors"
    save_file({"w": torch.zeros(2)}, str(p), metadata={"format": "something.else"})
    with pytest.raises(SynthfaceError, match="not a SensitiveNets model"):
        SensitiveNets.load(p)
    (tmp_path / "junk").write_bytes(b"not a file format")
    with pytest.raises(SynthfaceError, match="not a safetensors file"):
        SensitiveNets.load(tmp_path / "junk")
    with pytest.raises(SynthfaceError, match="not found"):
        SensitiveNets.load(tmp_path / "missing")


@pytest.mark.parametrize("case, message", [
    ("length", "one label per embedding"),
    ("identity_length", "identity must hold one label per embedding"),
    ("not_mapping", "non-empty mapping"),
    ("one_class", "single class"),
    ("singleton", "single embedding"),
    ("nan", "NaN"),
    ("target", "target must be one of"),
    ("detectors", "detectors must be one of"),
    ("tau", "target_prob"),
    ("widths", "detector_widths"),
    ("pre_erasure", "pre_erasure"),
    ("reinit", "reinit_every"),
])
def test_bad_fit_input_gives_one_clear_error(case, message):
    X, ident, sens = embeddings(ids_per_cell=2, per_id=3)
    kw, est = {}, SensitiveNets(epochs=1)
    if case == "length":
        sens = {**sens, "gender": sens["gender"][:-1]}
    elif case == "identity_length":
        ident = ident[:-2]
    elif case == "not_mapping":
        sens = sens["gender"]
    elif case == "one_class":
        sens = {**sens, "gender": np.full(len(X), "female")}
    elif case == "singleton":
        ident = ident.copy()
        ident[0] = -1
    elif case == "nan":
        X = X.copy()
        X[3, 0] = np.nan
    elif case == "target":
        est = SensitiveNets(target="chance")
    elif case == "detectors":
        est = SensitiveNets(detectors="ensemble")
    elif case == "tau":
        est = SensitiveNets(target_prob=1.5)
    elif case == "widths":
        est = SensitiveNets(detectors="diverse", detector_widths=[0, -4])
    elif case == "pre_erasure":
        est = SensitiveNets(pre_erasure="inlp")
    elif case == "reinit":
        est = SensitiveNets(reinit_every=0)
    with pytest.raises(SynthfaceError, match=message):
        est.fit(X, ident, sens, **kw)


def test_transform_errors(fitted):
    m = fitted[0]
    with pytest.raises(SynthfaceError, match="not fitted"):
        SensitiveNets().transform(np.ones((2, 32)))
    with pytest.raises(SynthfaceError, match="fitted on 32-d"):
        m.transform(np.ones((2, 8)))
    with pytest.raises(SynthfaceError, match="NaN"):
        m.transform(np.full((2, 32), np.nan))
