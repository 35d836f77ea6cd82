"""`synthface ops doctor`: build the kernels, self-test them against the PyTorch ops, diagnose."""

from __future__ import annotations

import shutil

from . import _plugin


def run(log=print) -> bool:
    import torch

    log(f"SYNTHFACE_OPS={_plugin.mode()}  torch {torch.__version__}  CUDA {torch.version.cuda}  "
        f"device {'%s (sm_%d%d)' % ((torch.cuda.get_device_name(),) + torch.cuda.get_device_capability()) if torch.cuda.is_available() else 'none'}")
    log(f"ninja: {shutil.which('ninja') or 'missing'}   nvcc: {shutil.which('nvcc') or 'missing'}   "
        f"cache: {_plugin.cache_root()}")
    reason = _plugin.diagnose()
    if reason:
        log(f"diagnosis: {reason}; the PyTorch ops are used")
        return False
    _plugin.reset()
    try:
        mod = _plugin._build()
    except _plugin.OpsBuildError as e:
        log(f"build FAILED: {e}")
        return False
    _plugin._state.update(module=mod, tried=True)
    log(f"built and loaded ({_plugin.build_key()})")
    return self_test(log)


def self_test(log=print, device: str = "cuda") -> bool:
    """Every kernel against the PyTorch ops, in fp32, fp16 and bf16. (device="cpu" runs the same
    checks through the extension's CPU twin when tests have installed it.)"""
    import torch

    from . import cuda_ops
    from .bias_act import ACTIVATIONS, bias_act, bias_act_ref
    from .upfirdn2d import _upfirdn2d_ref, setup_filter, upfirdn2d

    ok = True
    g = torch.Generator(device=device).manual_seed(0)
    tol = {torch.float32: 1e-5, torch.float16: 1e-2, torch.bfloat16: 5e-2}
    for dtype, t in tol.items():
        x = torch.randn(4, 8, 16, 16, device=device, generator=g).to(dtype)
        b = torch.randn(8, device=device, generator=g).to(dtype)
        for act in ACTIVATIONS:
            spec = ACTIVATIONS[act]
            y = bias_act(x, b, act=act, clamp=3.0)
            r = bias_act_ref(x.float(), b.float(), 1, act, spec.default_alpha, spec.default_gain, 3.0)
            err = (y.float() - r).abs().max().item()
            if err > t * max(1.0, r.abs().max().item()):
                ok = False
                log(f"bias_act {act} {dtype}: max error {err:.2e} > {t:.0e}")
        f = setup_filter([1, 3, 3, 1], device=device)
        for up, down, pad in [(2, 1, (2, 1)), (1, 2, (1, 1)), (1, 1, (1, 1)), (2, 2, (3, 2))]:
            y = upfirdn2d(x, f, up=up, down=down, padding=pad * 2 if len(pad) == 2 else pad)
            r = _upfirdn2d_ref(x.float(), f, up, up, down, down, pad * 2, False, 1)
            err = (y.float() - r).abs().max().item()
            if err > t * max(1.0, r.abs().max().item()):
                ok = False
                log(f"upfirdn2d up {up} down {down} {dtype}: max error {err:.2e} > {t:.0e}")
        d = torch.rand(4, 8, device=device, generator=g) + 0.5
        noise = torch.randn(4, 1, 16, 16, device=device, generator=g)
        r = bias_act_ref(x.float() * d[:, :, None, None] + noise, b.float(), 1, "lrelu", 0.2, 2 ** 0.5, 3.0)
        y = cuda_ops.modconv_epilogue(x.clone(), d, noise, b, "lrelu", 0.2, 2 ** 0.5, 3.0)
        err = (y.float() - r).abs().max().item()
        if err > 4 * t * max(1.0, r.abs().max().item()):
            ok = False
            log(f"modconv epilogue {dtype}: max error {err:.2e} > {4 * t:.0e}")
    log("self-test: " + ("all ops match the PyTorch reference" if ok else "MISMATCHES (see above)"))
    return ok
