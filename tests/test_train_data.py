"""FaceDataset on each source format, and the recognition trainer end to end on a tiny
synthface-format dataset of rendered demo-world identities."""

import csv
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from synthface.align import arcface_crop
from synthface.dataset.recordio import write_rec
from synthface.errors import SynthfaceError
from synthface.train.data import FaceDataset
from synthface.world.renderer import GENDERS, GROUPS
from synthface.world.world import World, take

IDS, K = 12, 4


def write_tiny_synthface(root: Path, ids: int = IDS, k: int = K, seed: int = 0) -> Path:
    """The layout `synthface generate` + `merge` write: imagefolder/<id>/<k>.png (112x112 ArcFace
    crops), manifest.jsonl and rec/train.rec + .idx (identity order)."""
    w = World(seed)
    ident = w.identities(list(range(ids)))
    reps = take(ident, np.repeat(np.arange(ids), k))
    imgs = w.render(reps, np.tile(np.arange(k), ids), 64)
    crops = arcface_crop(imgs, 112).round().clamp(0, 255).byte().permute(0, 2, 3, 1).numpy()
    lines, encoded = [], []
    for n, c in enumerate(crops):
        i, j = divmod(n, k)
        rel = f"imagefolder/{i:06d}/{j:03d}.png"
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(c).save(root / rel)
        g, s = GROUPS[reps["group"][n]], GENDERS[reps["gender"][n]]
        lines.append(json.dumps({"path": rel, "identity": i, "image_index": j, "cell": f"group={g},gender={s}",
                                 "group": g, "gender": s, "probs": {"group": [0.1, 0.1, 0.8]}, "psi": 1.0}))
        buf = io.BytesIO()
        Image.fromarray(c).save(buf, format="JPEG", quality=95)
        encoded.append((i, buf.getvalue()))
    (root / "manifest.jsonl").write_text("\n".join(lines) + "\n")
    (root / "rec").mkdir()
    write_rec(root / "rec" / "train.rec", root / "rec" / "train.idx", iter(encoded), ids * k,
              [(1 + i * k, 1 + (i + 1) * k) for i in range(ids)])
    return root


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return write_tiny_synthface(tmp_path_factory.mktemp("tiny"))


def test_synthface_manifest_and_recordio_agree(tiny):
    a = FaceDataset(tiny, labels=("cell", "group", "gender"))
    b = FaceDataset(tiny, labels=("cell", "group", "gender"), format="rec")
    assert (a.format_, b.format_) == ("synthface", "rec")
    assert len(a) == len(b) == IDS * K and a.num_classes == b.num_classes == IDS
    for name in ("identity", "cell", "group", "gender"):
        assert torch.equal(a.targets_[name], b.targets_[name])
    assert a.classes_["gender"] == ["female", "male"] and len(a.classes_["cell"]) == len(set(a.classes_["cell"]))
    x, y = a[5], b[5]
    assert x["image"].shape == (3, 112, 112) and x["image"].dtype == torch.float32
    assert -1.0 <= x["image"].min() and x["image"].max() <= 1.0
    # the same crop, once from PNG and once from JPEG q95
    assert (x["image"] - y["image"]).abs().mean() < 0.03
    assert x["identity"] == 1 and a.classes_["identity"][1] == 1
    row = json.loads((tiny / "manifest.jsonl").read_text().splitlines()[5])
    assert a.classes_["group"][int(x["group"])] == row["group"]
    # an explicit .rec path works too
    assert len(FaceDataset(tiny / "rec" / "train.rec")) == IDS * K


def test_imagefolder_csv_and_world_labels(tiny, tmp_path):
    f = FaceDataset(tiny / "imagefolder")
    assert f.format_ == "imagefolder" and f.num_classes == IDS and f.classes_["identity"][0] == "000000"
    ref = FaceDataset(tiny)
    assert torch.equal(f[7]["image"], ref[7]["image"])
    # CSV with relative paths and an extra attribute
    with open(tmp_path / "faces.csv", "w", newline="") as fh:
        wr = csv.writer(fh)
        wr.writerow(["path", "identity", "skin"])
        for i in range(IDS):
            for j in range(K):
                wr.writerow([str(tiny / f"imagefolder/{i:06d}/{j:03d}.png"), f"p{i}", "dark" if i % 2 else "light"])
    c = FaceDataset(tmp_path / "faces.csv", labels=("skin",))
    assert c.format_ == "csv" and c.num_classes == IDS and c.classes_["skin"] == ["dark", "light"]
    assert int(c[K]["skin"]) == 0 and int(c[0]["skin"]) == 1
    # a rendered world folder (labels.jsonl) with the FFHQ -> ArcFace crop
    from synthface.world.dataset import write_image_folder
    root = write_image_folder(World(1), tmp_path / "render", 3, 2, size=64, log=lambda s: None)
    r = FaceDataset(root, labels=("group", "gender", "age"), crop="arcface")
    assert r.num_classes == 3 and len(r) == 6 and r[0]["image"].shape == (3, 112, 112)
    # the fast PIL warp is synthface.align's ArcFace crop to within rounding
    full = np.array(Image.open(r.paths_[1]).convert("RGB"))
    ref = arcface_crop(full, 112)[0].permute(1, 2, 0).numpy()
    diff = np.abs(r.image(1).astype(np.float32) - ref)
    assert diff[4:-4, 4:-4].max() <= 1.01 and diff.mean() < 0.6
    assert r.targets_["age"].dtype == torch.float32 or len(r.classes_["age"]) <= 3


def test_subset_and_split_renumber_identities(tiny):
    d = FaceDataset(tiny, labels=("gender",))
    tr, va = d.split_identities(0.25, seed=0)
    assert len(tr) + len(va) == len(d) and not set(tr) & set(va)
    t, v = d.subset(tr), d.subset(va)
    assert v.num_classes == 3 and t.num_classes == 9
    assert sorted(set(t.targets_["identity"].tolist())) == list(range(9))
    assert t.classes_["gender"] == d.classes_["gender"]
    assert not set(t.classes_["identity"]) & set(v.classes_["identity"])


def test_augmentation_is_seeded_by_epoch_and_item(tiny):
    d = FaceDataset(tiny, augment=True, seed=3)
    a, b = d[2]["image"], d[2]["image"]
    assert torch.equal(a, b)
    plain = FaceDataset(tiny)[2]["image"]
    changed = []
    for e in range(6):
        d.set_epoch(e)
        changed.append(not torch.equal(d[2]["image"], plain))
    assert any(changed)
    ramp = np.full((3, 4, 4), 100.0, np.float32) + np.arange(4.0, dtype=np.float32)   # grey, rising left to right
    outs = [FaceDataset._augment(ramp.copy(), np.random.default_rng(s)) for s in range(20)]
    flipped = [bool(o[0, 0, 0] > o[0, 0, -1]) for o in outs]
    # jitter stays small: every pixel within 10 % (and a bit) of the input
    assert all((np.abs(o - (ramp[:, :, ::-1] if f else ramp)) <= 12).all() for o, f in zip(outs, flipped))
    assert 0 < sum(flipped) < 20   # the flip happens about half the time


class _Fixed:
    """A stand-in generator whose random() returns given values (then 0.99: no blur, no flip)."""

    def __init__(self, values):
        self.values = list(values)

    def random(self, n=None):
        take, self.values = self.values[:n], self.values[n:]
        return np.array(take + [0.99] * (n - len(take)))


def test_strong_augmentation_rotates_scales_and_shifts_about_the_centre():
    from synthface.train.data import _geometric

    im = np.zeros((112, 112, 3), np.uint8)
    im[54:58, 84:88] = 255                       # a dot 30 px right of the centre (56, 56)

    def dot(out):
        a = np.asarray(out, np.float64)[:, :, 0]
        ys, xs = np.nonzero(a > 40)
        w = a[ys, xs]
        return (xs * w).sum() / w.sum() + 0.5, (ys * w).sum() / w.sum() + 0.5

    x0, y0 = dot(Image.fromarray(im))
    same = _geometric(Image.fromarray(im), _Fixed([0.5, 0.5, 0.5, 0.5]))   # angle 0, scale 1, shift 0
    assert np.abs(np.asarray(same, np.int16) - im).max() <= 1
    rot = dot(_geometric(Image.fromarray(im), _Fixed([1.0, 0.5, 0.5, 0.5])))   # +10 degrees
    ang = np.degrees(np.arctan2(rot[1] - 56, rot[0] - 56) - np.arctan2(y0 - 56, x0 - 56))
    assert abs(abs(ang) - 10) < 1.0 and abs(np.hypot(rot[0] - 56, rot[1] - 56) - np.hypot(x0 - 56, y0 - 56)) < 0.5
    big = dot(_geometric(Image.fromarray(im), _Fixed([0.5, 1.0, 0.5, 0.5])))   # scale 1.1
    assert abs((big[0] - 56) / (x0 - 56) - 1.1) < 0.02
    moved = dot(_geometric(Image.fromarray(im), _Fixed([0.5, 0.5, 1.0, 0.0])))   # shift (+4.48, -4.48) px
    assert abs(moved[0] - x0 - 4.48) < 0.3 and abs(moved[1] - y0 + 4.48) < 0.3
    blurred = np.asarray(_geometric(Image.fromarray(im), _Fixed([0.5, 0.5, 0.5, 0.5, 0.0, 1.0])))
    assert blurred.max() < 255 and (blurred[:, :, 0] > 0).sum() > 16   # the dot spread out


def test_augment_levels(tiny):
    from synthface.train.data import augment_level

    assert [augment_level(v) for v in (True, False, "none", "basic", "strong")] == \
        ["basic", "none", "none", "basic", "strong"]
    with pytest.raises(SynthfaceError, match="choose none, basic .* or strong"):
        augment_level("heavy")
    basic, strong = FaceDataset(tiny, augment="basic", seed=3), FaceDataset(tiny, augment="strong", seed=3)
    assert torch.equal(basic[2]["image"], FaceDataset(tiny, augment=True, seed=3)[2]["image"])
    assert torch.equal(strong[2]["image"], strong[2]["image"])     # seeded by (seed, epoch, item)
    assert not torch.equal(strong[2]["image"], basic[2]["image"])
    assert strong[2]["image"].shape == basic[2]["image"].shape


def test_dataset_error_messages(tiny, tmp_path):
    with pytest.raises(SynthfaceError, match="does not exist"):
        FaceDataset(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(SynthfaceError, match="no images .* identity sub-folders"):
        FaceDataset(tmp_path / "empty")
    one = tmp_path / "one"
    for i, n in enumerate([3, 1, 2]):
        for j in range(n):
            (one / f"id{i}").mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (112, 112)).save(one / f"id{i}" / f"{j}.png")
    with pytest.raises(SynthfaceError, match="1 of 3 identities .* fewer than 2 images \\(e.g. id1\\).*--drop-small"):
        FaceDataset(one, min_images=2)
    d = FaceDataset(one, min_images=2, drop_small=True)
    assert d.num_classes == 2 and d.dropped_identities_ == 1 and len(d) == 5
    (tmp_path / "bad.csv").write_text("file,person\nx.png,1\n")
    with pytest.raises(SynthfaceError, match="needs a header with the columns path,identity"):
        FaceDataset(tmp_path / "bad.csv")
    with pytest.raises(SynthfaceError, match="no 'age' label .* it has: cell, gender, group"):
        FaceDataset(tiny, labels=("age",))


# ------------------------------------------------------------------------------ recognition trainer

def _tiny_backbone(dim):
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv2d(3, 8, 4, 4), torch.nn.PReLU(8), torch.nn.AdaptiveAvgPool2d(4),
                               torch.nn.Flatten(), torch.nn.Linear(128, dim))


def _cfg(tiny, out, **kw):
    from synthface.train.recognition import RecognitionConfig
    base = dict(data=str(tiny), out=str(out), embedding_dim=16, epochs=2, batch=8, lr=0.05, held_out=0.25,
                scale=16.0, device="cpu", warmup_epochs=0.5)
    return RecognitionConfig(**{**base, **kw})


def test_train_recognition_outputs(tiny, tmp_path):
    import onnxruntime as ort
    from synthface.train.recognition import train_recognition

    res = train_recognition(_cfg(tiny, tmp_path / "run"), log=lambda s: None, backbone_factory=_tiny_backbone)
    out = tmp_path / "run"
    assert res["data"]["train_identities"] == 9 and res["data"]["held_out_identities"] == 3
    assert res["steps"] == 2 * (36 // 8) and len(res["val_accuracy_per_epoch"]) == 2
    assert 0.0 <= res["val_accuracy"] <= 1.0
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [h["epoch"] for h in log if "val_accuracy" in h] == [1, 2]
    for name in ("backbone.safetensors", "model.onnx", "curves.png", "README.md", "results.json", "checkpoint.pt"):
        assert (out / name).is_file(), name
    assert f"{res['val_accuracy']:.4f}" in (out / "README.md").read_text()
    # the ONNX graph is the trained backbone
    from safetensors.torch import load_file
    net = _tiny_backbone(16)
    net.load_state_dict(load_file(str(out / "backbone.safetensors")))
    x = torch.randn(3, 3, 112, 112)
    sess = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    got = sess.run(None, {"input.1": x.numpy()})[0]
    np.testing.assert_allclose(got, net.eval()(x).detach().numpy(), rtol=1e-4, atol=1e-5)
    # insightface routes it as a recogniser
    insightface = pytest.importorskip("insightface")
    m = insightface.model_zoo.get_model(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    assert m.taskname == "recognition"


def test_recognition_resume_refuses_other_classes_and_architecture(tiny, tmp_path):
    from synthface.train.recognition import train_recognition

    cfg = _cfg(tiny, tmp_path / "run", backbone="world-recognizer", embedding_dim=32)
    assert train_recognition(cfg, log=lambda s: None, stop_after=1) == {"stopped_at_step": 1}
    with pytest.raises(SynthfaceError, match="num_classes 9 there, 8 now"):
        train_recognition(_cfg(tiny, tmp_path / "run", backbone="world-recognizer", embedding_dim=32, held_out=0.34,
                               resume=True), log=lambda s: None)
    with pytest.raises(SynthfaceError, match="backbone 'world-recognizer' there, 'mbf' now"):
        train_recognition(_cfg(tiny, tmp_path / "run", backbone="mbf", embedding_dim=32, resume=True),
                          log=lambda s: None)
    with pytest.raises(SynthfaceError, match="--loss cosface takes one --margin value"):
        train_recognition(_cfg(tiny, tmp_path / "x", loss="cosface", margin="1,0.5,0"), log=lambda s: None)


def test_cli_train_recognition_under_torchrun(tiny, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = tmp_path / "run"
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                        "-m", "synthface.cli", "train", "recognition", "--data", str(tiny), "--out", str(out),
                        "--backbone", "world-recognizer", "--embedding-dim", "32", "--epochs", "1", "--batch", "8",
                        "--held-out", "0.25", "--scale", "16", "--device", "cpu"],
                       env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert json.loads(r.stdout.strip().splitlines()[-1])["steps"] == 36 // 8
    assert r.stderr.count("training on 36 images of 9") == 1   # only the main process talks
    from synthface.nets import load_backbone
    net = load_backbone(out / "backbone.safetensors")
    import onnxruntime as ort
    x = torch.randn(2, 3, 112, 112)
    got = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"]).run(None, {
        "input.1": x.numpy()})[0]
    np.testing.assert_allclose(got, net(x).detach().numpy(), rtol=1e-4, atol=1e-4)
    st = torch.load(out / "checkpoint.pt", weights_only=True)
    assert st["world_size"] == 2 and st["finished"]


@pytest.mark.gpu
@pytest.mark.parametrize("amp", ["bf16", "fp16"])
def test_recognition_amp_channels_last_on_cuda(tiny, tmp_path, amp):
    from synthface.train.recognition import train_recognition

    res = train_recognition(_cfg(tiny, tmp_path / amp, backbone="r18", device="cuda", amp=amp, epochs=1),
                            log=lambda s: None)
    log = [json.loads(line) for line in (tmp_path / amp / "log.jsonl").read_text().splitlines()]
    assert all(np.isfinite(h["loss"]) for h in log if "loss" in h) and res["steps"] == 36 // 8
