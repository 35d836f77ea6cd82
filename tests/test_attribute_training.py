"""Issue 16, items 2-4: per-image smile/glasses labels of rendered worlds, `synthface train attribute`
(erm / cid / oracle weights, loss or sampler), its ONNX export as a labeller, and
`synthface evaluate-attribute`."""

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from synthface.cli import main
from synthface.world import World, take
from synthface.world.dataset import SMILE_THRESHOLD, image_labels, write_image_folder


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    root = tmp_path_factory.mktemp("attr") / "faces"
    return write_image_folder(World(2), root, 10, 4, size=32, per_image_labels=True, log=lambda s: None)


def test_image_labels_are_the_renderers_draws_and_default_output_is_unchanged(tmp_path, rendered):
    w = World(2)
    ident = w.identities(range(6))
    rows, j = np.repeat(np.arange(6), 3), np.tile(np.arange(3), 6)
    lab = image_labels(w, take(ident, rows), j)
    q = w.nuisance(take(ident, rows), j)
    np.testing.assert_array_equal(lab["smile"], (q["smile"] > SMILE_THRESHOLD).astype(int))
    np.testing.assert_array_equal(lab["glasses"], q["glasses"].astype(int))
    rows_ = [json.loads(x) for x in (rendered / "labels.jsonl").read_text().splitlines()]
    assert {"smile", "smile_score", "glasses"} <= set(rows_[0])
    first = rows_[5]  # identity 1, image 1
    one = image_labels(w, w.identities([1]), [1])
    assert first["identity"] == 1 and first["smile"] == int(one["smile"][0])
    assert first["glasses"] == int(one["glasses"][0])
    # without the flag the file holds exactly the old columns (byte-identical to before)
    plain = write_image_folder(World(2), tmp_path / "plain", 2, 2, size=32, log=lambda s: None)
    line = json.loads((plain / "labels.jsonl").read_text().splitlines()[0])
    assert list(line) == ["file", "identity", "group", "gender", "age"]
    # glasses go with the person: habit wearers wear them far more often
    many = w.identities(range(300))
    g = image_labels(w, take(many, np.repeat(np.arange(300), 4)), np.tile(np.arange(4), 300))["glasses"]
    habit = np.repeat(many["glasses_habit"], 4)
    assert g[habit].mean() > 0.6 and g[~habit].mean() < 0.15


def test_weighted_objective_is_the_mean_of_weighted_losses():
    from synthface.train.attribute import WeightedObjective

    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 2 * 2, 2))
    x, y = torch.randn(4, 3, 2, 2), torch.tensor([0, 1, 1, 0])
    w = torch.tensor([0.0, 2.0, 1.0, 1.0])
    loss, _ = WeightedObjective(net)({"image": x, "label": y, "weight": w})
    ref = (torch.nn.functional.cross_entropy(net(x), y, reduction="none") * w).sum() / 4
    assert torch.allclose(loss, ref)
    plain, _ = WeightedObjective(net)({"image": x, "label": y})
    assert torch.allclose(plain, torch.nn.functional.cross_entropy(net(x), y))


@pytest.mark.parametrize("weights,weighting", [("oracle", "sampler"), ("cid", "loss")])
def test_train_attribute_cli_exports_a_labeller(tmp_path, rendered, weights, weighting):
    out = tmp_path / "run"
    args = ["train", "attribute", "--data", str(rendered), "--task", "smile", "--out", str(out), "--weights", weights,
            "--weighting", weighting, "--epochs", "1", "--batch", "8", "--width", "4", "--embedding-dim", "8",
            "--size", "32", "--held-out", "0.2", "--device", "cpu"]
    if weights == "cid":
        args += ["--cid-bandwidth", "0.3"]
    else:  # the network looks at part of the face; the ONNX graph still takes all of it
        args += ["--region", "0.375,0.9375,0.25,0.75"]
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 0, r.output
    res = json.loads((out / "results.json").read_text())
    assert res["weights"]["scheme"] == weights and res["classes"] == ["0", "1"]
    assert res["data"]["train_images"] == 32 and res["steps"] == 4
    if weights == "cid":
        assert res["weights"]["bandwidth_per_class"] == [0.3, 0.3]
        assert all(v["max_over_min"] > 1.0 for v in res["weights"]["per_class"].values())
    side = json.loads((out / "model.json").read_text())
    assert side["attributes"] == {"smile": {"classes": ["0", "1"], "slice": [0, 2]}}
    # the ONNX labeller gives the torch model's logits on the same images
    from synthface.labelling.registry import load_labeller
    from synthface.train.attribute import load_attribute_model
    from synthface.train.data import FaceDataset

    lab = load_labeller(f"onnx:{out / 'model.onnx'}")
    ds = FaceDataset(rendered, labels=("smile",), size=32)
    imgs = np.stack([ds.image(i) for i in range(6)])
    model, desc = load_attribute_model(out)
    assert desc["task"] == "smile" and (desc["region"] is None) == (weights == "cid")
    with torch.no_grad():
        ref = torch.softmax(model(torch.stack([ds[i]["image"] for i in range(6)])), 1).numpy()
    np.testing.assert_allclose(lab.predict_proba(imgs)["smile"], ref, atol=1e-4)


def test_evaluate_attribute_cli(tmp_path, rendered):
    from synthface.train.attribute import build_attribute_model, export_attribute

    torch.manual_seed(0)
    model = build_attribute_model("small", 2, embedding_dim=8, width=4, size=32).eval()
    export_attribute(model, tmp_path / "m", "smile", ["0", "1"], size=32)
    r = CliRunner().invoke(main, ["evaluate-attribute", "--model", str(tmp_path / "m"), "--dataset", str(rendered),
                                  "--groups", "gender", "--out", str(tmp_path / "ev")])
    assert r.exit_code == 0, r.output
    res = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert res["n_images"] == 40 and res["n_identities"] == 10 and len(res["per_identity"]) == 10
    conf = res["confusion"]
    assert sum(sum(v.values()) for v in conf.values()) == 40
    assert res["accuracy"] == pytest.approx((conf["0"]["0"] + conf["1"]["1"]) / 40)
    assert res["identity_accuracy_mean"] == pytest.approx(np.mean(list(res["per_identity"].values())))
    assert set(res["tpr_by_group"]) <= {"female", "male"}
    # a task the model does not predict, and a dataset without the labels
    bad = CliRunner().invoke(main, ["evaluate-attribute", "--model", str(tmp_path / "m"), "--dataset", str(rendered),
                                    "--task", "glasses"])
    assert bad.exit_code != 0 and "does not predict 'glasses'" in bad.output


def test_train_attribute_bad_task(tmp_path, rendered):
    r = CliRunner().invoke(main, ["train", "attribute", "--data", str(rendered), "--task", "age", "--out",
                                  str(tmp_path / "x"), "--epochs", "1", "--batch", "8", "--size", "32"])
    assert r.exit_code != 0 and "categorical" in r.output
    r = CliRunner().invoke(main, ["train", "attribute", "--data", str(rendered), "--task", "mood", "--out",
                                  str(tmp_path / "y"), "--epochs", "1", "--batch", "8", "--size", "32"])
    assert r.exit_code != 0 and "no 'mood' label" in r.output
