"""Identity datasets on the demo world: the writer's formats read back by independent readers,
kill-and-resume and sharding giving byte-identical output, batch-independent identity selection."""

import io
import json
import os
import random
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from synthface.dataset import merge
from synthface.errors import SynthfaceError
from synthface.generator import load_generator
from synthface.identity import load_embedder, select_identities
from synthface.labelling import load_labeller
from synthface.latent import parse_cells
from synthface.world.assets import generator_path

IDS, IMGS = 2, 3
ARGS = ["--network", "world", "--ids-per-cell", str(IDS), "--images-per-id", str(IMGS), "--accept-confidence", "0.99",
        "--separation-quantile", "0.97", "--device", "cpu", "--batch", "16"]


def run_cli(args, **kw):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "synthface.cli", "generate", *args], capture_output=True, text=True,
                          env=env, **kw)


def tree(root: Path, subdirs=("imagefolder", "records", "rec", "pairs")) -> dict:
    files = {}
    for sub in subdirs:
        for p in sorted((root / sub).rglob("*")):
            if p.is_file():
                files[str(p.relative_to(root))] = p.read_bytes()
    for name in ("identities.npz", "manifest.jsonl"):
        files[name] = (root / name).read_bytes()
    return files


@pytest.fixture(scope="module")
def dataset(demo_latent_model, tmp_path_factory):
    out = tmp_path_factory.mktemp("ds") / "a"
    r = run_cli(["--model", str(demo_latent_model[2]), "--out", str(out), *ARGS])
    assert r.returncode == 0, r.stderr[-3000:]
    return out


def test_imagefolder_layout_as_arcface_torch_and_hf_read_it(dataset):
    folders = sorted(p for p in (dataset / "imagefolder").iterdir() if p.is_dir())
    assert [p.name for p in folders] == [f"{i:06d}" for i in range(6 * IDS)]  # sorted order = label
    for label, f in enumerate(folders):
        imgs = sorted(f.glob("*.png"))
        assert len(imgs) == IMGS
        assert all(Image.open(p).size == (112, 112) and Image.open(p).mode == "RGB" for p in imgs)
    meta = [json.loads(line) for line in (dataset / "imagefolder" / "metadata.jsonl").read_text().splitlines()]
    assert len(meta) == 6 * IDS * IMGS
    for row in meta:  # file_name relative to the metadata file, identity column explicit
        assert (dataset / "imagefolder" / row["file_name"]).is_file()
        assert row["file_name"].split("/")[0] == f"{row['identity']:06d}"
    cells = {row["cell"] for row in meta}
    assert len(cells) == 6 and all(sum(r["cell"] == c for r in meta) == IDS * IMGS for c in cells)


def read_recordio(rec: Path, idx: Path) -> dict:
    """Independent reader written from the RecordIO description (magic, length, IRHeader <IfQQ)."""
    data = rec.read_bytes()
    out = {}
    for line in idx.read_text().splitlines():
        key, off = map(int, line.split("\t"))
        magic, length = struct.unpack_from("<II", data, off)
        assert magic == 0xCED7230A and length >> 29 == 0
        payload = data[off + 8: off + 8 + length]
        flag, label, id1, _ = struct.unpack_from("<IfQQ", payload)
        pos = struct.calcsize("<IfQQ")
        labels = list(struct.unpack_from(f"<{flag}f", payload, pos)) if flag else [label]
        out[key] = (labels, payload[pos + 4 * flag:], id1)
    return out


def test_recordio_reads_back_with_an_independent_reader(dataset):
    recs = read_recordio(dataset / "rec" / "train.rec", dataset / "rec" / "train.idx")
    n = 6 * IDS * IMGS
    assert recs[0][0] == [n + 1, n + 1 + 6 * IDS]  # arcface_torch's header record
    manifest = [json.loads(line) for line in (dataset / "manifest.jsonl").read_text().splitlines()]
    for key in range(1, n + 1):
        labels, img, _ = recs[key]
        row = manifest[key - 1]
        assert labels == [row["identity"]]
        dec = np.asarray(Image.open(io.BytesIO(img)).convert("RGB"), np.float32)
        png = np.asarray(Image.open(dataset / row["path"]).convert("RGB"), np.float32)
        assert dec.shape == (112, 112, 3) and np.abs(dec - png).mean() < 4  # JPEG q95 of the same crop
    for i in range(6 * IDS):
        assert recs[n + 1 + i][0] == [1 + i * IMGS, 1 + (i + 1) * IMGS]
    assert json.loads((dataset / "rec" / "property.json").read_text())["num_classes"] == 6 * IDS


def test_records_scores_and_card(dataset):
    thr = json.loads((dataset / "identities.json").read_text())["thresholds"]
    for p in sorted((dataset / "records").glob("*.json")):
        r = json.loads(p.read_text())
        assert r["separation_max_similarity"] < thr["separation"]
        assert all(im["consistency"] >= thr["consistency"] for im in r["images"])
    card = (dataset / "README.md").read_text()
    assert "| group=group2,gender=female | 2 | 6 |" in card and "sheets/" in card
    pairs = (dataset / "pairs" / "group-group2_gender-female.txt").read_text().splitlines()
    assert {line.split("\t")[2] for line in pairs} == {"0", "1"}


def test_stop_and_resume_is_byte_identical(dataset, demo_latent_model, tmp_path):
    """Deterministic interruption: stage 2 stopped after 5 identities, then after 2 more, then resumed
    to the end, gives the same bytes as an uninterrupted run."""
    import torch
    from threadpoolctl import threadpool_limits

    from synthface.dataset import DatasetConfig, generate_dataset, load_job

    ref = tree(dataset)
    model, G, lab, emb = load_job(str(demo_latent_model[2]), "world", ["world"], None, "world", device="cpu")
    from synthface.dataset.writer import network_defaults
    cfg = network_defaults(DatasetConfig(ids_per_cell=IDS, images_per_id=IMGS, accept_confidence=0.99,
                                         separation_quantile=0.97, batch_size=16), "world")  # as the CLI fills it
    out = tmp_path / "b"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the CLI runs of the fixture (OMP_NUM_THREADS=1)
    try:
        with threadpool_limits(1):
            quiet = dict(progress=False, log=lambda s: None)
            r = generate_dataset(model, G, lab, emb, out, cfg, stop_after=5, **quiet)
            assert r["written_now"] == 5 and not r["finished"] and r["stage1_s"] is not None
            assert len(list((out / "records").glob("*.json"))) == 5 and (out / "identities.npz").is_file()
            assert not (out / "manifest.jsonl").exists() and not (out / "shards").exists()
            r = generate_dataset(model, G, lab, emb, out, cfg, stop_after=2, **quiet)
            assert r["written_now"] == 2 and r["stage1_s"] is None  # stage 1 read back, not rerun
            r = generate_dataset(model, G, lab, emb, out, cfg, **quiet)
            assert r["finished"] and r["written_now"] == 6 * IDS - 7
    finally:
        torch.set_num_threads(threads)
    merge(out, log=lambda s: None)
    assert tree(out) == ref


def test_sigkill_and_resume_and_shards_are_byte_identical(dataset, demo_latent_model, tmp_path):
    model = str(demo_latent_model[2])
    ref = tree(dataset)
    b = tmp_path / "b"
    p = subprocess.Popen([sys.executable, "-m", "synthface.cli", "generate", "--model", model, "--out", str(b),
                          *ARGS], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                         env={**os.environ, "OMP_NUM_THREADS": "1"})
    time.sleep(random.Random(4).uniform(3, 9))  # one kill at a random point, wherever the run is
    p.send_signal(signal.SIGKILL)
    p.wait()
    r = run_cli(["--model", model, "--out", str(b), *ARGS])
    assert r.returncode == 0, r.stderr[-3000:]
    assert tree(b) == ref
    assert not (b / ".partial").exists() or not any((b / ".partial").iterdir())
    # two shards, run one after the other, then merged, give the same dataset
    c = tmp_path / "c"
    for i in range(2):
        r = run_cli(["--model", model, "--out", str(c), "--shard-index", str(i), "--num-shards", "2", *ARGS])
        assert r.returncode == 0, r.stderr[-3000:]
    merge(c, log=lambda s: None)
    assert tree(c) == ref


def test_resume_with_other_settings_and_incomplete_merge_are_refused(dataset, demo_latent_model, tmp_path):
    r = run_cli(["--model", str(demo_latent_model[2]), "--out", str(dataset), *ARGS[:-2], "--batch", "8",
                 "--seed", "1"])
    assert r.returncode != 0 and "different settings" in r.stderr and "Traceback" not in r.stderr
    d = tmp_path / "partial"
    r = run_cli(["--model", str(demo_latent_model[2]), "--out", str(d), "--shard-index", "0", "--num-shards", "2",
                 *ARGS])
    assert r.returncode == 0
    with pytest.raises(SynthfaceError, match="incomplete: 6 identities not written"):
        merge(d, log=lambda s: None)


def test_identity_selection_does_not_depend_on_the_batch_size(demo_latent_model):
    model = demo_latent_model[0]
    G = load_generator(generator_path())
    specs = parse_cells("group=group2,gender=female;group=group3,gender=male", model.schema_, model.attributes_)
    kw = dict(separation=0.5, seed=3, accept_confidence=0.99, progress=False)
    lab, emb = load_labeller("world"), load_embedder("world")
    a = select_identities(model, G, lab, emb, specs, 3, batch_size=5, **kw)
    b = select_identities(model, G, lab, emb, specs, 3, batch_size=64, **kw)
    assert np.array_equal(a.candidate, b.candidate) and np.array_equal(a.prior_seed, b.prior_seed)
    # the same draws; only float rounding of batched matmuls may differ
    assert np.allclose(a.w, b.w, atol=1e-4) and a.stats == b.stats
    S = a.embedding @ a.embedding.T
    assert (S[~np.eye(len(S), dtype=bool)] < 0.5).all()


def test_improved_recall_by_hand():
    from synthface.dataset import improved_recall
    ang = np.deg2rad([0, 10, 20, 90])
    fake = np.stack([np.cos(ang), np.sin(ang)], 1)
    # k=1 radii (cosine distance to the nearest other fake): 10 deg, 10 deg, 10 deg, 70 deg
    real = np.stack([np.cos(np.deg2rad([5, 45, 200])), np.sin(np.deg2rad([5, 45, 200]))], 1)
    # 5 deg is inside the first ball, 45 deg inside the 90-deg sample's 70-deg ball, 200 deg in none
    assert improved_recall(real, fake, k=1) == pytest.approx(2 / 3)
    assert np.isnan(improved_recall(real, fake[:1]))


def test_leakage_gallery_rejects_known_identities(demo_latent_model):
    model = demo_latent_model[0]
    G = load_generator(generator_path())
    specs = parse_cells("group=group3,gender=male", model.schema_, model.attributes_)
    lab, emb = load_labeller("world"), load_embedder("world")
    kw = dict(separation=0.5, seed=5, accept_confidence=0.99, progress=False)
    first = select_identities(model, G, lab, emb, specs, 3, **kw)
    # the same draws with the first set as the leakage gallery: its identities must be refused
    again = select_identities(model, G, lab, emb, specs, 3, leakage=first.embedding, leakage_threshold=0.5, **kw)
    st = again.stats["group=group3,gender=male"]
    assert st["rejected_leakage"] >= 3 and (again.leakage_similarity < 0.5).all()
    assert not set(again.candidate) & set(first.candidate)


def test_detected_alignment_still_verifies_identities():
    from synthface.world import World
    w = World(seed=0)
    ident = w.identities(range(920000, 920010))
    rows = np.repeat(np.arange(10), 2)
    from synthface.world import take
    imgs = w.render(take(ident, rows), np.tile([0, 1], 10), size=64)
    det = load_embedder("world", align="detect")
    e = det.embed(imgs).reshape(10, 2, -1)
    genuine = (e[:, 0] * e[:, 1]).sum(1)
    impostor = (e[:, 0] @ e[:, 1].T)[~np.eye(10, dtype=bool)]
    assert det.undetected <= 1
    assert genuine.mean() > impostor.mean() + 0.3 and np.median(genuine) > np.quantile(impostor, 0.9)


def test_ray_shards_give_the_same_dataset(dataset, demo_latent_model, tmp_path):
    pytest.importorskip("ray.data", reason="the Ray entry point is optional (pip install 'ray[data]')")
    r = run_cli(["--model", str(demo_latent_model[2]), "--out", str(tmp_path / "r"), "--ray", "2", *ARGS])
    assert r.returncode == 0, r.stderr[-3000:]
    assert tree(tmp_path / "r") == tree(dataset)
