"""A dataset under hostile conditions: two writers on one folder, kill -9 of the holder, disk full
(injected, and a real small tmpfs when this runs as root), then the distinct verification pairs and
the .rec encodings of the merged set. Every recovery must give the same bytes as an uninterrupted run."""

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from synthface.fileio import DiskFull, is_temporary
from synthface.locks import LOCK_DIR

CELLS = "group=group1,gender=female;group=group3,gender=male"
IDS, IMGS = 2, 3
ARGS = ["--network", "world", "--cells", CELLS, "--ids-per-cell", str(IDS), "--images-per-id", str(IMGS),
        "--accept-confidence", "0.99", "--separation", "0.45", "--device", "cpu", "--batch", "16"]
OUTPUTS = ("imagefolder", "records", "rec", "pairs")


def tree(root: Path) -> dict:
    files = {str(p.relative_to(root)): p.read_bytes() for sub in OUTPUTS for p in sorted((root / sub).rglob("*"))
             if p.is_file()}
    for name in ("identities.npz", "manifest.jsonl", "dataset.json", "metrics.json", "README.md"):
        files[name] = (root / name).read_bytes()
    return files


def leftovers(root: Path) -> list[str]:
    """Temporary files or folders, the partial folder and the lock folder: none may stay behind."""
    bad = [str(p.relative_to(root)) for p in root.rglob("*") if is_temporary(p.name)]
    return bad + [n for n in (".partial", LOCK_DIR) if (root / n).exists()]


class InProcess:
    """generate_dataset + merge in this process with one thread (as the CLI runs in the tests)."""

    def __init__(self, model_path):
        from synthface.dataset import DatasetConfig, load_job

        self.job = load_job(str(model_path), "world", ["world"], None, "world", device="cpu")
        from synthface.dataset.writer import network_defaults
        self.cfg = network_defaults(DatasetConfig(cells=CELLS, ids_per_cell=IDS, images_per_id=IMGS,
                                                  accept_confidence=0.99, separation=0.45, batch_size=16,
                                                  reference="world"), "world")  # as the CLI fills it

    def __call__(self, out, **kw):
        import torch
        from threadpoolctl import threadpool_limits

        from synthface.dataset import generate_dataset, merge

        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            with threadpool_limits(1):
                from synthface.dataset.writer import merge_coverage
                generate_dataset(*self.job, out, self.cfg, progress=False, log=lambda s: None, **kw)
                return merge(out, log=lambda s: None, coverage=merge_coverage(out, "world"))  # as the CLI
        finally:
            torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def build(demo_latent_model):
    return InProcess(demo_latent_model[2])


@pytest.fixture(scope="module")
def reference(build, tmp_path_factory):
    out = tmp_path_factory.mktemp("ref") / "ds"
    build(out)
    return out


def cli(args, **kw):
    return subprocess.run([sys.executable, "-m", "synthface.cli", "generate", *args], capture_output=True, text=True,
                          env={**os.environ, "OMP_NUM_THREADS": "1"}, **kw)


# The holder in the concurrency test: generate slowed down (6 s per identity) so the second writer
# surely meets it while it runs.
SLOW = """
import sys, time
import synthface.dataset.writer as w
write = w._write_identity
w._write_identity = lambda *a, **k: (time.sleep(6), write(*a, **k))[1]
from synthface.cli import main
sys.argv = ["synthface", "generate", *sys.argv[1:]]
main()
"""


def test_second_writer_is_refused_and_a_killed_holder_is_taken_over(reference, demo_latent_model, tmp_path):
    out = tmp_path / "ds"
    args = ["--model", str(demo_latent_model[2]), "--out", str(out), *ARGS]
    holder = subprocess.Popen([sys.executable, "-c", SLOW, *args], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        t0 = time.time()
        while not list(out.glob("records/*.json")) and holder.poll() is None and time.time() - t0 < 120:
            time.sleep(0.2)  # wait until the holder has written an identity
        assert holder.poll() is None
        r = cli(args)
        assert r.returncode == 1 and "Traceback" not in r.stderr
        assert f"pid {holder.pid}" in r.stderr and "in use" in r.stderr, r.stderr[-2000:]
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert (out / LOCK_DIR).exists()  # the dead holder's lock stays behind ...
    r = cli(args)
    assert r.returncode == 0, r.stderr[-3000:]  # ... and is broken by the next run
    assert "stale lock" in r.stderr
    assert tree(out) == tree(reference) and leftovers(out) == []


def fail_after(n: int, real):
    calls = []

    def f(*a):
        calls.append(1)
        if len(calls) > n:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(*a)
    return f


def test_disk_full_gives_one_message_no_leftovers_and_the_same_dataset_after(build, reference, tmp_path,
                                                                            monkeypatch):
    out = tmp_path / "ds"
    monkeypatch.setattr(os, "fsync", fail_after(12, os.fsync))  # every atomic write fsyncs: fail in stage 2
    with pytest.raises(DiskFull, match=r"^no space left on the device of .*free some space, then run the same "):
        build(out)
    monkeypatch.undo()
    assert leftovers(out) == []
    assert 0 < len(list((out / "records").glob("*.json"))) < 2 * IDS  # stopped in the middle
    # disk full while merging (the RecordIO): the temporaries of rec/ go too
    from synthface.dataset import merge, recordio

    build(out)
    monkeypatch.setattr(recordio, "pack_record", fail_after(3, recordio.pack_record))
    (out / "rec" / "train.rec").unlink()
    with pytest.raises(DiskFull, match="run `synthface merge` again"):
        merge(out, log=lambda s: None)
    monkeypatch.undo()
    assert leftovers(out) == [] and sorted(os.listdir(out / "rec")) == ["property.json", "train.idx"]
    from synthface.dataset.writer import merge_coverage
    merge(out, log=lambda s: None, coverage=merge_coverage(out, "world"))
    assert tree(out) == tree(reference)


def _can_mount_tmpfs(path: Path) -> bool:
    if os.geteuid() != 0 or not shutil.which("mount"):
        return False
    path.mkdir(parents=True, exist_ok=True)
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(path)], capture_output=True)
    if r.returncode == 0:
        subprocess.run(["umount", str(path)], check=True)
    return r.returncode == 0


def test_disk_full_on_a_small_tmpfs(build, reference, tmp_path):
    mnt = tmp_path / "mnt"
    if not _can_mount_tmpfs(mnt):
        pytest.skip("mounting a tmpfs needs root")
    size = sum(p.stat().st_size for p in reference.rglob("*") if p.is_file())
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size // 2}", "tmpfs", str(mnt)], check=True)
    try:
        with pytest.raises(DiskFull, match="no space left on the device"):
            build(mnt / "ds")
        assert leftovers(mnt / "ds") == []
        subprocess.run(["mount", "-o", f"remount,size={4 * size}", str(mnt)], check=True)  # space freed
        build(mnt / "ds")
        assert tree(mnt / "ds") == tree(reference) and leftovers(mnt / "ds") == []
    finally:
        subprocess.run(["umount", "-l", str(mnt)])


def test_verification_pairs_are_distinct_and_counted(reference):
    metrics = json.loads((reference / "metrics.json").read_text())["pairs"]
    assert metrics["requested_per_cell"] == 1000
    for f in sorted((reference / "pairs").glob("*.txt")):
        rows = [line.split("\t") for line in f.read_text().splitlines()]
        keys = [(frozenset(r[:2]), r[2]) for r in rows]
        assert len(set(keys)) == len(keys)  # no pair twice, in either order
        gen = [r for r in rows if r[2] == "1"]
        # every genuine pair there is (2 identities x C(3, 2)) and every impostor pair (1 x 3 x 3)
        assert len(gen) == IDS * IMGS * (IMGS - 1) // 2 and len(rows) - len(gen) == IMGS * IMGS
        assert all(a.split("/")[1] == b.split("/")[1] for a, b, _ in gen)
        cell = next(c for c in metrics["per_cell"] if f.stem.startswith(c.split(",")[0].replace("=", "-")))
        assert metrics["per_cell"][cell] == {"genuine": len(gen), "impostor": len(rows) - len(gen)}
    assert "6 genuine and 9 impostor pairs per cell, all distinct" in (reference / "README.md").read_text()


def test_distinct_pairs_without_replacement():
    from synthface.dataset.merge import distinct_pairs

    rng = np.random.default_rng(0)
    for genuine, n, k, total in [(True, 40, 5, 400), (False, 40, 5, 780 * 25), (False, 3000, 2, 3000 * 2999 * 2)]:
        rows = distinct_pairs(rng, n, k, 500, genuine)
        assert len(rows) == min(500, total) and len(set(rows)) == len(rows)
        for i, a, j, b in rows:
            assert 0 <= a < k and 0 <= b < k and 0 <= i < n and 0 <= j < n
            assert (i == j and a < b) if genuine else i < j
    everything = distinct_pairs(rng, 4, 3, 10 ** 6, True)
    assert sorted(everything) == sorted((i, a, i, b) for i in range(4) for a in range(3) for b in range(a + 1, 3))
    assert distinct_pairs(rng, 1, 3, 10, False) == [] and distinct_pairs(rng, 4, 1, 10, True) == []


@pytest.mark.parametrize("encoding, max_error", [("jpeg444", 12), ("png", 0)])
def test_rec_encodings_read_back_through_face_dataset(reference, tmp_path, encoding, max_error):
    from synthface.dataset.merge import load_records, write_recordio
    from synthface.train.data import FaceDataset

    out = tmp_path / "ds"
    shutil.copytree(reference, out)
    _, records = load_records(out)
    pngs = [np.asarray(Image.open(out / json.loads(line)["path"]).convert("RGB"), int)
            for line in (out / "manifest.jsonl").read_text().splitlines()]
    errors = {}
    for enc in (encoding, "jpeg420"):
        write_recordio(out, records, IMGS, encoding=enc)
        ds = FaceDataset(out / "rec" / "train.rec")
        assert len(ds) == len(pngs)
        errors[enc] = max(int(np.abs(ds.image(i).astype(int) - png).max()) for i, png in enumerate(pngs))
        assert json.loads((out / "rec" / "property.json").read_text())["encoding"] == enc
    assert errors[encoding] <= max_error < errors["jpeg420"]
