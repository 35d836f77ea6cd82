"""The CUDA kernels' build: nvcc compiles them for sm_80/sm_90, and a broken toolchain or a stale
lock never hangs or kills a run. GPU tests compare every op and dtype with the PyTorch reference."""

import json
import os
import shutil
import subprocess
import time
import warnings
from pathlib import Path

import pytest
import torch

from stylegan_ops import _plugin, bias_act, setup_filter, upfirdn2d
from stylegan_ops.bias_act import ACTIVATIONS, bias_act_ref
from stylegan_ops.upfirdn2d import _upfirdn2d_ref

CSRC = Path(_plugin.__file__).parent / "csrc"


@pytest.fixture(autouse=True)
def fresh(monkeypatch, tmp_path):
    monkeypatch.setenv("SYNTHFACE_CACHE", str(tmp_path / "cache"))
    _plugin.reset()
    yield
    _plugin.reset()


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc not installed")
@pytest.mark.parametrize("arch", ["80", "90"])
@pytest.mark.parametrize("source", ["bias_act.cu", "upfirdn2d.cu"])
def test_cuda_sources_compile_with_nvcc(arch, source, tmp_path):
    r = subprocess.run(["nvcc", "-c", "-O3", "-std=c++17", f"-gencode=arch=compute_{arch},code=sm_{arch}",
                        str(CSRC / source), "-o", str(tmp_path / "k.o")], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "k.o").stat().st_size > 1000


def test_ref_mode_never_builds(monkeypatch):
    monkeypatch.setenv("SYNTHFACE_OPS", "ref")
    monkeypatch.setattr(_plugin, "_build", lambda: pytest.fail("must not build"))
    assert _plugin.plugin() is None


def test_bad_mode_is_named(monkeypatch):
    monkeypatch.setenv("SYNTHFACE_OPS", "fast")
    with pytest.raises(ValueError, match="auto, cuda or ref"):
        _plugin.mode()


def fake_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.version, "cuda", "12.4")
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *a: (9, 0))


def test_missing_ninja_or_nvcc_is_diagnosed_and_auto_falls_back(monkeypatch):
    fake_cuda(monkeypatch)
    real_which = shutil.which
    monkeypatch.setattr(shutil, "which", lambda n: None if n == "ninja" else real_which(n))
    assert "ninja is not installed" in _plugin.diagnose()
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        assert _plugin.plugin() is None and _plugin.plugin() is None
    assert len([x for x in w if "ninja is not installed" in str(x.message)]) == 1  # warned once
    _plugin.reset()
    monkeypatch.setattr(shutil, "which", lambda n: "/usr/bin/ninja" if n == "ninja" else None)
    from torch.utils import cpp_extension
    monkeypatch.setattr(cpp_extension, "CUDA_HOME", None)
    assert "nvcc was not found" in _plugin.diagnose()


def test_cuda_mode_fails_loudly(monkeypatch):
    monkeypatch.setenv("SYNTHFACE_OPS", "cuda")
    with pytest.raises(_plugin.OpsBuildError, match="SYNTHFACE_OPS=cuda"):
        _plugin.plugin()


def test_compiler_failure_becomes_one_warning(monkeypatch):
    fake_cuda(monkeypatch)
    monkeypatch.setattr(_plugin, "diagnose", lambda: None)
    from torch.utils import cpp_extension

    def broken(**kw):
        raise RuntimeError("Error building extension\nnvcc fatal : Unsupported gpu architecture 'compute_100'")
    monkeypatch.setattr(cpp_extension, "load", broken)
    with pytest.warns(UserWarning, match="Unsupported gpu architecture"):
        assert _plugin.plugin() is None
    # the CPU path keeps working
    x = torch.randn(2, 3, 4, 4)
    assert torch.equal(bias_act(x, act="relu"), bias_act_ref(x, None, 1, "relu", 0.0, ACTIVATIONS["relu"].default_gain))


def test_stale_and_dead_locks_are_broken_and_live_ones_time_out(tmp_path):
    lock = tmp_path / "lock"
    p = subprocess.Popen(["true"])
    p.wait()
    lock.write_text(json.dumps({"pid": p.pid, "host": __import__("socket").gethostname(), "time": time.time()}))
    t = time.monotonic()
    with _plugin.BuildLock(lock, timeout=30):
        assert json.loads(lock.read_text())["pid"] == os.getpid()
    assert not lock.exists() and time.monotonic() - t < 5
    lock.write_text(json.dumps({"pid": os.getpid(), "host": "elsewhere", "time": time.time() - 7200}))
    with _plugin.BuildLock(lock, timeout=30, stale=3600):
        pass
    lock.write_text(json.dumps({"pid": os.getpid(), "host": __import__("socket").gethostname(), "time": time.time()}))
    t = time.monotonic()
    with pytest.raises(_plugin.OpsBuildError, match="held the build lock"):
        with _plugin.BuildLock(lock, timeout=1.0):
            pass
    assert time.monotonic() - t < 10


def test_build_key_changes_with_the_sources(monkeypatch, tmp_path):
    src = tmp_path / "csrc"
    shutil.copytree(CSRC, src)
    monkeypatch.setattr(_plugin, "CSRC", src)
    a = _plugin.source_hash()
    (src / "bias_act.cu").write_text((src / "bias_act.cu").read_text() + "\n// changed\n")
    assert _plugin.source_hash() != a


# ---------------------------------------------------------------- GPU: kernels vs reference

TOL = {torch.float32: 1e-5, torch.float16: 1e-2, torch.bfloat16: 5e-2, torch.float64: 1e-10}


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", list(TOL))
@pytest.mark.parametrize("act", list(ACTIVATIONS))
@pytest.mark.parametrize("channels_last", [False, True])
def test_bias_act_cuda_matches_reference(act, dtype, channels_last, monkeypatch):
    monkeypatch.setenv("SYNTHFACE_OPS", "cuda")
    x = torch.randn(3, 5, 7, 6, device="cuda", dtype=torch.float64)
    b = torch.randn(5, device="cuda", dtype=torch.float64)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    xd, bd = x.to(dtype).requires_grad_(), b.to(dtype).requires_grad_()
    spec = ACTIVATIONS[act]
    y = bias_act(xd, bd, act=act, clamp=2.5)
    xr, br = x.clone().requires_grad_(), b.clone().requires_grad_()
    r = bias_act_ref(xr, br, 1, act, spec.default_alpha, spec.default_gain, 2.5)
    assert (y.double() - r).abs().max() <= TOL[dtype] * max(1, r.abs().max())
    dy = torch.randn_like(r)
    gx, gb = torch.autograd.grad(y, [xd, bd], dy.to(dtype))
    rx, rb = torch.autograd.grad(r, [xr, br], dy)
    assert (gx.double() - rx).abs().max() <= 10 * TOL[dtype] * max(1, rx.abs().max())
    assert (gb.double() - rb).abs().max() <= 100 * TOL[dtype] * max(1, rb.abs().max())


@pytest.mark.gpu
def test_bias_act_cuda_second_order_gradcheck(monkeypatch):
    monkeypatch.setenv("SYNTHFACE_OPS", "cuda")
    x = torch.randn(2, 3, 4, 4, device="cuda", dtype=torch.float64, requires_grad=True)
    b = torch.randn(3, device="cuda", dtype=torch.float64, requires_grad=True)
    f = lambda x, b: bias_act(x, b, act="lrelu", clamp=1.5)
    assert torch.autograd.gradcheck(f, (x, b)) and torch.autograd.gradgradcheck(f, (x, b))


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", list(TOL))
@pytest.mark.parametrize("up,down,pad,taps", [(1, 1, (1, 1, 1, 1), [1, 3, 3, 1]), (2, 1, (2, 1, 2, 1), [1, 3, 3, 1]),
                                              (1, 2, (1, 1, 1, 1), [1, 3, 3, 1]), (2, 2, (3, 2, 0, -1), [1, 2, 1]),
                                              (1, 1, (3, 4, 3, 4), list(range(1, 9)))])
@pytest.mark.parametrize("flip", [False, True])
def test_upfirdn2d_cuda_matches_reference(up, down, pad, taps, dtype, flip, monkeypatch):
    monkeypatch.setenv("SYNTHFACE_OPS", "cuda")
    x = torch.randn(2, 3, 13, 11, device="cuda", dtype=torch.float64)
    for f in (setup_filter(taps, device="cuda"), torch.randn(len(taps), 3, device="cuda")):
        y = upfirdn2d(x.to(dtype), f, up=up, down=down, padding=pad, flip_filter=flip, gain=1.5)
        r = _upfirdn2d_ref(x, f.double(), up, up, down, down, pad, flip, 1.5)
        assert y.shape == r.shape and (y.double() - r).abs().max() <= TOL[dtype] * max(1, r.abs().max())
