"""The shipped demo-world models: they load through insightface's own loaders, work in its
code paths, and label held-out renderer faces correctly."""

import warnings

import numpy as np
import pytest

from synthface.align import FFHQ_FACE_BOX
from synthface.generator import load_generator
from synthface.labelling import OnnxClassifier
from synthface.world import GENDERS, GROUPS, World, take
from synthface.world.assets import attribute_classifier_path, audit_dir, generator_path, pack_dir

insightface = pytest.importorskip("insightface")
from insightface.app.common import Face  # noqa: E402
from insightface.model_zoo import get_model  # noqa: E402

CPU = ["CPUExecutionProvider"]


@pytest.fixture(scope="module")
def held_out():
    """2 images of each of 60 identities no model was trained on (balanced world)."""
    w = World(seed=0)
    ident = w.identities(range(950_000, 950_060))
    rows = np.repeat(np.arange(60), 2)
    reps = take(ident, rows)
    imgs, lms = w.render(reps, np.tile([0, 1], 60), size=64, return_landmarks=True)
    return reps, imgs, lms


def _best_accuracy(scores, same):
    s = np.sort(scores)
    return max(((scores >= t) == same).mean() for t in s)


@pytest.mark.parametrize("pack", ["pack", "audit"])
def test_recognisers_load_as_insightface_arcface_and_verify(held_out, pack):
    reps, imgs, lms = held_out
    root = pack_dir() if pack == "pack" else audit_dir()
    model = get_model(str(root / "recognition.onnx"), providers=CPU)
    assert type(model).__name__ == "ArcFaceONNX" and model.taskname == "recognition"
    model.prepare(ctx_id=-1)
    emb = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # scikit-image deprecation inside insightface's norm_crop
        for im, lm in zip(imgs, lms):
            # insightface's own path: 5-point norm_crop from the face's landmarks, then get_feat
            emb.append(model.get(np.ascontiguousarray(im[..., ::-1]), Face(kps=lm.astype(np.float32))))
    emb = np.stack(emb)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    a, b = emb[0::2], emb[1::2]
    genuine = (a * b).sum(1)
    impostor = (a * np.roll(b, 1, axis=0)).sum(1)
    scores = np.concatenate([genuine, impostor])
    same = np.r_[np.ones(60, bool), np.zeros(60, bool)]
    assert genuine.mean() > impostor.mean() + 0.3
    assert _best_accuracy(scores, same) >= 0.9


def test_genderage_loads_as_insightface_attribute_and_predicts(held_out):
    reps, imgs, _ = held_out
    model = get_model(str(pack_dir() / "genderage.onnx"), providers=CPU)
    assert type(model).__name__ == "Attribute" and model.taskname == "genderage"
    model.prepare(ctx_id=-1)
    gender, age = [], []
    for im in imgs:
        face = Face(bbox=np.array(FFHQ_FACE_BOX, np.float32) * 64)
        g, a = model.get(np.ascontiguousarray(im[..., ::-1]), face)  # insightface's box crop and decoding
        gender.append(g), age.append(a)
        assert face.sex in ("F", "M")
    assert (np.array(gender) == reps["gender"]).mean() >= 0.9
    assert np.abs(np.array(age) - reps["age"]).mean() < 12


@pytest.mark.parametrize("which", ["main", "audit"])
def test_attribute_classifiers_with_sidecar(held_out, which):
    reps, imgs, _ = held_out
    path = attribute_classifier_path() if which == "main" else audit_dir() / "attributes.onnx"
    clf = OnnxClassifier(path)
    assert clf.classes("group") == list(GROUPS) and clf.classes("gender") == list(GENDERS)
    p = clf.predict_proba(imgs)
    assert p["group"].shape == (120, 3)
    np.testing.assert_allclose(p["gender"].sum(1), 1, atol=1e-5)
    assert (p["group"].argmax(1) == reps["group"]).mean() >= 0.9
    assert (p["gender"].argmax(1) == reps["gender"]).mean() >= 0.9


def test_shipped_generator_loads_and_generates():
    import torch

    G = load_generator(generator_path())
    assert G.img_resolution == 64 and G.c_dim == 0
    img = G(torch.randn(2, G.z_dim), None, noise_mode="const")
    assert img.shape == (2, 3, 64, 64) and torch.isfinite(img).all()


def test_face_analysis_runs_end_to_end_on_the_demo_pack(held_out, tmp_path):
    """insightface's FaceAnalysis: detector -> 5 points -> norm_crop -> embedding, genderage."""
    from insightface.app import FaceAnalysis

    pack = tmp_path / "models" / "demo"  # the {root}/models/{name} layout every insightface version reads
    pack.mkdir(parents=True)
    for f in pack_dir().glob("*.onnx"):
        (pack / f.name).symlink_to(f)
    app = FaceAnalysis(name="demo", root=str(tmp_path), providers=CPU)
    assert set(app.models) == {"detection", "recognition", "genderage"}
    app.prepare(ctx_id=-1, det_size=(64, 64))
    reps, imgs, lms = held_out
    found, gender_ok, emb, kps_err = 0, 0, [], []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for i, im in enumerate(imgs[:40]):
            faces = app.get(np.ascontiguousarray(im[..., ::-1]), max_num=1)
            if len(faces) != 1:
                emb.append(None)
                continue
            f = faces[0]
            found += 1
            gender_ok += int(f.gender == reps["gender"][i])
            kps_err.append(np.linalg.norm(f.kps - lms[i], axis=1).mean() / np.linalg.norm(lms[i][1] - lms[i][0]))
            emb.append(f.normed_embedding)
    assert found >= 36 and gender_ok >= 0.9 * found
    assert np.median(kps_err) < 0.25  # key points within a quarter of the eye distance
    pairs = [(emb[2 * k], emb[2 * k + 1], emb[(2 * k + 3) % 40]) for k in range(20)
             if emb[2 * k] is not None and emb[2 * k + 1] is not None and emb[(2 * k + 3) % 40] is not None]
    genuine = np.mean([a @ b for a, b, _ in pairs])
    impostor = np.mean([a @ c for a, _, c in pairs])
    assert genuine > impostor + 0.3


def test_expected_calibration_error_tells_calibrated_from_overconfident():
    from synthface.world.models import expected_calibration_error

    rng = np.random.default_rng(0)
    conf = rng.uniform(0.5, 1.0, 20000)
    right = rng.random(20000) < conf           # right exactly as often as it claims
    probs = np.stack([conf, 1 - conf], 1)
    labels = np.where(right, 0, 1)
    assert expected_calibration_error(probs, labels) < 0.02
    sharp = np.stack([np.full(20000, 0.99), np.full(20000, 0.01)], 1)  # claims 99 %, right ~75 %
    assert abs(expected_calibration_error(sharp, labels) - (0.99 - right.mean())) < 1e-9


def test_shipped_attribute_classifier_is_accurate_and_calibrated_on_held_out_identities():
    """The pipeline keeps faces by thresholding these probabilities, so they must mean what they say."""
    from synthface.world.models import expected_calibration_error

    w = World(seed=0)
    ident = w.identities(range(960_000, 960_400))  # no model was trained or measured on these
    imgs = w.render(ident, [0] * 400, size=64)
    p = OnnxClassifier(attribute_classifier_path()).predict_proba(imgs)
    for name in ("group", "gender"):
        truth = np.asarray(ident[name])
        assert (p[name].argmax(1) == truth).mean() >= 0.97, name
        assert expected_calibration_error(p[name], truth) < 0.03, name


def test_pack_docs_name_the_det_size_the_detector_needs():
    """At insightface's usual det_size 640 the small detector finds only false faces (measured in
    metrics.json); the pack's README and card must say to use 64."""
    import json

    m = json.loads((pack_dir().parent / "metrics.json").read_text())["detector"]
    assert m["ffhq_aligned_64px"]["detection_rate"] > 0.98
    assert m["ffhq_aligned_64px_in_640_canvas"]["extra_detections_per_image"] > 50
    for doc in (pack_dir().parent / "README.md", pack_dir().parent / "cards" / "detector.md"):
        assert "det_size=(64, 64)" in doc.read_text() and "640" in doc.read_text()
