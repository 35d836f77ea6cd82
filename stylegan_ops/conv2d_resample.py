"""2-D convolution combined with FIR up- or down-sampling.

Definition (the slow but obvious formulation; the code below computes the same thing
with fewer operations):

    upfirdn2d(x, f, up, padding=p') -> conv2d(., w) -> keep every `down`-th pixel after
    filtering with f again,

where p' is `padding` (given with respect to the up-sampled image) widened so that the
filter is centred. All convolutions are linear and shift invariant, so we may reorder them:
  * up-sampling: one strided transposed convolution with w, then the FIR filter (cheap,
    depthwise) with the padding adjusted for the kernel that moved first;
  * down-sampling: the FIR filter first, then a strided convolution.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F

from .upfirdn2d import Padding, filter_size, parse_padding, upfirdn2d


def _conv(x, w, stride=1, padding=0, groups=1, transpose=False, flip_weight=True):
    # F.conv2d is a correlation; a true convolution uses the flipped kernel.
    if not flip_weight:
        w = w.flip([2, 3])
    if transpose:
        return F.conv_transpose2d(x, w, stride=stride, padding=padding, groups=groups)
    return F.conv2d(x, w, stride=stride, padding=padding, groups=groups)


def conv2d_resample(
    x: torch.Tensor,
    w: torch.Tensor,
    f: Optional[torch.Tensor] = None,
    up: int = 1,
    down: int = 1,
    padding: Padding = 0,
    groups: int = 1,
    flip_weight: bool = True,
    flip_filter: bool = False,
) -> torch.Tensor:
    """Convolve x [N, I, H, W] with w [O, I/groups, kh, kw], resampling with filter f.

    flip_weight=True is a correlation (like F.conv2d); False a true convolution.
    """
    if x.ndim != 4 or w.ndim != 4:
        raise ValueError("conv2d_resample expects 4-D x and w")
    if up < 1 or down < 1:
        raise ValueError("up and down must be >= 1")
    out_channels, in_per_group, kh, kw = w.shape
    fw, fh = filter_size(f)
    px0, px1, py0, py1 = parse_padding(padding)
    if up > 1:
        px0 += (fw + up - 1) // 2
        px1 += (fw - up) // 2
        py0 += (fh + up - 1) // 2
        py1 += (fh - up) // 2
    if down > 1:
        px0 += (fw - down + 1) // 2
        px1 += (fw - down) // 2
        py0 += (fh - down + 1) // 2
        py1 += (fh - down) // 2

    if kw == 1 and kh == 1 and down > 1 and up == 1:
        x = upfirdn2d(x, f, down=down, padding=[px0, px1, py0, py1], flip_filter=flip_filter)
        return _conv(x, w, groups=groups, flip_weight=flip_weight)

    if kw == 1 and kh == 1 and up > 1 and down == 1:
        x = _conv(x, w, groups=groups, flip_weight=flip_weight)
        return upfirdn2d(x, f, up=up, padding=[px0, px1, py0, py1], gain=up * up, flip_filter=flip_filter)

    if down > 1 and up == 1:
        x = upfirdn2d(x, f, padding=[px0, px1, py0, py1], flip_filter=flip_filter)
        return _conv(x, w, stride=down, groups=groups, flip_weight=flip_weight)

    if up > 1:
        # conv_transpose2d wants [I, O/groups, kh, kw]: swap the channel axes per group.
        if groups == 1:
            wt = w.transpose(0, 1)
        else:
            wt = w.reshape(groups, out_channels // groups, in_per_group, kh, kw).transpose(1, 2)
            wt = wt.reshape(groups * in_per_group, out_channels // groups, kh, kw)
        # The transposed conv already did the kernel's part of the padding window.
        px0 -= kw - 1
        px1 -= kw - up
        py0 -= kh - 1
        py1 -= kh - up
        # Let the transposed conv crop what it can (cheaper than computing then cropping).
        cx = max(min(-px0, -px1), 0)
        cy = max(min(-py0, -py1), 0)
        # conv_transpose2d is a true convolution of the zero-stuffed input, so the
        # correlation/convolution choice is inverted here.
        x = _conv(x, wt, stride=up, padding=[cy, cx], groups=groups, transpose=True, flip_weight=not flip_weight)
        x = upfirdn2d(x, f, padding=[px0 + cx, px1 + cx, py0 + cy, py1 + cy], gain=up * up, flip_filter=flip_filter)
        if down > 1:
            x = upfirdn2d(x, f, down=down, flip_filter=flip_filter)
        return x

    if px0 == px1 and py0 == py1 and px0 >= 0 and py0 >= 0:
        return _conv(x, w, padding=[py0, px0], groups=groups, flip_weight=flip_weight)

    x = upfirdn2d(x, None, padding=[px0, px1, py0, py1])
    return _conv(x, w, groups=groups, flip_weight=flip_weight)
