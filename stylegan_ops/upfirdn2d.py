"""upfirdn2d: zero-insertion up-sampling, pad/crop, FIR filtering, down-sampling.

Semantics (per channel, for each spatial axis):
  1. insert `up - 1` zeros after every input sample,
  2. pad by (pad0, pad1) samples (negative values crop),
  3. convolve with the FIR filter `f` (true convolution; `flip_filter=True` gives correlation),
     keeping only positions where the filter fully overlaps ("valid"),
  4. keep every `down`-th sample.
The filter is scaled by gain ** (f.ndim / 2) so that `gain` applies once to a 2-D signal.

This pure-PyTorch implementation avoids the wasteful zero-insertion: the up-sampling
step is a depthwise strided transposed convolution (polyphase), and rank-1 2-D filters
are applied as two 1-D passes.
"""

from __future__ import annotations

from typing import Optional, Sequence, Union

import torch
import torch.nn.functional as F

from . import cuda_ops

Padding = Union[int, Sequence[int]]


def setup_filter(
    f,
    device: Union[str, torch.device] = "cpu",
    normalize: bool = True,
    flip_filter: bool = False,
    gain: float = 1,
    separable: Optional[bool] = None,
) -> torch.Tensor:
    """Turn a list / array / tensor into a float32 FIR filter tensor.

    A 1-D filter of fewer than 8 taps becomes its 2-D outer product (the layout that
    StyleGAN2 checkpoints store in `resample_filter` buffers); longer ones stay 1-D
    (separable). The filter is normalised to unit DC gain unless `normalize=False`.
    """
    if f is None:
        f = 1
    f = torch.as_tensor(f, dtype=torch.float32)
    if f.ndim == 0:
        f = f.reshape(1)
    if f.ndim not in (1, 2) or f.numel() == 0:
        raise ValueError(f"filter must be a non-empty 1-D or 2-D array, got shape {tuple(f.shape)}")
    if separable is None:
        separable = f.ndim == 1 and f.numel() >= 8
    if f.ndim == 1 and not separable:
        f = torch.outer(f, f)
    if separable and f.ndim != 1:
        raise ValueError("a 2-D filter cannot be made separable")
    if normalize:
        f = f / f.sum()
    if flip_filter:
        f = f.flip(list(range(f.ndim)))
    f = f * (gain ** (f.ndim / 2))
    return f.to(device=device)


def parse_padding(padding: Padding) -> tuple[int, int, int, int]:
    """int -> all sides; [px, py]; or [x0, x1, y0, y1]."""
    if isinstance(padding, int):
        return padding, padding, padding, padding
    padding = [int(p) for p in padding]
    if len(padding) == 2:
        px, py = padding
        return px, px, py, py
    if len(padding) == 4:
        return tuple(padding)  # type: ignore[return-value]
    raise ValueError(f"padding must be an int, [x, y] or [x0, x1, y0, y1], got {padding}")


def filter_size(f: Optional[torch.Tensor]) -> tuple[int, int]:
    """(width, height) of a filter; 1-D filters apply along both axes."""
    if f is None:
        return 1, 1
    if f.ndim == 1:
        return f.shape[0], f.shape[0]
    return f.shape[1], f.shape[0]


def _split_separable(f: torch.Tensor) -> Optional[tuple[torch.Tensor, torch.Tensor]]:
    """Return (fy, fx) with f == outer(fy, fx) if f is rank one, else None.

    The answer is remembered on the filter tensor (keyed by its version counter), so the
    check, which reads the filter's values, runs once per filter and not on every call:
    on a GPU each check would be a device-to-host synchronisation.
    """
    if f.ndim == 1:
        return f, f
    cached = getattr(f, "_synthface_separable", None)
    if cached is not None and cached[0] == f._version:
        return cached[1]
    result = _rank_one_factors(f)
    try:
        f._synthface_separable = (f._version, result)
    except (AttributeError, RuntimeError):  # e.g. tensors that refuse attributes
        pass
    return result


def _rank_one_factors(f: torch.Tensor) -> Optional[tuple[torch.Tensor, torch.Tensor]]:
    if f.shape[0] == 1 or f.shape[1] == 1:
        return None  # already a single pass
    total = f.sum()
    if float(total) == 0.0:
        return None
    fy, fx = f.sum(dim=1), f.sum(dim=0) / total
    if torch.allclose(torch.outer(fy, fx), f, rtol=1e-5, atol=1e-8 * float(f.abs().max())):
        return fy, fx
    return None


def upfirdn2d(
    x: torch.Tensor,
    f: Optional[torch.Tensor],
    up: Union[int, Sequence[int]] = 1,
    down: Union[int, Sequence[int]] = 1,
    padding: Padding = 0,
    flip_filter: bool = False,
    gain: float = 1,
) -> torch.Tensor:
    """Up-sample, pad, FIR-filter and down-sample a batch of images [N, C, H, W]."""
    if not (isinstance(x, torch.Tensor) and x.ndim == 4):
        raise ValueError("upfirdn2d expects a 4-D tensor [N, C, H, W]")
    if f is None:
        f = torch.ones([1, 1], dtype=torch.float32, device=x.device)
    upx, upy = (up, up) if isinstance(up, int) else tuple(up)
    downx, downy = (down, down) if isinstance(down, int) else tuple(down)
    if min(upx, upy, downx, downy) < 1:
        raise ValueError("up and down must be >= 1")
    px0, px1, py0, py1 = parse_padding(padding)
    if cuda_ops.active(x):
        return cuda_ops.upfirdn2d(
            x, f, upx, upy, downx, downy, px0, px1, py0, py1, flip_filter, gain,
            lambda t: _upfirdn2d_ref(t, f, upx, upy, downx, downy, (px0, px1, py0, py1), flip_filter, gain))
    return _upfirdn2d_ref(x, f, upx, upy, downx, downy, (px0, px1, py0, py1), flip_filter, gain)


def _upfirdn2d_ref(x, f, upx, upy, downx, downy, padding, flip_filter, gain):
    px0, px1, py0, py1 = padding
    # Factorise before casting/scaling: the cache lives on the caller's (persistent) filter. A pure
    # FIR pass (no up- or down-sampling) stays one depthwise 2-D convolution: on CPU oneDNN ran it in
    # 35-92 % of the time of two 1-D passes on the 256 config's shapes (docs/benchmarks.md, issue 28).
    pure_fir = f.ndim == 2 and upx == upy == downx == downy == 1
    taps = None if pure_fir else _split_separable(f)
    # gain applies once to the 2-D response: a 1-D filter takes sqrt(gain) per axis, a
    # factorised 2-D filter takes all of it on one axis.
    scale = gain ** (f.ndim / 2)
    f = f.to(device=x.device, dtype=x.dtype) * scale
    if taps is not None:
        fy, fx = (t.to(device=x.device, dtype=x.dtype) for t in taps)
        taps = (fy * scale, fx * scale if f.ndim == 1 else fx)
    if taps is None:
        passes = [(f, (upy, upx), (downy, downx), (py0, py1, px0, px1))]
    else:
        fy, fx = taps
        passes = [
            (fy[:, None], (upy, 1), (downy, 1), (py0, py1, 0, 0)),
            (fx[None, :], (1, upx), (1, downx), (0, 0, px0, px1)),
        ]
    for kernel, (uy, ux), (dy, dx), (a0, a1, b0, b1) in passes:
        x = _up_filter_down(x, kernel, uy, ux, dy, dx, a0, a1, b0, b1, flip_filter)
    return x


def _up_filter_down(x, kernel, uy, ux, dy, dx, py0, py1, px0, px1, flip_filter):
    n, c, h, w = x.shape
    kh, kw = kernel.shape
    if flip_filter:
        kernel = kernel.flip([0, 1])
    weight = kernel[None, None].expand(c, 1, kh, kw)
    if uy > 1 or ux > 1:
        # Depthwise transposed conv of x with the unflipped kernel == full convolution of
        # the zero-stuffed signal (minus its trailing zeros). Crop/pad to the requested window.
        y = F.conv_transpose2d(x, weight, stride=(uy, ux), groups=c)
        x = F.pad(y, [px0 - (kw - 1), px1 - kw + ux, py0 - (kh - 1), py1 - kh + uy])
        if dy > 1 or dx > 1:
            x = x[:, :, ::dy, ::dx]
        return x
    if px0 == px1 and py0 == py1 and px0 >= 0 and py0 >= 0:
        return F.conv2d(x, weight.flip([2, 3]), stride=(dy, dx), padding=(py0, px0), groups=c)
    x = F.pad(x, [px0, px1, py0, py1])
    return F.conv2d(x, weight.flip([2, 3]), stride=(dy, dx), groups=c)


def upsample2d(x: torch.Tensor, f: torch.Tensor, up: int = 2, padding: Padding = 0, flip_filter: bool = False, gain: float = 1):
    """Up-sample by `up` with filter f, output size exactly up * input (plus padding)."""
    fw, fh = filter_size(f)
    px0, px1, py0, py1 = parse_padding(padding)
    pad = [px0 + (fw + up - 1) // 2, px1 + (fw - up) // 2, py0 + (fh + up - 1) // 2, py1 + (fh - up) // 2]
    return upfirdn2d(x, f, up=up, padding=pad, flip_filter=flip_filter, gain=gain * up * up)


def downsample2d(x: torch.Tensor, f: torch.Tensor, down: int = 2, padding: Padding = 0, flip_filter: bool = False, gain: float = 1):
    """Down-sample by `down` with filter f, output size exactly input / down (plus padding)."""
    fw, fh = filter_size(f)
    px0, px1, py0, py1 = parse_padding(padding)
    pad = [px0 + (fw - down + 1) // 2, px1 + (fw - down) // 2, py0 + (fh - down + 1) // 2, py1 + (fh - down) // 2]
    return upfirdn2d(x, f, down=down, padding=pad, flip_filter=flip_filter, gain=gain)


def filter2d(x: torch.Tensor, f: torch.Tensor, padding: Padding = 0, flip_filter: bool = False, gain: float = 1):
    """Filter with f keeping the spatial size (plus padding)."""
    fw, fh = filter_size(f)
    px0, px1, py0, py1 = parse_padding(padding)
    pad = [px0 + fw // 2, px1 + (fw - 1) // 2, py0 + fh // 2, py1 + (fh - 1) // 2]
    return upfirdn2d(x, f, padding=pad, flip_filter=flip_filter, gain=gain)
