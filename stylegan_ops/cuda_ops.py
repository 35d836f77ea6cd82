"""Autograd wrappers of the CUDA kernels. Forward and bias_act's first-order gradient run the
kernels; higher-order gradients (and upfirdn2d's gradient) recompute through the PyTorch
reference, so they are exact and never the reason a training run fails."""

from __future__ import annotations

import torch

from . import _plugin

ACT_CODES = {"linear": 0, "relu": 1, "lrelu": 2, "tanh": 3, "sigmoid": 4, "elu": 5, "selu": 6, "softplus": 7,
             "swish": 8}
DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)


def usable(x: torch.Tensor) -> bool:
    return x.is_cuda and x.dtype in DTYPES and _plugin.mode() != "ref" and _plugin.plugin() is not None


class BiasAct(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, b, dim, act, alpha, gain, clamp, ref):
        if not x.is_non_overlapping_and_dense():
            x = x.contiguous()
        bb = b if b is not None else x.new_empty([0])
        y = _plugin.plugin().bias_act_forward(x, bb.to(x.dtype), dim, ACT_CODES[act], alpha, gain,
                                              -1.0 if clamp is None else clamp)
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
        dy = dy.contiguous(memory_format=torch.channels_last) if x.is_contiguous(
            memory_format=torch.channels_last) and not x.is_contiguous() else dy.contiguous()
        dx = _plugin.plugin().bias_act_backward(dy, x, bb, dim, ACT_CODES[act], alpha, gain,
                                                -1.0 if clamp is None else clamp)
        db = dx.sum([d for d in range(dx.ndim) if d != dim]) if has_b else None
        return dx, db, None, None, None, None, None, None


class UpFirDn2d(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, g, upx, upy, downx, downy, px0, px1, py0, py1, ref):
        ctx.save_for_backward(x)
        ctx.ref = ref
        return _plugin.plugin().upfirdn2d(x, g, upx, upy, downx, downy, px0, px1, py0, py1)

    @staticmethod
    def backward(ctx, dy):
        (x,) = ctx.saved_tensors
        with torch.enable_grad():
            xr = x.detach().requires_grad_()
            (dx,) = torch.autograd.grad(ctx.ref(xr), xr, dy, create_graph=torch.is_grad_enabled())
        return (dx,) + (None,) * 10
