"""`synthface experiment cid` plumbing (issue 16, item 5) on a toy size: data with the intended
bias, weights per method, the report files, and the experiment registry's command line."""

import json

import numpy as np
import pytest
from click.testing import CliRunner

from synthface.cli import main
from synthface.experiments import EXPERIMENTS, get, parse_overrides
from synthface.experiments.cid import CIDExperimentConfig, acceptance, build_data, method_weights

TOY = ["--set", "n_train=48", "--set", "pool_people=30", "--set", "test_people=6", "--set", "test_images=4",
       "--set", "calib_people=4", "--set", "calib_images=2", "--set", "epochs=1", "--set", "rhos=[0.0,0.9]",
       "--set", "seeds=[0]", "--set", "width=4", "--set", "embedding_dim=8", "--set", "batch=16",
       "--set", "methods=[\"erm\",\"cid\",\"oracle\"]"]


def test_registry_and_overrides():
    assert "cid" in EXPERIMENTS and callable(get("cid"))
    assert parse_overrides(["a=1", "b=[0,1]", "c=text"]) == {"a": 1, "b": [0, 1], "c": "text"}
    from synthface.errors import SynthfaceError
    with pytest.raises(SynthfaceError, match="KEY=VALUE"):
        parse_overrides(["oops"])
    with pytest.raises(SynthfaceError, match="unknown experiment"):
        get("nope")
    r = CliRunner().invoke(main, ["experiment", "cid", "--out", "x", "--set", "colour=3"])
    assert r.exit_code != 0 and "no setting 'colour'" in r.output


def test_bias_injected_data_and_weights():
    cfg = CIDExperimentConfig(n_train=40, pool_people=24, test_people=4, test_images=4, calib_people=2,
                              calib_images=2, rhos=[0.0, 0.9])
    data = build_data(cfg, log=lambda s: None)
    pool, test = data["pool"], data["test"]
    from synthface.world import World
    # the dominant people all have the glasses habit and give smiling images only
    assert World(0).identities(pool["dominant"].tolist())["glasses_habit"].all()
    dom = np.isin(pool["identity"], pool["dominant"])
    assert (pool["smile"][dom] == 1).all() and (pool["identity"] < 1_000_000).all()
    # test people are others, each with half smiling images
    assert not set(test["identity"]) & set(pool["identity"])
    for v in np.unique(test["identity"]):
        assert test["smile"][test["identity"] == v].mean() == 0.5
    y = np.r_[np.ones(6), np.zeros(4)].astype(int)
    ident = np.r_[np.zeros(5), 1, 2, 3, 4, 5]
    w, _ = method_weights("oracle", y, ident, None, 0.3, 10.0)
    np.testing.assert_allclose(w[:5] * 5, w[5])
    emb = np.eye(10)[[0, 0, 0, 0, 0, 1, 2, 3, 4, 5]].astype(float)
    w, extra = method_weights("cid", y, ident, emb, 0.3, 10.0)
    np.testing.assert_allclose(w[0] / w[5], 0.2, rtol=0.01)  # 5 duplicates: 1/5 of a singleton each
    assert extra["bandwidth"] == [0.3, 0.3]


def test_acceptance_reads_the_aggregate():
    cfg = CIDExperimentConfig(rhos=[0.0, 0.5, 0.9])
    k = "worst_10pct_identity_accuracy"
    agg = {"erm": {"0.0": {k: [0.8, 0.01]}, "0.5": {k: [0.6, 0.02]}, "0.9": {k: [0.5, 0.02]}},
           "cid": {"0.0": {k: [0.8, 0.01]}, "0.5": {k: [0.7, 0.03]}, "0.9": {k: [0.51, 0.02]}}}
    acc = acceptance(agg, cfg)
    assert acc["per_rho"]["0.5"]["beyond_spread"] and not acc["per_rho"]["0.9"]["beyond_spread"]
    assert not acc["cid_beats_erm_at_rho_ge_0.5"] and acc["cid_drop_smaller_than_erm"]


@pytest.fixture(scope="module")
def toy_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("cid") / "s0"
    r = CliRunner().invoke(main, ["experiment", "cid", "--out", str(out), "--quick", *TOY])
    assert r.exit_code == 0, r.output
    return out


def test_experiment_cid_cli_writes_the_report(toy_run):
    out = toy_run
    res = json.loads((out / "results.json").read_text())
    assert len(res["runs"]) == 2 * 3 and set(res["aggregate"]) == {"erm", "cid", "oracle"}
    assert res["config"]["epochs"] == 1 and res["info"]["bandwidth"] > 0
    shares = {(r["method"], r["rho"]): r["dominant_weight_share"] for r in res["runs"] if r["seed"] == 0}
    assert shares[("erm", 0.0)] == 0.0 and shares[("erm", 0.9)] == pytest.approx(0.9, abs=0.05)
    assert shares[("oracle", 0.9)] < shares[("erm", 0.9)]
    md = (out / "report.md").read_text()
    assert "worst-10 % identity accuracy" in md and "rho 0.9" in md and "--quick" in md
    html = (out / "report.html").read_text()
    assert "data:image/png;base64," in html and "<table>" in html


def test_combine_pools_seed_split_runs(tmp_path, toy_run):
    from synthface.experiments.cid import combine

    out = toy_run
    res = json.loads((out / "results.json").read_text())
    assert set(res["weight_diagnostics"]) == {"erm", "cid", "cid-default", "oracle"}
    wd = res["weight_diagnostics"]
    assert wd["erm"]["0.9"]["dominant_share"][0] > wd["oracle"]["0.9"]["dominant_share"][0]
    # a second "process" that ran seed 1 (faked from seed 0's rows, accuracies shifted)
    other = json.loads(json.dumps(res))
    other["config"]["seeds"] = [1]
    for row in other["runs"]:
        row["seed"], row["accuracy"] = 1, row["accuracy"] + 0.1
    (tmp_path / "s1").mkdir()
    (tmp_path / "s1" / "results.json").write_text(json.dumps(other))
    both = combine([out, tmp_path / "s1"], tmp_path / "both", log=lambda s: None)
    assert both["config"]["seeds"] == [0, 1] and len(both["runs"]) == 2 * len(res["runs"])
    mean, std = both["aggregate"]["erm"]["0.0"]["accuracy"]
    assert mean == pytest.approx(res["aggregate"]["erm"]["0.0"]["accuracy"][0] + 0.05)
    assert std == pytest.approx(0.1 / np.sqrt(2))
    assert (tmp_path / "both" / "report.html").is_file()
