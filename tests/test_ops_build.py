"""The CUDA kernels' build: nvcc compiles them for sm_80/sm_90, the whole extension links and
imports, and a broken toolchain or a stale lock never hangs or kills a run.

Kernels vs the PyTorch reference, every op and dtype: on a GPU through the CUDA extension, and on
every machine through its CPU twin (csrc/host_twin.cpp: the same bindings and per-element
functions as the kernels, run as plain loops), so the kernels' maths and index arithmetic are
checked even where no GPU is."""

import contextlib
import json
import os
import shutil
import subprocess
import time
import warnings
from pathlib import Path

import pytest
import torch

from stylegan_ops import _plugin, bias_act, cuda_ops, modulated_conv2d, setup_filter, upfirdn2d
from stylegan_ops.bias_act import ACTIVATIONS, bias_act_ref
from stylegan_ops.modconv import _modconv_epilogue_kernel, modulated_conv2d_bias_act
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
@pytest.mark.parametrize("source", ["bias_act.cu", "upfirdn2d.cu", "modconv_epilogue.cu"])
def test_cuda_sources_compile_with_nvcc(arch, source, tmp_path):
    r = subprocess.run(["nvcc", "-c", "-O3", "-std=c++17", f"-gencode=arch=compute_{arch},code=sm_{arch}",
                        str(CSRC / source), "-o", str(tmp_path / "k.o")], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "k.o").stat().st_size > 1000


@pytest.mark.skipif(shutil.which("nvcc") is None or shutil.which("c++") is None, reason="nvcc or c++ missing")
def test_whole_extension_links_and_imports_without_a_gpu(tmp_path):
    """ops.cpp needs no CUDA headers, so even a CPU-only torch compiles it; linked with the nvcc
    objects and libcudart it must import and refuse CPU tensors with a clear message."""
    import importlib.util
    import sysconfig
    from torch.utils import cpp_extension

    cuda_home = Path(os.environ.get("CUDA_HOME") or cpp_extension.CUDA_HOME or "/usr/local/cuda")
    libdirs = [d for d in (cuda_home / "lib64", cuda_home / "lib", cuda_home / "targets" / "x86_64-linux" / "lib")
               if (d / "libcudart.so").exists()]
    if not libdirs:
        pytest.skip(f"no libcudart.so under {cuda_home} (set CUDA_HOME)")
    objs = []
    for src in _plugin.SOURCES:
        obj = tmp_path / (src + ".o")
        if src.endswith(".cu"):
            cmd = ["nvcc", "-c", "-O2", "-std=c++17", "-Xcompiler", "-fPIC", "-gencode=arch=compute_90,code=sm_90"]
        else:
            cmd = ["c++", "-c", "-O1", "-std=c++20", "-fPIC", "-DTORCH_EXTENSION_NAME=sfops_link",
                   "-I" + sysconfig.get_paths()["include"]] + ["-I" + p for p in cpp_extension.include_paths()]
        r = subprocess.run(cmd + [str(CSRC / src), "-o", str(obj)], capture_output=True, text=True, timeout=600)
        assert r.returncode == 0, r.stderr[-3000:]
        objs.append(str(obj))
    lib = tmp_path / "sfops_link.so"
    link = ["c++", "-shared", "-o", str(lib)] + objs + ["-L" + p for p in cpp_extension.library_paths()]
    link += ["-L" + str(libdirs[0]), "-Wl,-rpath," + str(libdirs[0])]
    r = subprocess.run(link + ["-lc10", "-ltorch", "-ltorch_cpu", "-ltorch_python", "-lcudart"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    spec = importlib.util.spec_from_file_location("sfops_link", lib)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert {"bias_act_forward", "bias_act_backward", "upfirdn2d", "modconv_epilogue"} <= set(dir(mod))
    with pytest.raises(RuntimeError, match="must be a CUDA tensor"):
        mod.bias_act_forward(torch.zeros(3), torch.zeros(0), 0, 0, 0.0, 1.0, -1.0, 0)


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


# ---------------------------------------------------------------- kernels vs reference

TOL = {torch.float32: 1e-5, torch.float16: 1e-2, torch.bfloat16: 5e-2, torch.float64: 1e-10}


@pytest.fixture(scope="session")
def twin_module(tmp_path_factory):
    if shutil.which("c++") is None:
        pytest.skip("no C++ compiler for the CPU twin")
    root = tmp_path_factory.mktemp("twin")
    # what a build killed half-way leaves: torch's own lock file, on which torch alone would wait forever
    stale = _plugin.twin_build_dir(root) / "lock"
    stale.parent.mkdir(parents=True)
    stale.write_text("")
    return _plugin.load_host_twin(root)


@pytest.fixture(params=["twin", pytest.param("cuda", marks=pytest.mark.gpu)])
def device(request, monkeypatch):
    """'twin': CPU tensors through the CPU twin of the extension; 'cuda': the CUDA kernels."""
    if request.param == "twin":
        cuda_ops.use_twin(request.getfixturevalue("twin_module"))
        yield "cpu"
        cuda_ops.use_twin(None)
    else:
        monkeypatch.setenv("SYNTHFACE_OPS", "cuda")
        yield "cuda"


def close(y, r, dtype, scale=1.0):
    y, r = y.detach(), r.detach()
    return y.shape == r.shape and float((y.double() - r).abs().max()) <= scale * TOL[dtype] * max(1.0, float(r.abs().max()))


@pytest.mark.parametrize("dtype", list(TOL))
@pytest.mark.parametrize("act", list(ACTIVATIONS))
@pytest.mark.parametrize("channels_last", [False, True])
def test_bias_act_kernel_matches_reference(device, act, dtype, channels_last):
    g = torch.Generator().manual_seed(0)
    x = (3 * torch.randn(3, 5, 7, 6, generator=g, dtype=torch.float64)).to(device)
    b = torch.randn(5, generator=g, dtype=torch.float64).to(device)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    x, b = x.to(dtype).double(), b.to(dtype).double()  # the reference sees the same (rounded) inputs
    xd, bd = x.to(dtype).requires_grad_(), b.to(dtype).requires_grad_()
    spec = ACTIVATIONS[act]
    y = bias_act(xd, bd, act=act, clamp=2.5)
    assert y.grad_fn is not None and "BiasAct" in type(y.grad_fn).__name__  # the kernel path ran
    xr, br = x.clone().requires_grad_(), b.clone().requires_grad_()
    r = bias_act_ref(xr, br, 1, act, spec.default_alpha, spec.default_gain, 2.5)
    assert close(y, r, dtype)
    assert y.is_contiguous(memory_format=torch.channels_last) == channels_last
    dy = torch.randn(r.shape, generator=g, dtype=torch.float64).to(device)
    gx, gb = torch.autograd.grad(y, [xd, bd], dy.to(dtype))
    rx, rb = torch.autograd.grad(r, [xr, br], dy)
    assert close(gx, rx, dtype, 10) and close(gb, rb, dtype, 100)


def test_bias_act_kernel_second_order_gradcheck(device):
    x = torch.randn(2, 3, 4, 4, dtype=torch.float64).to(device).requires_grad_()
    b = torch.randn(3, dtype=torch.float64).to(device).requires_grad_()
    f = lambda x, b: bias_act(x, b, act="lrelu", clamp=1.5)
    assert torch.autograd.gradcheck(f, (x, b)) and torch.autograd.gradgradcheck(f, (x, b))


UPFIRDN_CASES = [  # up, down, pad, taps
    (1, 1, (1, 1, 1, 1), [1, 3, 3, 1]), (2, 1, (2, 1, 2, 1), [1, 3, 3, 1]), (1, 2, (1, 1, 1, 1), [1, 3, 3, 1]),
    (2, 2, (3, 2, 0, -1), [1, 2, 1]), (1, 1, (3, 4, 3, 4), list(range(1, 9))), ((2, 1), (1, 2), (2, 1, 0, 3), [1, 3, 3, 1]),
    (4, 1, (5, 4, 5, 4), [1, 3, 3, 1]), (1, 1, (-2, -1, 1, -3), [1, 1]), (3, 2, (4, 3, 4, 3), list(range(1, 13))),
]


@pytest.mark.parametrize("dtype", list(TOL))
@pytest.mark.parametrize("up,down,pad,taps", UPFIRDN_CASES)
@pytest.mark.parametrize("flip", [False, True])
def test_upfirdn2d_kernel_matches_reference(device, up, down, pad, taps, dtype, flip):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 3, 13, 11, generator=g, dtype=torch.float64).to(device)
    ux, uy = (up, up) if isinstance(up, int) else up
    dx, dy = (down, down) if isinstance(down, int) else down
    # a filter as checkpoints store it (2-D outer product, or 1-D separable for >= 8 taps),
    # an explicit 1-D separable one, and a full-rank 2-D one
    filters = [setup_filter(taps), setup_filter(taps, separable=True),
               torch.randn(min(len(taps), 8), 3, generator=g)]
    for f in filters:
        f = f.to(device)
        y = upfirdn2d(x.to(dtype), f, up=up, down=down, padding=pad, flip_filter=flip, gain=1.5)
        r = _upfirdn2d_ref(x, f.double(), ux, uy, dx, dy, pad, flip, 1.5)
        # the kernel's filter taps are float32, as in NVIDIA's kernel, which bounds float64's accuracy
        assert close(y, r, dtype, 4 if dtype != torch.float64 else 1e4), (tuple(f.shape), y.shape, r.shape)
    xg = x.clone().requires_grad_()
    y = upfirdn2d(xg, filters[0].to(device).double(), up=up, down=down, padding=pad, flip_filter=flip)
    (gx,) = torch.autograd.grad(y.square().sum(), xg)
    xr = x.clone().requires_grad_()
    (rx,) = torch.autograd.grad(_upfirdn2d_ref(xr, filters[0].to(device).double(), ux, uy, dx, dy, pad, flip, 1)
                                .square().sum(), xr)
    assert close(gx, rx, torch.float64, 1e4)  # (y enters the loss; its taps were float32)


def test_twin_wide_index_path_gives_the_same_numbers(device, monkeypatch):
    if device != "cpu":
        pytest.skip("the 64-bit index branch is forced only in the CPU twin")
    x = torch.randn(2, 4, 9, 7, dtype=torch.float64)
    b = torch.randn(4, dtype=torch.float64)
    f = setup_filter([1, 3, 3, 1])

    def run():
        return bias_act(x, b, act="swish"), upfirdn2d(x, f, up=2, padding=2), \
            cuda_ops.modconv_epilogue(x.clone(), None, x[:, :1], b, "lrelu", 0.2, 1.4, 1.0)

    narrow = run()
    monkeypatch.setenv("SYNTHFACE_TWIN_WIDE_INDEX", "1")
    wide = run()
    assert all(torch.equal(a, b) for a, b in zip(narrow, wide))


@contextlib.contextmanager
def reference_path(device):
    """Run the pure-PyTorch ops whatever the device: without the twin on CPU, with
    SYNTHFACE_OPS=ref on CUDA."""
    twin, mode = cuda_ops._twin["module"], os.environ.get("SYNTHFACE_OPS")
    cuda_ops.use_twin(None)
    os.environ["SYNTHFACE_OPS"] = "ref"
    try:
        yield
    finally:
        cuda_ops.use_twin(twin)
        if mode is None:
            os.environ.pop("SYNTHFACE_OPS")
        else:
            os.environ["SYNTHFACE_OPS"] = mode


@pytest.mark.parametrize("dtype", list(TOL))
@pytest.mark.parametrize("act", ["lrelu", "linear", "tanh", "swish"])
@pytest.mark.parametrize("noise_kind", ["none", "const", "per_sample"])
@pytest.mark.parametrize("channels_last", [False, True])
def test_modconv_epilogue_kernel_matches_reference(device, dtype, act, noise_kind, channels_last):
    g = torch.Generator().manual_seed(2)
    n, c, h, w = 3, 5, 6, 4
    y = (4 * torch.randn(n, c, h, w, generator=g, dtype=torch.float64)).to(device)
    d = torch.rand(n, c, generator=g, dtype=torch.float64).to(device) + 0.5
    bias = torch.randn(c, generator=g, dtype=torch.float64).to(device)
    noise = {"none": None, "const": torch.randn(h, w, generator=g, dtype=torch.float64),
             "per_sample": torch.randn(n, 1, h, w, generator=g, dtype=torch.float64)}[noise_kind]
    noise = None if noise is None else noise.to(device)
    spec = ACTIVATIONS[act]
    r = y * d[:, :, None, None] + (0 if noise is None else noise)
    r = bias_act_ref(r, bias, 1, act, spec.default_alpha, spec.default_gain * 1.3, 2.0)
    yd = y.to(dtype)
    if channels_last:
        yd = yd.contiguous(memory_format=torch.channels_last)
    out = cuda_ops.modconv_epilogue(yd, d, noise, bias, act, spec.default_alpha, spec.default_gain * 1.3, 2.0)
    assert out.data_ptr() == yd.data_ptr()  # in place: no extra pass, no allocation
    assert close(out, r, dtype, 4 if dtype != torch.float64 else 1e5)  # d, noise, bias enter as float32


@pytest.mark.parametrize("up", [1, 2])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_synthesis_layer_through_the_epilogue_kernel_matches_reference(device, up, dtype):
    g = torch.Generator().manual_seed(3)
    x = torch.randn(4, 6, 8, 8, generator=g, dtype=dtype).to(device)
    weight = torch.randn(5, 6, 3, 3, generator=g, dtype=dtype).to(device)
    styles = torch.randn(4, 6, generator=g, dtype=dtype).to(device)
    bias = torch.randn(5, generator=g, dtype=dtype).to(device)
    noise = torch.randn(4, 1, 8 * up, 8 * up, generator=g, dtype=dtype).to(device) * 0.3
    f = setup_filter([1, 3, 3, 1]).to(device)
    kw = dict(up=up, padding=1, resample_filter=f, flip_weight=(up == 1))
    with torch.no_grad():
        y = _modconv_epilogue_kernel(x, weight, styles, bias, noise, act="lrelu", gain=0.7, clamp=1.0, **kw)
        y2 = modulated_conv2d_bias_act(x, weight, styles, bias, noise=noise, act="lrelu", gain=0.7, clamp=1.0, **kw)
        with reference_path(device):
            r = modulated_conv2d(x.double(), weight.double(), styles.double(), noise=noise.double(), **kw)
            r = bias_act_ref(r, bias.double(), 1, "lrelu", 0.2, 2 ** 0.5 * 0.7, 1.0)
    assert close(y, r, dtype, 10 if dtype != torch.float64 else 1e5) and torch.equal(y, y2)


def test_generator_through_the_kernels_matches_the_reference_path(device):
    from synthface.generator.networks import Generator

    torch.manual_seed(0)
    G = Generator(z_dim=32, c_dim=0, w_dim=32, img_resolution=32, img_channels=3,
                  mapping_kwargs=dict(num_layers=2), synthesis_kwargs=dict(channel_base=512, channel_max=32,
                                                                          conv_clamp=256)).to(device).eval()
    for mod in G.modules():  # noise strengths start at 0; make noise matter
        if hasattr(mod, "noise_strength"):
            mod.noise_strength.data.fill_(0.1)
    z = torch.randn(3, 32).to(device)
    with torch.no_grad():
        img = G(z, noise_mode="const")
        with reference_path(device):
            ref = G(z, noise_mode="const")
    assert img.shape == ref.shape == (3, 3, 32, 32)
    assert float((img - ref).abs().max()) < 1e-4 * max(1.0, float(ref.abs().max()))


def test_doctor_self_test_passes_and_catches_a_wrong_kernel(device, monkeypatch):
    from stylegan_ops import doctor

    lines = []
    assert doctor.self_test(lines.append, device=device), lines
    real = cuda_ops.modconv_epilogue
    monkeypatch.setattr(cuda_ops, "modconv_epilogue", lambda y, *a: real(y, *a).mul_(1.01))
    lines.clear()
    assert not doctor.self_test(lines.append, device=device)
    assert any("modconv epilogue" in line for line in lines)
