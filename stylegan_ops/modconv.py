"""Modulated convolution (StyleGAN2): per-sample input scaling, convolution, demodulation.

For sample n:  w'[o, i] = weight[o, i] * styles[n, i],
               d[n, o]  = 1 / sqrt(sum_{i,kh,kw} w'^2 + 1e-8)       (if demodulate)
               y[n, o]  = conv(x[n], w') * d[n, o] + noise[n]

Two formulations compute the same numbers:
  * fused: build w' * d per sample and run one grouped convolution with groups = N;
  * non-fused: scale x by the styles, run one ordinary convolution with the shared weight
    over the whole batch, then scale by d. Ordinary batched convolutions are much faster
    than grouped ones on CPU, so `fused=None` picks the non-fused formulation.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F

from . import cuda_ops
from .conv2d_resample import conv2d_resample


def squared_weight_sums(weight: torch.Tensor) -> torch.Tensor:
    """sum_k weight[o, i, k]^2 as [I, O]: it depends on the weight only, so without autograd it is
    computed once per weight and kept on the tensor (keyed by its version counter, so an in-place
    update such as loading a checkpoint recomputes it) instead of on every forward."""
    if torch.is_grad_enabled() and weight.requires_grad:
        return weight.square().sum(dim=[2, 3]).t()
    cached = getattr(weight, "_synthface_sq_sums", None)
    if cached is not None and cached[0] == weight._version and cached[1].device == weight.device \
            and cached[1].dtype == weight.dtype:
        return cached[1]
    sums = weight.detach().square().sum(dim=[2, 3]).t().contiguous()
    try:
        weight._synthface_sq_sums = (weight._version, sums)
    except (AttributeError, RuntimeError):  # tensors that refuse attributes: just recompute next time
        pass
    return sums


def demodulation_coefficients(weight: torch.Tensor, styles: torch.Tensor) -> torch.Tensor:
    """d[n, o] = 1 / sqrt(sum_{i,k} (weight[o,i,k] styles[n,i])^2 + 1e-8), as a small matmul:
    sum_i s[i]^2 sum_k w[o,i,k]^2, without materialising per-sample weights."""
    return (styles.square() @ squared_weight_sums(weight) + 1e-8).rsqrt()  # [N, O]


def _fp16_rescale(weight: torch.Tensor, styles: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """In fp16 the products can overflow; demodulation cancels any per-output scale, so rescale
    weight and styles to max-abs 1 first."""
    fan_in = weight[0].numel()
    weight = weight * (1 / fan_in ** 0.5 / weight.norm(float("inf"), dim=[1, 2, 3], keepdim=True))
    return weight, styles / styles.norm(float("inf"), dim=1, keepdim=True)


def modulated_conv2d(
    x: torch.Tensor,
    weight: torch.Tensor,
    styles: torch.Tensor,
    noise: Optional[torch.Tensor] = None,
    up: int = 1,
    down: int = 1,
    padding: int = 0,
    resample_filter: Optional[torch.Tensor] = None,
    demodulate: bool = True,
    flip_weight: bool = True,
    fused: Optional[bool] = None,
) -> torch.Tensor:
    # fused=None means non-fused: faster for batches, no slower for one image, and it keeps
    # an image's numbers independent of the batch it is in.
    fused = bool(fused)
    n = x.shape[0]
    out_channels, in_channels, kh, kw = weight.shape
    if x.shape[1] != in_channels or styles.shape != (n, in_channels):
        raise ValueError(
            f"modulated_conv2d: x {tuple(x.shape)}, weight {tuple(weight.shape)} and styles "
            f"{tuple(styles.shape)} do not agree"
        )
    if x.dtype == torch.float16 and demodulate:
        weight, styles = _fp16_rescale(weight, styles)

    dcoefs = demodulation_coefficients(weight, styles) if demodulate else None

    if not fused:
        x = x * styles.to(x.dtype).reshape(n, -1, 1, 1)
        x = conv2d_resample(x, weight.to(x.dtype), f=resample_filter, up=up, down=down, padding=padding, flip_weight=flip_weight)
        if dcoefs is not None and noise is not None:
            return torch.addcmul(noise.to(x.dtype), x, dcoefs.to(x.dtype).reshape(n, -1, 1, 1))
        if dcoefs is not None:
            return x * dcoefs.to(x.dtype).reshape(n, -1, 1, 1)
        if noise is not None:
            return x + noise.to(x.dtype)
        return x

    wmod = weight.unsqueeze(0) * styles.reshape(n, 1, in_channels, 1, 1)  # [N, O, I, kh, kw]
    if dcoefs is not None:
        wmod = wmod * dcoefs.reshape(n, -1, 1, 1, 1)
    x = x.reshape(1, n * in_channels, *x.shape[2:])
    wmod = wmod.reshape(n * out_channels, in_channels, kh, kw)
    x = conv2d_resample(x, wmod.to(x.dtype), f=resample_filter, up=up, down=down, padding=padding, groups=n, flip_weight=flip_weight)
    x = x.reshape(n, out_channels, *x.shape[2:])
    if noise is not None:
        x = x + noise.to(x.dtype)
    return x


# Activations with act(g * y) == g * act(y) for g > 0: their gain can be folded into the
# per-channel scale, bias and noise instead of costing a pass over the activations.
_HOMOGENEOUS = {"linear": 0.0, "relu": 0.0, "lrelu": 0.2}


def modulated_conv2d_bias_act(
    x: torch.Tensor,
    weight: torch.Tensor,
    styles: torch.Tensor,
    bias: torch.Tensor,
    noise: Optional[torch.Tensor] = None,
    up: int = 1,
    padding: int = 0,
    resample_filter: Optional[torch.Tensor] = None,
    act: str = "lrelu",
    gain: float = 1.0,
    clamp: Optional[float] = None,
    flip_weight: bool = True,
    fused: Optional[bool] = None,
) -> torch.Tensor:
    """A whole synthesis layer: clamp(act(modconv(x) * d + noise + bias) * gain).

    Same numbers as modulated_conv2d followed by bias_act, in fewer passes over memory:
    the activation gain is folded into the demodulation coefficients, the noise and the bias
    (valid for positively homogeneous activations), and without autograd the whole epilogue
    (scale, noise, bias, activation, clamp) runs in place on the convolution's output.
    """
    from .bias_act import bias_act, default_gain

    needs_grad = torch.is_grad_enabled() and any(
        t is not None and t.requires_grad for t in (x, weight, styles, bias, noise))
    if not fused and not needs_grad and cuda_ops.active(x):
        return _modconv_epilogue_kernel(x, weight, styles, bias, noise, up, padding, resample_filter, act, gain,
                                        clamp, flip_weight)
    if act not in _HOMOGENEOUS or fused or needs_grad or x.dtype != torch.float32:
        y = modulated_conv2d(x, weight, styles, noise=noise, up=up, padding=padding, resample_filter=resample_filter,
                             flip_weight=flip_weight, fused=fused)
        return bias_act(y, bias.to(y.dtype), act=act, gain=default_gain(act) * gain, clamp=clamp)

    return _layer_in_place(x, weight, styles, bias, noise, up, padding, resample_filter, act,
                           default_gain(act) * gain, clamp, flip_weight)


def _layer_in_place(x, weight, styles, bias, noise, up, padding, resample_filter, act, g, clamp, flip_weight):
    """modulated_conv2d_bias_act without autograd, for a positively homogeneous activation: the gain g
    is folded into the demodulation coefficients, noise and bias, and the epilogue runs in place."""
    n, in_channels = x.shape[:2]
    dcoefs = demodulation_coefficients(weight, styles) * g
    bias_g = (bias * g).to(x.dtype)
    if n == 1:
        # One sample: styles and demodulation both go into the (small) weight, as in NVIDIA's fused
        # formulation, which saves a pass over the input and one over the output.
        w = weight * (styles.reshape(1, in_channels, 1, 1) * dcoefs.reshape(-1, 1, 1, 1))
    else:
        x = x * styles.to(x.dtype).reshape(n, in_channels, 1, 1)
        w = weight
    if n == 1 and up == 1 and flip_weight and isinstance(padding, int) and padding >= 0:
        # a plain convolution: it adds the bias itself, saving another pass
        x = F.conv2d(x, w.to(x.dtype), bias_g, padding=padding)
        bias_g = None
    else:
        x = conv2d_resample(x, w.to(x.dtype), f=resample_filter, up=up, padding=padding, flip_weight=flip_weight)
    d = dcoefs.to(x.dtype).reshape(n, -1, 1, 1) if n > 1 else None
    # x is the convolution's fresh output, so the epilogue may work in place. Broadcasting
    # operands in another memory format than x take a slow path, hence the explicit formats.
    bias_g = bias_g.reshape(1, -1, 1, 1) if bias_g is not None else None
    addend = None  # added in the same pass as the demodulation (x * d + addend)
    if noise is None:
        addend = bias_g
    elif n == 1 or noise.shape[0] == n or bias_g is None:
        if d is not None:
            x.mul_(d)
            d = None
        x.add_((noise * g).to(x.dtype))
        addend = bias_g
    else:
        fmt = torch.channels_last if x.is_contiguous(memory_format=torch.channels_last) else torch.contiguous_format
        addend = torch.empty((1, *x.shape[1:]), dtype=x.dtype, device=x.device, memory_format=fmt)
        torch.add((noise * g).to(x.dtype).expand(1, 1, *x.shape[2:]), bias_g, out=addend)
    if d is not None and addend is not None:
        torch.addcmul(addend, x, d, out=x)
    elif d is not None:
        x.mul_(d)
    elif addend is not None:
        x.add_(addend)
    if act == "lrelu":
        F.leaky_relu_(x, _HOMOGENEOUS[act])
    elif act == "relu":
        x.relu_()
    if clamp is not None and clamp >= 0:
        x.clamp_(-clamp, clamp)
    return x


def _modconv_epilogue_kernel(x, weight, styles, bias, noise, up, padding, resample_filter, act, gain, clamp,
                             flip_weight):
    """The CUDA layer: scale the batch by its styles, one cuDNN convolution with the shared weight,
    then demodulation, noise, bias, activation, gain and clamp in one kernel pass (csrc/
    modconv_epilogue.cu) in place of the reference's four or five."""
    from .bias_act import _lookup, default_gain

    n = x.shape[0]
    if x.dtype == torch.float16:
        weight, styles = _fp16_rescale(weight, styles)
    dcoefs = demodulation_coefficients(weight, styles)
    x = x * styles.to(x.dtype).reshape(n, -1, 1, 1)
    y = conv2d_resample(x, weight.to(x.dtype), f=resample_filter, up=up, padding=padding, flip_weight=flip_weight)
    return cuda_ops.modconv_epilogue(y, dcoefs, noise, bias, act, _lookup(act).default_alpha,
                                     default_gain(act) * gain, clamp)


def modulated_torgb(
    x: torch.Tensor,
    weight: torch.Tensor,
    styles: torch.Tensor,
    bias: torch.Tensor,
    clamp: Optional[float] = None,
    fused: Optional[bool] = None,
) -> torch.Tensor:
    """A ToRGB layer: clamp(modconv1x1(x, no demodulation) + bias).

    For NHWC activations without autograd this is one batched matmul per image, x[n] [HW, I] @
    (weight * styles[n])^T [I, O], with the bias added by the matmul itself: the activations are
    read once, where the generic path scales them by the styles first (a full extra pass) and then
    runs the convolution and a separate bias pass. Otherwise modulated_conv2d + bias_act.
    """
    from .bias_act import bias_act

    n, in_channels, h, w = x.shape
    out_channels = weight.shape[0]
    needs_grad = torch.is_grad_enabled() and any(t.requires_grad for t in (x, weight, styles, bias))
    fast = (not fused and not needs_grad and weight.shape[2:] == (1, 1) and x.dtype == torch.float32
            and not cuda_ops.active(x) and x.is_contiguous(memory_format=torch.channels_last))
    if not fast:
        y = modulated_conv2d(x, weight, styles, demodulate=False, fused=fused)
        return bias_act(y, bias.to(y.dtype), clamp=clamp)
    if styles.shape != (n, in_channels):
        raise ValueError(f"modulated_torgb: x {tuple(x.shape)} and styles {tuple(styles.shape)} do not agree")
    wmod = styles.reshape(n, in_channels, 1) * weight.reshape(out_channels, in_channels).t()  # [N, I, O]
    rows = x.permute(0, 2, 3, 1).reshape(n, h * w, in_channels)  # a view: x is NHWC in memory
    y = torch.baddbmm(bias.to(x.dtype).reshape(1, 1, out_channels), rows, wmod)  # [N, HW, O]
    if clamp is not None and clamp >= 0:
        y.clamp_(-clamp, clamp)
    return y.reshape(n, h, w, out_channels).permute(0, 3, 1, 2)  # NCHW shape, NHWC memory
