"""The SensitiveNets experiment (issue 15 item 5): its plumbing at toy size, with renderer people standing in
for the generator-made training set so the run stays well under a minute; and its configuration errors."""

import json

import numpy as np
import pytest
import torch

from synthface.errors import SynthfaceError
from synthface.experiments import EXPERIMENTS, get
from synthface.experiments import sensitivenets as S


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def test_registered_and_config_errors():
    assert "sensitivenets" in EXPERIMENTS and get("sensitivenets") is S.run
    with pytest.raises(SynthfaceError, match="no setting 'lamda'"):
        S.make_config(overrides={"lamda": 1})
    with pytest.raises(SynthfaceError, match="must be one of lams"):
        S.make_config(overrides={"lam": 2.0})
    with pytest.raises(SynthfaceError, match="SensitiveNets has no setting epoch"):
        S.make_config(overrides={"method": {"epoch": 3}})
    with pytest.raises(SynthfaceError, match="at least 2"):
        S.make_config(overrides={"bench_images": 1})
    with pytest.raises(SynthfaceError, match="20\\+ genuine pairs"):
        S.make_config(overrides={"bench_ids_per_cell": 5, "bench_images": 3})
    quick = S.make_config(quick=True, overrides={"method": {"lr": 0.01}})
    assert quick.ids_per_cell < S.SensitiveNetsExperimentConfig().ids_per_cell
    assert quick.method == {**S.QUICK["method"], "lr": 0.01}
    assert S.SensitiveNetsExperimentConfig().ids_per_cell >= 50 and S.SensitiveNetsExperimentConfig().images_per_id >= 8


def test_attributes_of_both_cell_spellings():
    a = S.attributes_of(["group=group2,gender=male", "group3/female"])
    assert a["group"].tolist() == ["group2", "group3"] and a["gender"].tolist() == ["male", "female"]


def _stand_in_data(cfg, data, log):
    """Renderer people in place of the generator-made training set (identities apart from the test's)."""
    from synthface.experiments.pretrain_data import _save_png, build_benchmark, cell_names, render_people
    from synthface.world import BALANCED, World

    bench = build_benchmark(S._pretrain_config(cfg), data / "benchmark", log)
    train = data / "train"
    if not (train / "manifest.jsonl").is_file():
        rows, names = [], cell_names()
        for c, i, crops in render_people(World(seed=0, distribution=BALANCED), 5_000_000,
                                         [cfg.ids_per_cell] * 6, cfg.images_per_id, 64):
            g, s = names[c].split("/")
            for k, im in enumerate(crops):
                _save_png(im, train / f"{i}/{k}.png")
                rows.append({"path": f"{i}/{k}.png", "identity": i, "cell": f"group={g},gender={s}"})
        (train / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return train, bench


def test_plumbing_toy_run(tmp_path, monkeypatch):
    monkeypatch.setattr(S, "build_data", _stand_in_data)
    over = {"ids_per_cell": 6, "images_per_id": 3, "bench_ids_per_cell": 6, "bench_images": 4, "lams": [0, 1],
            "n_boot": 10, "folds": 3, "classifiers": ["logreg"],
            "method": {"epochs": 3, "detector_steps": 20, "batch_size": 24},
            "pool_grid": [{"detector_widths": [0, 8], "reinit_every": 2}], "inlp": {"n_iterations": 3}}
    res = S.run(tmp_path, overrides=over, log=lambda m: None)
    for f in ("report.md", "report.html", "results.json", "tradeoff.png", "models/lam_1.sensitivenets",
              "tradeoff_curve.png", "models/leace.safetensors", "models/inlp.safetensors",
              "models/sn_diverse_leace_lam_1.sensitivenets"):
        assert (tmp_path / f).is_file(), f
    assert "data:image/png;base64," in (tmp_path / "report.html").read_text()
    saved = json.loads((tmp_path / "results.json").read_text())
    assert set(saved["runs"]) == {"0", "1"} and saved["info"]["test_identities"] == 36
    raw = saved["raw"]
    # the world recogniser's raw embeddings carry gender (renderer people, identity-disjoint probes)
    assert raw["leakage"]["attributes"]["gender"]["classifiers"]["logreg"]["accuracy"] > 0.7
    assert raw["verification"]["accuracy_mean"] > 0.8
    crit = saved["criteria"]
    assert crit["lam0_change_at_most_0.5_points"] == pytest.approx(
        saved["runs"]["0"]["verification"]["accuracy_mean"] - raw["verification"]["accuracy_mean"])
    assert crit["gender_leakage_at_most_60"] == max(
        c["accuracy"] for c in saved["runs"]["1"]["leakage"]["attributes"]["gender"]["classifiers"].values())
    assert set(crit["met"]) == {"raw_leakage_above_90", "gender_leakage_at_most_60", "group_leakage_at_most_43.3",
                                "verification_drop_at_most_3_points", "lam0_change_at_most_0.5_points"}
    v26 = saved["issue26"]
    assert set(v26["variants"]) == {"sn", "sn_diverse", "sn_diverse_leace"} and set(v26["baselines"]) == {"leace", "inlp"}
    sel = v26["selection"]
    # selection saw training identities only: 1 of 6 per cell held out, never the 36 test people
    assert sel["validation_identities"] == 6 and sel["fit_identities"] == 30
    for name, v in v26["variants"].items():
        assert v["settings"] in [c["settings"] for c in sel["variants"][name]["candidates"]]
        assert set(v["sweep"]) == {"0", "1"}
    # the issue-15 variant reuses the sweep above, the others are fitted with their chosen settings
    assert v26["variants"]["sn"]["sweep"]["1"] == saved["runs"]["1"]
    b = v26["baselines"]["leace"]
    assert b["check"]["verification_loss"] == pytest.approx(
        raw["verification"]["accuracy_mean"] - b["verification"]["accuracy_mean"])
    md = (tmp_path / "report.md").read_text()
    assert "## Issue 26" in md and "| LEACE |" in md and "tradeoff_curve.png" in md
    assert "Done-when checks" in md and "| gender | logreg |" in md
    # a second run into the same folder reuses the fitted models and scores the same
    again = S.run(tmp_path, overrides=over, log=lambda m: None)
    assert set(again["info"]["reused"]) == {"models/lam_0.sensitivenets", "models/lam_1.sensitivenets"}
    for k in ("accuracy_mean", "tar_at_fmr_1e-3_pooled", "accuracy_per_cell"):
        assert again["runs"]["1"]["verification"][k] == saved["runs"]["1"]["verification"][k]
    assert np.isclose(again["criteria"]["gender_leakage_at_most_60"], crit["gender_leakage_at_most_60"])


def test_verification_row_names_an_undefined_ser():
    v = {"fdr": 0.9, "accuracy_mean": 0.97, "tar_at_fmr_1e-3_pooled": 0.6, "accuracy_std": 0.02}
    assert "a cell at 100 %" in S._verif_row("raw", {**v, "ser": float("nan")})
    row = S._verif_row("raw", {**v, "ser": 2.5})
    assert "| 2.500 |" in row and "nan" not in row


def test_renderer_control_training_set(tmp_path):
    """train_source=renderer: balanced renderer people outside the test range, in a manifest embed() reads;
    built once, then reused."""
    cfg = S.make_config(overrides={"ids_per_cell": 5, "images_per_id": 2, "train_source": "renderer"})
    path = S.build_renderer_train(cfg, tmp_path / "rtrain", log=lambda m: None)
    rows = [json.loads(line) for line in (path / "manifest.jsonl").read_text().splitlines()]
    assert len(rows) == 60 and len({r["identity"] for r in rows}) == 30
    assert all(r["identity"] >= S.RENDERER_TRAIN_FIRST for r in rows) and all((path / r["path"]).is_file() for r in rows)
    sens = S.attributes_of([r["cell"] for r in rows])
    assert set(sens["gender"]) == {"female", "male"} and len(set(sens["group"])) == 3
    stamp = (path / "manifest.jsonl").stat().st_mtime_ns
    S.build_renderer_train(cfg, tmp_path / "rtrain", log=lambda m: None)
    assert (path / "manifest.jsonl").stat().st_mtime_ns == stamp
    with pytest.raises(SynthfaceError, match="train_source 'web'"):
        S.make_config(overrides={"train_source": "web"})
