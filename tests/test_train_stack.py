"""The shared training stack: exact resume, torchrun equivalence, FaceDataset sources, the
recognition trainer end to end, and its error messages."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from synthface.errors import SynthfaceError
from synthface.train.engine import PolyWarmup, Trainer, load_checkpoint

sys.path.insert(0, str(Path(__file__).parent))
from train_stack_job import Blobs, Net, run  # noqa: E402

JOB = str(Path(__file__).parent / "train_stack_job.py")
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).parent.parent)}


@pytest.fixture
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)   # the subprocess runs use one thread: same kernels, same bits
    yield
    torch.set_num_threads(n)


def _state(tr):
    return {k: v.clone() for k, v in tr.model_.state_dict().items()}


def _equal(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# ------------------------------------------------------------------------------ engine

def test_stop_and_resume_equals_uninterrupted_run(tmp_path, one_thread):
    # dropout draws from torch's RNG: only an exact RNG restore gives the same weights
    ref = run(tmp_path / "ref", dropout=0.2, checkpoint_every=5)
    assert ref.step_ == 24 and not ref.stopped_
    a = run(tmp_path / "a", dropout=0.2, checkpoint_every=5, stop_after=7)
    assert a.stopped_ and a.step_ == 7
    st = load_checkpoint(tmp_path / "a" / "checkpoint.pt")
    assert (st["step"], st["epoch"], st["batch"]) == (7, 0, 7)
    a = run(tmp_path / "a", dropout=0.2, checkpoint_every=5, resume=True)
    assert a.step_ == 24
    assert _equal(_state(a), _state(ref))
    # the resumed log reads as one run: steps 1..24 once each, then nothing repeated
    steps = [json.loads(line)["step"] for line in (tmp_path / "a" / "log.jsonl").read_text().splitlines()]
    assert steps == list(range(1, 25))
    # and it is not trivially equal: another seed's run differs
    other = run(tmp_path / "other", dropout=0.2, seed=1)
    assert not _equal(_state(other), _state(ref))
    # resuming a finished run is a no-op; without --resume an existing run is refused
    again = run(tmp_path / "a", dropout=0.2, resume=True)
    assert again.step_ == 24 and _equal(_state(again), _state(ref))
    with pytest.raises(SynthfaceError, match="already holds a training run.*--resume"):
        run(tmp_path / "a", dropout=0.2)


def test_channels_last_on_cpu_resumes_exactly_and_trains_the_same_network(tmp_path, one_thread):
    """channels_last is used on CPU too (faster oneDNN convolutions): a stopped and resumed run equals an
    uninterrupted one bit for bit, and the weights agree with a contiguous run up to summation order."""
    ref = run(tmp_path / "ref", dropout=0.2, checkpoint_every=5, channels_last=True)
    conv = next(v for v in ref.model_.parameters() if v.ndim == 4)
    assert conv.is_contiguous(memory_format=torch.channels_last) and not conv.is_contiguous()
    run(tmp_path / "a", dropout=0.2, checkpoint_every=5, stop_after=7, channels_last=True)
    a = run(tmp_path / "a", dropout=0.2, checkpoint_every=5, resume=True, channels_last=True)
    assert _equal(_state(a), _state(ref))
    plain = run(tmp_path / "plain", dropout=0.2, checkpoint_every=5)
    for k, v in _state(plain).items():
        assert torch.allclose(v, _state(ref)[k], rtol=1e-4, atol=1e-5), k


def test_sigkill_and_resume_equals_uninterrupted_run(tmp_path, one_thread):
    ref = run(tmp_path / "ref", dropout=0.2, checkpoint_every=2)
    out = tmp_path / "killed"
    p = subprocess.Popen([sys.executable, JOB, str(out), "--dropout", "0.2", "--checkpoint-every", "2",
                          "--sleep", "0.3"], env=ENV, stderr=subprocess.PIPE)
    try:
        deadline = time.time() + 120
        while time.time() < deadline:   # kill it mid-run, a few checkpoints in
            log = out / "log.jsonl"
            if log.is_file() and log.read_text().count("\n") >= 7:
                break
            assert p.poll() is None, p.stderr.read().decode()[-2000:]
            time.sleep(0.05)
        p.send_signal(signal.SIGKILL)
        p.wait()
    finally:
        if p.poll() is None:
            p.kill()
    st = load_checkpoint(out / "checkpoint.pt")
    assert 0 < st["step"] < 24 and not (out / "final.pt").exists()
    resumed = run(out, dropout=0.2, checkpoint_every=2, resume=True)
    assert resumed.step_ == 24
    assert _equal(_state(resumed), _state(ref))


def test_torchrun_two_processes_equal_one_process(tmp_path, one_thread):
    ref = run(tmp_path / "one", batch=8)
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", JOB,
                        str(tmp_path / "two"), "--batch", "8"], env=ENV, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    two = torch.load(tmp_path / "two" / "final.pt", weights_only=True)
    one = _state(ref)
    assert two.keys() == one.keys()
    for k in one:
        torch.testing.assert_close(two[k], one[k], rtol=1e-5, atol=1e-5)
    # training moved the weights well beyond that tolerance
    init = Net().state_dict()
    assert max((one[k] - init[k]).abs().max().item() for k in one if "head" not in k) > 1e-2
    st = load_checkpoint(tmp_path / "two" / "checkpoint.pt")
    assert st["world_size"] == 2 and len(st["rng"]) == 2 and st["step"] == 24


def test_nan_loss_names_the_step_and_keeps_the_last_good_checkpoint(tmp_path):
    class Exploding(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.ones(1))
            self.calls = 0

        def forward(self, batch):
            self.calls += 1
            loss = (self.w * batch["image"].mean()) ** 2
            return loss * float("nan") if self.calls == 6 else loss

    tr = Trainer(tmp_path, 2, 8, device="cpu", checkpoint_every=4, log=lambda s: None)
    with pytest.raises(SynthfaceError, match=r"loss became nan at step 6 \(epoch 1\).*holds the last good state"):
        tr.fit(Exploding(), Blobs(), lambda m: torch.optim.SGD(m.parameters(), lr=0.1))
    assert load_checkpoint(tmp_path / "checkpoint.pt")["step"] == 4


def test_resume_refuses_other_settings(tmp_path):
    run(tmp_path, epochs=1, classes=8)
    with pytest.raises(SynthfaceError, match="other settings: classes 8 there, 6 now"):
        run(tmp_path, epochs=1, classes=6, resume=True)


def test_poly_warmup_schedule():
    f = PolyWarmup(total=10, warmup=2, power=2.0)
    assert [round(f(s), 4) for s in range(11)] == [0.5, 1.0, 1.0, 0.7656, 0.5625, 0.3906, 0.25, 0.1406, 0.0625,
                                                   0.0156, 0.0]


def test_trainer_input_errors(tmp_path):
    opt = lambda m: torch.optim.SGD(m.parameters(), lr=0.1)  # noqa: E731
    with pytest.raises(SynthfaceError, match="training set is empty"):
        Trainer(tmp_path / "a", 1, 8, device="cpu").fit(Net(), Blobs(n=0), opt)
    with pytest.raises(SynthfaceError, match="fewer than one global batch of 64"):
        Trainer(tmp_path / "b", 1, 64, device="cpu").fit(Net(), Blobs(n=16), opt)
    with pytest.raises(SynthfaceError, match="amp is 'fp8'"):
        Trainer(tmp_path / "c", 1, 8, device="cpu", amp="fp8").fit(Net(), Blobs(), opt)
    assert not (tmp_path / "a" / "checkpoint.pt").exists()


def test_world_models_train_on_the_stack(tmp_path):
    from synthface.world.models import ModelSpec, render_pool, train_model
    from synthface.world.world import World

    pool = render_pool(World(0), 0, 6, 4, log=lambda s: None)
    msgs = []
    for task, crop in (("recognition", "arcface"), ("attributes", "attribute")):
        spec = ModelSpec("t", task, "plain", crop, seed=1, first_identity=0, identities=6, images_per_identity=4,
                         epochs=1, batch=8)
        net = train_model(spec, pool, log=msgs.append, out=tmp_path / task)
        assert not net.training
        log = [json.loads(line) for line in (tmp_path / task / "log.jsonl").read_text().splitlines()]
        assert log[-1]["step"] == 3 and all(np.isfinite(h["loss"]) for h in log)
        assert (tmp_path / task / "checkpoint.pt").is_file()
    assert sum(m.startswith("t epoch 1/1 step 3/3: loss") for m in msgs) == 2


def test_checkpoint_of_another_architecture_names_the_tensors(tmp_path):
    from synthface.train.engine import load_state_strict

    small, other = Net(), torch.nn.Sequential(torch.nn.Linear(4, 4))
    with pytest.raises(SynthfaceError, match=r"8 missing \(e.g. body.0.weight.*2 unexpected \(e.g. 0.weight, 0.bias\)"):
        load_state_strict(small, other.state_dict(), "x.pt")
    state = small.state_dict()
    state["body.6.weight"] = torch.zeros(16, 8)
    with pytest.raises(SynthfaceError, match=r"1 of another shape \(e.g. body.6.weight \(16, 8\) vs \(16, 256\)\)"):
        load_state_strict(Net(), state, "x.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(SynthfaceError, match="junk.pt is not a readable synthface training checkpoint"):
        load_checkpoint(tmp_path / "junk.pt")
