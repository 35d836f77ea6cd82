"""The ONNX-classifier labeller: sidecar contract and clear errors."""

import json
import shutil

import numpy as np
import pytest

from synthface.errors import SynthfaceError
from synthface.labelling import OnnxClassifier
from synthface.world.assets import attribute_classifier_path


@pytest.fixture
def copy(tmp_path):
    src = attribute_classifier_path()
    dst = tmp_path / "clf.onnx"
    shutil.copyfile(src, dst)
    shutil.copyfile(src.with_suffix(".json"), dst.with_suffix(".json"))
    return dst


def _edit(path, fn):
    side = path.with_suffix(".json")
    meta = json.loads(side.read_text())
    fn(meta)
    side.write_text(json.dumps(meta))


def test_missing_model_or_sidecar(tmp_path, copy):
    with pytest.raises(SynthfaceError, match="does not exist"):
        OnnxClassifier(tmp_path / "nope.onnx")
    copy.with_suffix(".json").unlink()
    with pytest.raises(SynthfaceError, match="needs a JSON sidecar"):
        OnnxClassifier(copy)


@pytest.mark.parametrize("edit,needle", [
    (lambda m: m["attributes"]["group"].update(slice=[0, 2]), "has 3 classes but slice 0:2"),
    (lambda m: m["input"].update(crop="fancy"), "input.crop must be one of"),
    (lambda m: m.pop("attributes"), "malformed sidecar"),
    (lambda m: m.update(output="nope"), "is not in the model's outputs"),
])
def test_bad_sidecars_are_named(copy, edit, needle):
    _edit(copy, edit)
    with pytest.raises(SynthfaceError, match=needle):
        OnnxClassifier(copy)


def test_probabilities_follow_the_sidecar_and_batching(copy):
    clf = OnnxClassifier(copy, batch_size=3)
    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 255, (7, 64, 64, 3), dtype=np.uint8)
    p = clf.predict_proba(imgs)
    assert set(p) == {"group", "gender"} and p["group"].shape == (7, 3) and p["gender"].shape == (7, 2)
    whole = OnnxClassifier(copy, batch_size=64).predict_proba(imgs)
    np.testing.assert_allclose(p["group"], whole["group"], atol=1e-5)
    # BGR models get channels swapped: a different answer on colourful input
    _edit(copy, lambda m: m["input"].update(channels="BGR"))
    swapped = OnnxClassifier(copy).predict_proba(imgs)
    assert not np.allclose(swapped["group"], whole["group"], atol=1e-3)
