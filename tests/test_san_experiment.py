"""The SAN experiment's auxiliary classifiers (issue 26): by default gender CNNs trained on renderer people
(the "real" faces) from their own identity range, three of them for the ensemble; the synthetic-face CNNs and
given specs stay reachable; no judge is among the seen networks. No rendering or training here: the trainer is
replaced by a recorder."""

import json
import shutil
from types import SimpleNamespace

import pytest

from synthface.errors import SynthfaceError
from synthface.experiments import san
from synthface.experiments.pretrain_data import BENCH_FIRST, CELL_STRIDE, REAL_FIRST
from synthface.experiments.sensitivenets import RENDERER_TRAIN_FIRST
from synthface.world.reference import COVERAGE_FIRST_IDENTITY


def test_defaults_are_renderer_auxiliaries_and_a_three_member_ensemble():
    cfg = san.make_config()
    assert cfg.aux_source == "renderer" and cfg.aux_classifiers == [] and cfg.members == 3
    assert (cfg.aux_ids_per_cell, cfg.aux_images, cfg.aux_epochs, cfg.size) == (150, 4, 10, 112)
    q = san.make_config(quick=True)
    assert q.aux_source == "renderer" and q.members == 3 and q.aux_ids_per_cell == 30
    assert san.make_config(overrides={"aux_source": "synthetic"}).aux_source == "synthetic"
    with pytest.raises(SynthfaceError, match="aux_source 'celeba'"):
        san.make_config(overrides={"aux_source": "celeba"})
    with pytest.raises(SynthfaceError, match="aux_ids_per_cell"):
        san.make_config(overrides={"aux_ids_per_cell": 0})


def test_auxiliary_backbone_reaches_the_trainer_and_is_checked_first(tmp_path):
    assert san.make_config().aux_backbone == "world-recognizer"
    cfg = san.make_config(overrides={"aux_backbone": "small"})
    acfg = san._aux_config(cfg, tmp_path / "aux", tmp_path / "run", 0)
    assert acfg.backbone == "small" and acfg.size == cfg.aux_size
    assert san._aux_config(san.make_config(), tmp_path, tmp_path, 0).backbone == "world-recognizer"
    with pytest.raises(SynthfaceError, match="aux_backbone 'resnet'"):
        san.make_config(overrides={"aux_backbone": "resnet"})


def test_auxiliary_people_are_a_range_of_their_own():
    """Identities AUX_FIRST + cell * CELL_STRIDE + i: the largest allowed per-cell count stays inside
    [AUX_FIRST, next range), apart from the test people and every other experiment's renderer people."""
    lo, hi = san.AUX_FIRST, san.AUX_FIRST + 5 * CELL_STRIDE + 100_000
    for first in (san.TEST_FIRST, REAL_FIRST, BENCH_FIRST, RENDERER_TRAIN_FIRST):
        assert first + 6 * CELL_STRIDE <= lo or first >= hi
    assert hi <= COVERAGE_FIRST_IDENTITY


class _View:
    def __init__(self, rows):
        self.base = SimpleNamespace(rows_=rows)
        self.epochs = []

    def set_epoch(self, e):
        self.epochs.append(e)

    def __getitem__(self, i):
        return i


def test_oversampler_reads_the_group_from_the_cell_when_there_is_no_group_column():
    rows = [{"cell": "group1/female"}, {"cell": "group2/male"}, {"cell": "group1/male"},
            {"group": "group2", "cell": "group2/female"}]
    view = _View(rows)
    over, info = san._oversampler("group1")(view)
    assert [over[i] for i in range(len(over))] == [0, 0, 0, 1, 2, 2, 2, 3]
    assert info == {"scheme": "oversample group1 x3"}
    over.set_epoch(4)
    assert view.epochs == [4]


def _fake_trainer(monkeypatch, calls):
    import synthface.train.attribute as attribute

    def fake(acfg, weigh=None, log=None):
        calls.append((acfg, weigh))
        from pathlib import Path
        Path(acfg.out).mkdir(parents=True, exist_ok=True)
        (Path(acfg.out) / "results.json").write_text(json.dumps({"val_accuracy": 0.9 + 0.01 * acfg.seed}))
        return {}
    monkeypatch.setattr(attribute, "train_attribute", fake)


def test_train_aux_trains_three_differing_classifiers_on_the_given_set_and_reuses_them(tmp_path, monkeypatch):
    calls = []
    _fake_trainer(monkeypatch, calls)
    cfg = san.make_config(quick=True)
    aux = san.train_aux(cfg, tmp_path / "aux-data", tmp_path / "runs", log=lambda m: None)
    assert [a["spec"] for a in aux] == [str(tmp_path / "runs" / f"aux-renderer{k}") for k in range(3)]
    assert [a["source"] for a in aux] == ["renderer"] * 3 and aux[2]["val_accuracy"] == pytest.approx(0.92)
    assert [c.data for c, _ in calls] == [str(tmp_path / "aux-data")] * 3
    assert [(c.seed, c.augment, w is not None) for c, w in calls] == [(0, True, False), (1, False, False),
                                                                      (2, True, True)]
    assert all(c.task == "gender" and c.size == cfg.aux_size and c.epochs == cfg.aux_epochs for c, _ in calls)
    san.train_aux(cfg, tmp_path / "aux-data", tmp_path / "runs", log=lambda m: None)
    assert len(calls) == 3                                  # same settings: reused
    shutil.copytree(tmp_path / "runs", tmp_path / "copy" / "runs")
    moved = san.train_aux(cfg, tmp_path / "copy" / "aux-data", tmp_path / "copy" / "runs", log=lambda m: None)
    assert len(calls) == 3 and moved[0]["spec"] == str(tmp_path / "copy" / "runs" / "aux-renderer0")  # a copy too
    more = san.make_config(quick=True, overrides={"aux_epochs": 7})
    san.train_aux(more, tmp_path / "aux-data", tmp_path / "runs", log=lambda m: None)
    assert len(calls) == 6 and calls[-1][0].epochs == 7     # other settings: trained again
    syn = san.make_config(quick=True, overrides={"aux_source": "synthetic", "members": 1})
    a = san.train_aux(syn, tmp_path / "train", tmp_path / "runs", log=lambda m: None)
    assert a[0]["spec"].endswith("aux-synthetic0") and calls[-1][0].data == str(tmp_path / "train")
    given = san.make_config(overrides={"aux_classifiers": ["world-attributes"]})
    assert san.train_aux(given, tmp_path, tmp_path / "runs", log=lambda m: None) == [
        {"spec": "world-attributes", "variant": "given", "val_accuracy": None}]
    assert len(calls) == 7


def test_default_auxiliaries_leave_every_judge_unseen(tmp_path):
    classifiers, recognisers = san.judges()
    aux = [{"spec": str(tmp_path / f"aux-renderer{k}"), "variant": "v", "source": "renderer"} for k in range(3)]
    assert not any(san.seen(c, aux) for c in classifiers) and len(classifiers) == 4
    assert san.seen(aux[1]["spec"], aux)
    line = san._aux_line(0, {**aux[0], "val_accuracy": 0.95}, {"aux_ids_per_cell": 30, "aux_images": 4})
    assert "180 renderer people x 4 images" in line and "7,000,000+" in line and "95.0 %" in line
    assert "small CNN" in line  # configs written before aux_backbone existed
    assert "residual" in san._aux_line(0, {**aux[0], "val_accuracy": 0.95}, {"aux_ids_per_cell": 30, "aux_images": 4,
                                                                             "aux_backbone": "world-recognizer"})
    assert "synthetic train set" in san._aux_line(0, {"spec": "r", "variant": "v", "val_accuracy": 0.5}, {})


def test_the_balanced_training_set_holds_ids_per_cell_identities_per_cell(tmp_path, monkeypatch):
    """SAN asks the pretrain builder for set b alone: ids_per_cell identities per cell (scale 1), never
    pretrain's 5x (the bug between b618866 and a7305f0)."""
    from synthface.experiments import pretrain_data
    asked = []

    def stop(cfg, G, path, log, scale=1):
        asked.append((cfg.ids_per_cell, scale))
        raise StopIteration

    monkeypatch.setattr(pretrain_data, "build_balanced", stop)
    with pytest.raises(StopIteration):
        san.run(tmp_path, quick=True, log=lambda m: None)
    assert asked == [(10, 1)]



def test_embedding_probe_learns_on_the_auxiliary_people_and_is_reused(tmp_path):
    """The embedding term's probe: off by default; else a logistic regression on a recogniser's descriptors of
    the auxiliaries' renderer people (the SAN's matcher, or one trained here on those people), kept and
    reused; its held-out people's gender is read above chance."""
    assert san.make_config().embedding_weight == 0.0 and san.make_config().embedding_matcher == "aux"
    assert san.embedding_probe(san.make_config(), tmp_path, tmp_path, print) is None
    base = {"embedding_weight": 1.0, "aux_ids_per_cell": 30, "aux_images": 2, "size": 64}
    cfg = san.make_config(overrides={**base, "embedding_matcher": "matcher"})
    data = san.build_aux_set(cfg, tmp_path / "aux", lambda m: None)
    logs = []
    probe = san.embedding_probe(cfg, data, tmp_path, logs.append)
    assert probe["matcher"] == "world-recognizer" and probe["images"] == 360
    assert len(probe["coef"]) == 128  # the world recogniser's descriptor
    assert probe["held_out_accuracy"] > 0.55 and "held-out accuracy" in logs[0]
    assert san.embedding_probe(cfg, data, tmp_path, logs.append) == probe and len(logs) == 1  # reused
    assert san._san_params(cfg, 0, "x")["embedding_weight"] == 1.0
    # "aux": a recogniser trained on the auxiliaries' people reads the descriptors instead
    runs = tmp_path / "runs"
    cfg = san.make_config(overrides={**base, "aux_recognizer_epochs": 1})
    probe = san.embedding_probe(cfg, data, runs, logs.append)
    assert probe["matcher"] == f"torch:{runs / 'aux-recognizer' / 'backbone.safetensors'}"
    assert len(probe["coef"]) == 128 and (runs / "aux-recognizer" / "aux_settings.json").is_file()
    assert "auxiliary recogniser" in logs[1] and "held-out accuracy" in logs[2]
    # a copied experiment folder reuses both, and the probe names the copy's recogniser
    shutil.copytree(tmp_path / "aux", tmp_path / "copy" / "aux")
    shutil.copytree(runs, tmp_path / "copy" / "runs")
    again = san.embedding_probe(cfg, tmp_path / "copy" / "aux", tmp_path / "copy" / "runs", logs.append)
    assert len(logs) == 3 and again["coef"] == probe["coef"]
    assert again["matcher"] == f"torch:{tmp_path / 'copy' / 'runs' / 'aux-recognizer' / 'backbone.safetensors'}"
