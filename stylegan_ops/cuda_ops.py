"""Autograd wrappers of the CUDA kernels. Forward and bias_act's first-order gradient run the
kernels; higher-order gradients (and upfirdn2d's gradient) recompute through the PyTorch
reference, so they are exact and never the reason a training run fails.

`module` is the loaded extension: the CUDA one by default, or in tests its CPU twin
(_plugin.load_host_twin), which binds the same functions to CPU loops over the same maths."""

from __future__ import annotations

from typing import Optional

import torch

from . import _plugin

ACT_CODES = {"linear": 0, "relu": 1, "lrelu": 2, "tanh": 3, "sigmoid": 4, "elu": 5, "selu": 6, "softplus": 7,
             "swish": 8}
DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)
_twin: dict = {"module": None}


def usable(x: torch.Tensor) -> bool:
    return x.is_cuda and x.dtype in DTYPES and _plugin.mode() != "ref" and _plugin.plugin() is not None


def active(x: torch.Tensor) -> bool:
    """Whether the ops should run x through the extension: a CUDA tensor with the kernels
    available, or (tests) a CPU tensor while the CPU twin is installed."""
    if _twin["module"] is not None and x.device.type == "cpu":
        return x.dtype in DTYPES
    return x.is_cuda and usable(x)


def module():
    return _twin["module"] or _plugin.plugin()


def use_twin(twin) -> None:
    """Route the wrappers to the CPU twin (tests only); None restores the CUDA extension."""
    _twin["module"] = twin


def _stream(x: torch.Tensor) -> int:
    # The bindings take the stream as an integer so that they need no CUDA headers.
    return torch.cuda.current_stream(x.device).cuda_stream if x.is_cuda else 0


class BiasAct(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, b, dim, act, alpha, gain, clamp, ref):
        if not (x.is_contiguous() or (x.ndim == 4 and x.is_contiguous(memory_format=torch.channels_last))):
            x = x.contiguous()  # the kernel takes any dense layout; these two are the ones that occur
        bb = b if b is not None else x.new_empty([0])
        y = module().bias_act_forward(x, bb.to(x.dtype), dim, ACT_CODES[act], alpha, gain,
                                      -1.0 if clamp is None else clamp, _stream(x))
        ctx.save_for_backward(x, bb)
        ctx.args = (dim, act, alpha, gain, clamp, ref, b is not None)
        return y

    @staticmethod
    def backward(ctx, dy):
        x, bb = ctx.saved_tensors
        dim, act, alpha, gain, clamp, ref, has_b = ctx.args
        if torch.is_grad_enabled():  # double backward: differentiate the reference
            with torch.enable_grad():
                xr = x.detach().requires_grad_()
                br = bb.detach().requires_grad_() if has_b else None
                y = ref(xr, br, dim, act, alpha, gain, clamp)
                grads = torch.autograd.grad(y, [xr] + ([br] if has_b else []), dy, create_graph=True)
            return grads[0], (grads[1] if has_b else None), None, None, None, None, None, None
        dy = torch.empty_like(x).copy_(dy)  # x's layout, which the kernel requires of dy
        dx = module().bias_act_backward(dy, x, bb.to(x.dtype), dim, ACT_CODES[act], alpha, gain,
                                        -1.0 if clamp is None else clamp, _stream(x))
        db = dx.sum([d for d in range(dx.ndim) if d != dim]) if has_b else None
        return dx, db, None, None, None, None, None, None


class UpFirDn2d(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, g, upx, upy, downx, downy, px0, px1, py0, py1, ref):
        ctx.save_for_backward(x)
        ctx.ref = ref
        return module().upfirdn2d(x, g, upx, upy, downx, downy, px0, px1, py0, py1, _stream(x))

    @staticmethod
    def backward(ctx, dy):
        (x,) = ctx.saved_tensors
        with torch.enable_grad():
            xr = x.detach().requires_grad_()
            (dx,) = torch.autograd.grad(ctx.ref(xr), xr, dy, create_graph=torch.is_grad_enabled())
        return (dx,) + (None,) * 10


def upfirdn2d(x, f, upx, upy, downx, downy, px0, px1, py0, py1, flip_filter, gain, ref):
    """The kernel takes a float32 correlation filter with the gain folded in. A 1-D (separable)
    filter runs as two passes, a vertical and a horizontal one, each with fh or fw taps."""
    g = f.to(device=x.device, dtype=torch.float32)
    if not flip_filter:
        g = g.flip(list(range(g.ndim)))  # the kernel correlates; the op convolves
    if g.ndim == 2:
        return UpFirDn2d.apply(x, (g * gain).contiguous(), upx, upy, downx, downy, px0, px1, py0, py1, ref)
    return _separable(x, g * gain ** 0.5, upx, upy, downx, downy, px0, px1, py0, py1, ref)


def _separable(x, g, upx, upy, downx, downy, px0, px1, py0, py1, ref):
    m = module()
    if torch.is_grad_enabled() and x.requires_grad:
        return UpFirDn2d.apply(x, (g[:, None] * g[None, :]).contiguous(), upx, upy, downx, downy, px0, px1, py0, py1,
                               ref)
    y = m.upfirdn2d(x, g[:, None].contiguous(), 1, upy, 1, downy, 0, 0, py0, py1, _stream(x))
    return m.upfirdn2d(y, g[None, :].contiguous(), upx, 1, downx, 1, px0, px1, 0, 0, _stream(x))


def modconv_epilogue(y: torch.Tensor, d: Optional[torch.Tensor], noise: Optional[torch.Tensor],
                     bias: Optional[torch.Tensor], act: str, alpha: float, gain: float,
                     clamp: Optional[float]) -> torch.Tensor:
    """In place on a convolution output y [N, C, H, W]: clamp(act(y * d + noise + bias) * gain),
    d [N, C], noise broadcastable to [N, 1, H, W], bias [C]. No autograd."""
    if not (y.is_contiguous() or y.is_contiguous(memory_format=torch.channels_last)):
        y = y.contiguous()
    n, c, h, w = y.shape
    empty = y.new_empty([0], dtype=torch.float32)

    def f32(t, shape):
        return empty if t is None else t.detach().to(torch.float32).expand(shape).contiguous()

    nz = empty
    if noise is not None:  # [H, W] or [1, 1, H, W] shared by the batch, or [N, 1, H, W]
        nz = noise.detach().to(torch.float32)
        if nz.numel() not in (h * w, n * h * w):
            nz = nz.expand(n, 1, h, w)
        nz = nz.reshape(-1, h * w).contiguous()
    return module().modconv_epilogue(y, f32(d, (n, c)), nz, f32(bias, (c,)), ACT_CODES[act], float(alpha),
                                     float(gain), -1.0 if clamp is None else float(clamp), _stream(y))
