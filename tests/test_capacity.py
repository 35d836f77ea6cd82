"""Identity capacity estimate (synthface.identity.capacity, `synthface capacity`): the greedy model
against simulated greedy processes with a known collision probability, the early refusal, determinism
and selection's own candidates, and the CLI's files."""

import json

import numpy as np
import pytest
from click.testing import CliRunner

from synthface.errors import SynthfaceError
from synthface.identity.capacity import (capacity_check, candidates_needed, draw_candidates, estimate_capacity,
                                         expected_identities, fit_capacity, greedy_curves, reachable)
from synthface.identity.identities import select_identities

from conftest import make_generator


def hand_estimate(p, r, names=("a",)):
    P = np.asarray(p, float) if np.ndim(p) == 2 else np.diag(np.full(len(names), p))
    r = np.broadcast_to(np.asarray(r, float), (len(names),)).tolist()
    params = {"collision": P.tolist(), "pass_rate": r}
    return {"cells": list(names), "threshold": 0.3, "n_candidates": 300,
            "params": {e: params for e in ("central", "optimistic", "pessimistic")}}


# ------------------------------------------------------------------ the model

@pytest.mark.parametrize("p,r", [(0.02, 0.7), (0.2, 0.3), (1e-4, 0.9)])
def test_one_cell_model_is_the_closed_form(p, r):
    est = hand_estimate(p, r)
    lam = -np.log1p(-p)
    js = np.array([10, 300, 1e4, 1e6, 1e9])
    np.testing.assert_allclose(expected_identities(est, js)[:, 0], np.log1p(lam * r * js) / lam, rtol=2e-3)
    N = 40
    np.testing.assert_allclose(candidates_needed(est, N)[0], np.expm1(lam * N) / (lam * r), rtol=2e-3)


def test_model_against_simulated_greedy_with_known_p():
    """Greedy acceptance where a passing candidate collides with each accepted identity independently
    with probability p: the mean accepted-vs-candidates curve is the model's (two cells, with
    cross-cell collisions, interleaved as selection visits them)."""
    P = np.array([[0.03, 0.005], [0.005, 0.08]])
    r = np.array([0.6, 0.9])
    runs, J = 400, 2000
    rng = np.random.default_rng(0)
    n = np.zeros((runs, 2))
    marks = {100: None, 500: None, 2000: None}
    for j in range(1, J + 1):
        for a in range(2):
            accept_p = r[a] * np.prod((1 - P[a]) ** n, axis=1)
            n[:, a] += rng.random(runs) < accept_p
        if j in marks:
            marks[j] = n.mean(0)
    est = hand_estimate(P, r, ("a", "b"))
    for j, sim in marks.items():
        np.testing.assert_allclose(expected_identities(est, j), sim, rtol=0.03)


@pytest.fixture(scope="module")
def sphere():
    """Candidates uniform on the sphere in 24-d (collisions pairwise independent, as in the model),
    2 cells, 70 % label pass rate, threshold at p = 0.02."""
    rng = np.random.default_rng(0)
    e = rng.standard_normal((2, 3000, 24)).astype(np.float32)
    e /= np.linalg.norm(e, axis=2, keepdims=True)
    ok = rng.random((2, 3000)) < 0.7
    ref = rng.standard_normal((4000, 24))
    ref /= np.linalg.norm(ref, axis=1, keepdims=True)
    s = (ref[:2000] * ref[2000:]).sum(1)
    return ok, e, float(np.quantile(s, 0.98))


def test_fit_recovers_p_and_extrapolates_the_greedy_run(sphere):
    ok, e, T = sphere
    est = fit_capacity(["a", "b"], ok[:, :300], e[:, :300], T, n_per_cell=100, n_boot=100)
    for name in ("a", "b"):
        c = est["per_cell"][name]
        lo, hi = c["p_within_interval"]
        assert lo < 0.02 < hi and 0.014 < c["p_within"] < 0.027
        assert abs(c["pass_rate"] - 0.7) < 0.07
        assert 0.5 < c["curve_factor"] < 2
    # selection's greedy on 10x the candidates stays inside the band fitted on the first 300
    full = greedy_curves(["a", "b"], ok, e, T)
    for j in (1000, 3000):
        got = {end: expected_identities(est, j, end) for end in ("central", "optimistic", "pessimistic")}
        assert (got["pessimistic"] <= full[:, j - 1]).all() and (full[:, j - 1] <= got["optimistic"]).all()
        np.testing.assert_allclose(got["central"], full[:, j - 1], rtol=0.15)
    assert all(est["expected_identities"]["1000000"]["central"][n] > full[:, -1].max() for n in ("a", "b"))


def test_refusal_and_acceptance_messages(sphere):
    ok, e, T = sphere
    est = fit_capacity(["a", "b"], ok[:, :300], e[:, :300], T, n_boot=50)
    good, msg = capacity_check(est, 40, 50)
    assert good and "a: about" in msg and "b: about" in msg
    good, msg = capacity_check(est, 2000, 50)
    assert not good
    first = msg.splitlines()[0]
    assert "2000 distinct identities per cell are clearly out of reach for 2 cell(s) (a; b)" in first
    assert "100,000 candidates per cell" in first and "--identity-budget" in first
    figures = reachable(est, 2000, 100_000)["cells"]["a"]
    assert figures["verdict"] == "out of reach" and figures["expected_optimistic"] < 1000
    assert f"about {figures['expected_central']:.0f} (optimistic {figures['expected_optimistic']:.0f}) of 2000" in msg
    # between the ends: not refused, but not promised either
    mid = next(N for N in range(60, 2000, 10) if reachable(est, N, 50 * N)["verdict"] in ("uncertain", "unlikely"))
    assert capacity_check(est, mid, 50)[0]


def test_no_collisions_means_the_pass_rate_alone():
    e = np.eye(16, dtype=np.float32).reshape(2, 8, 16)  # orthogonal: nothing collides at 0.5
    ok = np.ones((2, 8), bool)
    ok[1, ::2] = False
    est = fit_capacity(["a", "b"], ok, e, 0.5, n_per_cell=100, n_boot=20)
    assert est["per_cell"]["a"]["observed_curve"] == list(range(1, 9))
    assert est["per_cell"]["b"]["observed_curve"] == [0, 1, 1, 2, 2, 3, 3, 4]
    np.testing.assert_allclose(est["candidates_needed"]["central"]["b"], 200, rtol=1e-6)
    assert reachable(est, 100, 200)["verdict"] == "likely"


# ------------------------------------------------------------------ on a generator (stubs)

class StubModel:
    """The latent model's interface as selection uses it: a 2-d projection written into w."""
    attributes_ = ["tone"]
    schema_ = {"tone": ["dark", "light"]}
    truncation_psi_ = 1.0
    noise_mode_ = "const"
    confidence = 0.6
    generator_hash_ = None

    def matching_cells(self, spec):
        return [0]

    def sample_projection(self, spec, n, rng, truncation=1.0):
        return rng.standard_normal((n, 2)) * truncation, np.zeros(n, int)

    def lift(self, S, W0):
        W = np.asarray(W0, np.float64).copy()
        W[:, :2] = S
        return W


class StubLabeller:
    schema = {"tone": ["dark", "light"]}

    def predict_proba(self, imgs):
        p = 1 / (1 + np.exp(-(imgs.reshape(len(imgs), -1).mean(1) - 128) / 4))
        return {"tone": np.stack([1 - p, p], 1)}

    def describe(self):
        return {"kind": "stub"}


class StubEmbedder:
    def __init__(self):
        self.P = np.random.default_rng(1).standard_normal((16 * 16 * 3, 8)).astype(np.float32)

    def embed(self, imgs):
        x = imgs.reshape(len(imgs), -1).astype(np.float32)
        e = (x - x.mean(1, keepdims=True)) @ self.P
        return e / np.linalg.norm(e, axis=1, keepdims=True)

    def describe(self):
        return {"kind": "stub"}


SPECS = [{"tone": "dark"}, {"tone": "light"}]


@pytest.fixture(scope="module")
def stub_world():
    import torch

    torch.set_num_threads(1)
    return StubModel(), make_generator(), StubLabeller(), StubEmbedder()


def test_estimate_is_deterministic_and_batch_independent(stub_world):
    model, G, lab, emb = stub_world
    kw = dict(n_candidates=40, seed=3, n_per_cell=10, n_boot=30, progress=False, log=lambda m: None)
    a = estimate_capacity(model, G, lab, emb, SPECS, 0.85, batch_size=64, **kw)
    b = estimate_capacity(model, G, lab, emb, SPECS, 0.85, batch_size=12, **kw)
    assert json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)
    assert sum(c["observed_accepted"] for c in a["per_cell"].values()) > 0
    assert 0 < a["per_cell"]["tone=light"]["pass_rate"] < 1


def test_candidates_are_selections_own(stub_world):
    """One cell: selection asked for k identities accepts exactly the first k the capacity run accepts."""
    model, G, lab, emb = stub_world
    names, ok, e = draw_candidates(model, G, lab, emb, SPECS[1:], 40, seed=5, batch_size=16, progress=False)
    curve = greedy_curves(names, ok, e, 0.85)[0]
    k = int(curve[-1])
    assert k >= 3
    ids = select_identities(model, G, lab, emb, SPECS[1:], k, 0.85, seed=5, budget=40 / k, batch_size=16,
                            progress=False, log=lambda m: None)
    first_k = np.flatnonzero(np.diff(np.concatenate([[0], curve])))[:k]
    assert ids.candidate.tolist() == first_k.tolist()
    np.testing.assert_array_equal(ids.embedding, e[0, first_k])


def test_cli_writes_json_plot_and_report(stub_world, tmp_path, monkeypatch):
    import synthface.dataset.writer as writer
    from synthface.cli import main

    monkeypatch.setattr(writer, "load_job", lambda *a, **k: stub_world)
    out = tmp_path / "cap"
    r = CliRunner().invoke(main, ["capacity", "--network", "stub", "--model", "m.synthface", "--separation", "0.85",
                                  "--candidates", "30", "--ids-per-cell", "5", "--identity-budget", "4",
                                  "--device", "cpu", "--out", str(out)])
    assert r.exit_code == 0, r.output
    est = json.loads((out / "capacity.json").read_text(), parse_constant=lambda c: pytest.fail(f"{c} in JSON"))
    assert est["cells"] == ["tone=dark", "tone=light"] and est["n_candidates"] == 30
    assert est["separation_source"] == {"threshold": 0.85, "kind": "given"}
    assert est["verdict"]["n_per_cell"] == 5 and est["verdict"]["candidates_per_cell"] == 20
    assert (out / "capacity.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    md = (out / "report.md").read_text()
    assert "![accepted vs candidates](capacity.png)" in md and "tone=light" in md
    assert "tone=dark: pass rate" in r.output


def test_cli_needs_a_threshold(tmp_path):
    from synthface.cli import main

    # a real checkpoint without reference faces: the FMR threshold has nothing to be measured on
    r = CliRunner().invoke(main, ["capacity", "--network", "ffhq.pkl", "--model", "m", "--out", str(tmp_path)])
    assert r.exit_code != 0 and "--reference-embeddings" in r.output and "--separation-quantile Q" in r.output
    r = CliRunner().invoke(main, ["capacity", "--network", "ffhq.pkl", "--model", "m", "--separation-quantile", "1.5",
                                  "--out", str(tmp_path)])
    assert r.exit_code == 2 and "--separation-quantile" in r.output and "0.0<x<1.0" in r.output
    assert "Traceback" not in r.output


def test_generate_refuses_a_request_clearly_out_of_reach_before_selecting(stub_world, tmp_path):
    """generate estimates the capacity first (from 50 identities per cell on) and refuses, with the
    figures, what the generator cannot supply; nothing of the selection is written."""
    from synthface.dataset import DatasetConfig, generate_dataset

    model, G, lab, emb = stub_world

    class Model(StubModel):
        projection = "stub"

    cfg = DatasetConfig(cells="all", ids_per_cell=60, images_per_id=2, separation=0.3, identity_budget=2.0,
                        batch_size=32)
    with pytest.raises(SynthfaceError, match="clearly out of reach") as err:
        generate_dataset(Model(), G, lab, emb, tmp_path / "ds", cfg, capacity_candidates=40, progress=False,
                         log=lambda m: None)
    assert "tone=dark" in str(err.value) and "candidates" in str(err.value)
    assert not (tmp_path / "ds" / "identities.npz").exists() and not (tmp_path / "ds" / "records").exists()
