"""`synthface train sensitivenets` and `synthface leakage` end to end on a tiny manifest dataset."""

import json

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from synthface.cli import main
from synthface.methods.dataset_jobs import attributes_from_cells
from synthface.errors import SynthfaceError
from synthface.methods import SensitiveNets


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """12 identities (2 per group x gender cell) x 3 images: each identity a noise texture, its images that
    texture plus a little fresh noise, so the world recogniser tells them apart."""
    root = tmp_path_factory.mktemp("ds")
    rng = np.random.default_rng(0)
    rows, ident = [], 0
    for g in (1, 2, 3):
        for gender in ("female", "male"):
            for _ in range(2):
                base = rng.integers(0, 256, (112, 112, 3))
                for k in range(3):
                    img = np.clip(base + rng.normal(0, 8, base.shape), 0, 255).astype(np.uint8)
                    path = f"imagefolder/{ident:05d}/{k:03d}.png"
                    (root / path).parent.mkdir(parents=True, exist_ok=True)
                    Image.fromarray(img).save(root / path)
                    rows.append({"path": path, "identity": ident, "cell": f"group=group{g},gender={gender}"})
                ident += 1
    (root / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root


def test_train_then_leakage_with_method(dataset, tmp_path):
    model = tmp_path / "m.sensitivenets"
    r = CliRunner().invoke(main, ["train", "sensitivenets", "--dataset", str(dataset), "--recognizer", "world",
                                  "--out", str(model), "--epochs", "2", "--batch-size", "12", "--detector-steps", "10"])
    assert r.exit_code == 0, r.output
    m = SensitiveNets.load(model)
    assert set(m.classes_) == {"group", "gender"} and len(m.history_) == 2
    assert json.loads(r.stdout[r.stdout.index("{"):])["epochs"] == 2
    assert any((tmp_path / "cache").iterdir())  # embeddings cached beside the model

    out = tmp_path / "leak"
    r = CliRunner().invoke(main, ["leakage", "--dataset", str(dataset), "--recognizer", "world", "--method",
                                  str(model), "--classifiers", "logreg", "--folds", "3", "--bootstrap", "20",
                                  "--out", str(out)])
    assert r.exit_code == 0, r.output
    rep = json.loads((out / "report.json").read_text())
    assert set(rep["results"]) == {"raw", "projected"}
    for res in rep["results"].values():
        assert set(res["attributes"]) == {"group", "gender"}
        assert res["identities"] == 12
    assert "after the method" in (out / "report.md").read_text()


def test_leakage_rejects_unknown_attribute(dataset, tmp_path):
    r = CliRunner().invoke(main, ["leakage", "--dataset", str(dataset), "--recognizer", "world", "--sensitive",
                                  "age", "--out", str(tmp_path / "x")])
    assert r.exit_code != 0 and "unknown sensitive attribute(s) age" in r.output


def test_attributes_from_cells():
    a = attributes_from_cells(["group=g1,gender=female", "group=g2,gender=male"])
    assert a["group"].tolist() == ["g1", "g2"] and a["gender"].tolist() == ["female", "male"]
    assert attributes_from_cells(["asian", "white"])["group"].tolist() == ["asian", "white"]
    with pytest.raises(SynthfaceError, match="do not all name"):
        attributes_from_cells(["group=g1,gender=female", "group=g2"])
