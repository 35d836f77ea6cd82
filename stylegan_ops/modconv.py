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

from .conv2d_resample import conv2d_resample


def choose_fused(batch_size: int, dtype: torch.dtype) -> bool:
    # Non-fused everywhere by default: it is the faster formulation for batches, no slower
    # for a single image, and keeps an image's numbers independent of the batch it is in.
    return False


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
    n = x.shape[0]
    out_channels, in_channels, kh, kw = weight.shape
    if x.shape[1] != in_channels or styles.shape != (n, in_channels):
        raise ValueError(
            f"modulated_conv2d: x {tuple(x.shape)}, weight {tuple(weight.shape)} and styles "
            f"{tuple(styles.shape)} do not agree"
        )
    if fused is None:
        fused = choose_fused(n, x.dtype)

    # In fp16 the products can overflow; demodulation cancels any per-output scale, so
    # rescale weight and styles to max-abs 1 first.
    if x.dtype == torch.float16 and demodulate:
        weight = weight * (1 / (in_channels * kh * kw) ** 0.5 / weight.norm(float("inf"), dim=[1, 2, 3], keepdim=True))
        styles = styles / styles.norm(float("inf"), dim=1, keepdim=True)

    dcoefs = None
    if fused:
        wmod = weight.unsqueeze(0) * styles.reshape(n, 1, in_channels, 1, 1)  # [N, O, I, kh, kw]
        if demodulate:
            dcoefs = (wmod.square().sum(dim=[2, 3, 4]) + 1e-8).rsqrt()  # [N, O]
    elif demodulate:
        # sum_{i,k} (w[o,i,k] s[i])^2 = sum_i s[i]^2 sum_k w[o,i,k]^2: a small matmul instead
        # of materialising the per-sample weights.
        dcoefs = (styles.square() @ weight.square().sum(dim=[2, 3]).t() + 1e-8).rsqrt()  # [N, O]

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

    if dcoefs is not None:
        wmod = wmod * dcoefs.reshape(n, -1, 1, 1, 1)
    x = x.reshape(1, n * in_channels, *x.shape[2:])
    wmod = wmod.reshape(n * out_channels, in_channels, kh, kw)
    x = conv2d_resample(x, wmod.to(x.dtype), f=resample_filter, up=up, down=down, padding=padding, groups=n, flip_weight=flip_weight)
    x = x.reshape(n, out_channels, *x.shape[2:])
    if noise is not None:
        x = x + noise.to(x.dtype)
    return x
