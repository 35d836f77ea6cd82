"""stylegan_ops against naive definitions written with loops, plus float64 gradchecks."""

import itertools
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import stylegan_ops as ops


def naive_upfirdn2d(x, f, up, down, pad, flip_filter=False, gain=1.0):
    """Literal definition, per channel, with numpy loops: zero-insert, pad/crop, convolve, decimate."""
    x = x.double().numpy()
    f = f.double().numpy()
    if f.ndim == 1:
        f = np.outer(f, f)
    f = f * gain
    if not flip_filter:
        f = f[::-1, ::-1]  # true convolution = correlation with the flipped filter
    n, c, h, w = x.shape
    px0, px1, py0, py1 = pad
    z = np.zeros((n, c, h * up, w * up))
    z[:, :, ::up, ::up] = x
    zp = np.zeros((n, c, h * up + max(py0, 0) + max(py1, 0), w * up + max(px0, 0) + max(px1, 0)))
    zp[:, :, max(py0, 0):max(py0, 0) + h * up, max(px0, 0):max(px0, 0) + w * up] = z
    zp = zp[:, :, max(-py0, 0):zp.shape[2] - max(-py1, 0), max(-px0, 0):zp.shape[3] - max(-px1, 0)]
    fh, fw = f.shape
    oh, ow = zp.shape[2] - fh + 1, zp.shape[3] - fw + 1
    out = np.zeros((n, c, oh, ow))
    for i in range(oh):
        for j in range(ow):
            out[:, :, i, j] = (zp[:, :, i:i + fh, j:j + fw] * f).sum(axis=(2, 3))
    return torch.from_numpy(out[:, :, ::down, ::down].copy())


@pytest.mark.parametrize("up,down,pad", [(1, 1, (1, 2, 0, 1)), (2, 1, (2, 1, 2, 1)), (1, 2, (1, 1, 1, 1)),
                                         (2, 2, (1, 0, 2, -1)), (3, 1, (-1, 2, 0, 0)), (1, 1, (-1, 0, 2, 1))])
@pytest.mark.parametrize("kind", ["outer4", "asym2d", "sep8"])
@pytest.mark.parametrize("flip", [False, True])
def test_upfirdn2d_matches_definition(up, down, pad, kind, flip):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 3, 9, 10, generator=g)
    if kind == "outer4":
        f = ops.setup_filter([1, 3, 3, 1])
    elif kind == "asym2d":
        f = torch.rand(3, 5, generator=g)  # not rank one, not symmetric
    else:
        f = ops.setup_filter(torch.rand(8, generator=g).tolist())
        assert f.ndim == 1
    got = ops.upfirdn2d(x, f, up=up, down=down, padding=list(pad), flip_filter=flip, gain=1.7)
    want = naive_upfirdn2d(x, f, up, down, pad, flip, gain=1.7)
    assert got.shape == want.shape
    torch.testing.assert_close(got.double(), want, atol=1e-5, rtol=1e-5)


def test_setup_filter():
    f = ops.setup_filter([1, 3, 3, 1])
    assert f.shape == (4, 4) and torch.allclose(f.sum(), torch.tensor(1.0))
    assert torch.allclose(f, torch.outer(torch.tensor([1., 3, 3, 1]), torch.tensor([1., 3, 3, 1])) / 64)
    assert ops.setup_filter(list(range(1, 9))).shape == (8,)


def test_upsample_and_downsample_sizes_and_dc_gain():
    x = torch.ones(1, 2, 8, 8)
    f = ops.setup_filter([1, 3, 3, 1])
    up = ops.upsample2d(x, f)
    assert up.shape == (1, 2, 16, 16)
    torch.testing.assert_close(up[:, :, 2:-2, 2:-2], torch.ones(1, 2, 12, 12))  # unit DC gain away from borders
    down = ops.downsample2d(x, f)
    assert down.shape == (1, 2, 4, 4)
    torch.testing.assert_close(down[:, :, 1:-1, 1:-1], torch.ones(1, 2, 2, 2))


def naive_conv2d_resample(x, w, f, up, down, padding, flip_weight):
    """Definition: FIR up-sample (with gain up^2) padded around the filter, conv, FIR down-sample."""
    fw = f.shape[-1]
    px0 = px1 = padding
    if up > 1:
        px0 += (fw + up - 1) // 2
        px1 += (fw - up) // 2
    if down > 1:
        px0 += (fw - down + 1) // 2
        px1 += (fw - down) // 2
    x = naive_upfirdn2d(x, f if up > 1 else torch.ones(1, 1), up, 1, (px0, px1, px0, px1), gain=up * up).float()
    wk = w if flip_weight else w.flip([2, 3])
    x = F.conv2d(x, wk)
    if down > 1:
        x = naive_upfirdn2d(x, f, 1, down, (0, 0, 0, 0)).float()
    return x


@pytest.mark.parametrize("up,down,k,flip_weight", [(2, 1, 3, False), (2, 1, 3, True), (1, 2, 3, True),
                                                   (2, 1, 1, True), (1, 2, 1, True), (1, 1, 3, True)])
def test_conv2d_resample_matches_definition(up, down, k, flip_weight):
    g = torch.Generator().manual_seed(2)
    x = torch.randn(2, 4, 6, 6, generator=g)
    w = torch.randn(5, 4, k, k, generator=g)
    f = ops.setup_filter([1, 3, 3, 1])
    got = ops.conv2d_resample(x, w, f=f, up=up, down=down, padding=k // 2, flip_weight=flip_weight)
    want = naive_conv2d_resample(x, w, f, up, down, k // 2, flip_weight)
    assert got.shape == want.shape
    torch.testing.assert_close(got, want, atol=2e-5, rtol=1e-5)


def naive_modconv(x, weight, styles, noise, up, demodulate, f):
    outs = []
    for n in range(x.shape[0]):
        w = weight * styles[n].reshape(1, -1, 1, 1)
        if demodulate:
            w = w / torch.sqrt((w ** 2).sum(dim=[1, 2, 3], keepdim=True) + 1e-8)
        y = naive_conv2d_resample(x[n:n + 1], w, f, up, 1, weight.shape[-1] // 2, flip_weight=(up == 1))
        outs.append(y)
    y = torch.cat(outs)
    return y + noise if noise is not None else y


@pytest.mark.parametrize("up,demodulate,with_noise", list(itertools.product([1, 2], [True, False], [True, False])))
@pytest.mark.parametrize("fused", [True, False])
def test_modulated_conv2d_formulations_match_definition(up, demodulate, with_noise, fused):
    g = torch.Generator().manual_seed(3)
    x = torch.randn(3, 4, 5, 5, generator=g)
    weight = torch.randn(6, 4, 3, 3, generator=g)
    styles = torch.randn(3, 4, generator=g) + 1
    noise = torch.randn(3, 1, 5 * up, 5 * up, generator=g) if with_noise else None
    f = ops.setup_filter([1, 3, 3, 1])
    got = ops.modulated_conv2d(x, weight, styles, noise=noise, up=up, padding=1, resample_filter=f,
                               demodulate=demodulate, flip_weight=(up == 1), fused=fused)
    want = naive_modconv(x, weight, styles, noise, up, demodulate, f)
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("act", sorted(ops.ACTIVATIONS))
def test_bias_act_against_formula(act):
    g = torch.Generator().manual_seed(4)
    x = torch.randn(2, 5, 3, 3, generator=g) * 3
    b = torch.randn(5, generator=g)
    y = x + b.reshape(1, -1, 1, 1)
    formulas = {
        "linear": lambda v: v, "relu": lambda v: v.clamp(min=0), "lrelu": lambda v: torch.where(v > 0, v, 0.2 * v),
        "tanh": torch.tanh, "sigmoid": torch.sigmoid, "elu": lambda v: torch.where(v > 0, v, torch.exp(v) - 1),
        "selu": lambda v: 1.0507009873554805 * torch.where(v > 0, v, 1.6732632423543772 * (torch.exp(v) - 1)),
        "softplus": lambda v: torch.log1p(torch.exp(v)), "swish": lambda v: v / (1 + torch.exp(-v)),
    }
    gain = {"relu": math.sqrt(2), "lrelu": math.sqrt(2), "swish": math.sqrt(2)}.get(act, 1.0)
    want = (formulas[act](y) * gain).clamp(-2.5, 2.5)
    torch.testing.assert_close(ops.bias_act(x, b, act=act, clamp=2.5), want, atol=1e-5, rtol=1e-5)
    # explicit gain overrides the default; dim selects the bias axis
    z = torch.randn(4, 7, generator=g)
    torch.testing.assert_close(ops.bias_act(z, torch.ones(4), dim=0, act="linear", gain=3.0), (z + 1) * 3)


def test_bias_act_rejects_bad_input():
    with pytest.raises(ValueError, match="unknown activation"):
        ops.bias_act(torch.zeros(1, 2), act="gelu2")
    with pytest.raises(ValueError, match="does not match"):
        ops.bias_act(torch.zeros(1, 2), torch.zeros(3))


def test_gradcheck_float64():
    g = torch.Generator().manual_seed(5)
    f = ops.setup_filter([1, 3, 3, 1]).double()
    x = torch.randn(1, 2, 4, 4, generator=g, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: ops.upfirdn2d(t, f, up=2, padding=[2, 1, 2, 1], gain=4), (x,))
    assert torch.autograd.gradcheck(lambda t: ops.upfirdn2d(t, f, down=2, padding=1), (x,))
    w = torch.randn(3, 2, 3, 3, generator=g, dtype=torch.float64, requires_grad=True)
    s = torch.randn(1, 2, generator=g, dtype=torch.float64, requires_grad=True)
    for fused in (True, False):
        fn = lambda a, b, c, fused=fused: ops.modulated_conv2d(a, b, c, up=2, padding=1, resample_filter=f,
                                                               flip_weight=False, fused=fused)
        assert torch.autograd.gradcheck(fn, (x, w, s))
    b = torch.randn(2, generator=g, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t, u: ops.bias_act(t, u, act="lrelu", clamp=1.5), (x, b))
    assert torch.autograd.gradgradcheck(lambda t, u: ops.bias_act(t, u, act="swish"), (x, b))


def test_separability_cache_follows_in_place_changes():
    g = torch.Generator().manual_seed(6)
    x = torch.randn(1, 2, 8, 8, generator=g)
    f = ops.setup_filter([1, 3, 3, 1])
    ops.upfirdn2d(x, f, up=2, padding=[2, 1, 2, 1])  # caches "rank one" on f
    with torch.no_grad():
        f.copy_(torch.rand(4, 4, generator=g))  # no longer rank one
    got = ops.upfirdn2d(x, f, up=2, padding=[2, 1, 2, 1])
    torch.testing.assert_close(got.double(), naive_upfirdn2d(x, f, 2, 1, (2, 1, 2, 1)), atol=1e-5, rtol=1e-5)


def _reference_layer(x, weight, styles, bias, noise, up, clamp, gain=1.0):
    """The plain formulation: grouped modulated convolution, then bias_act (what NVIDIA's code runs)."""
    f = ops.setup_filter([1, 3, 3, 1])
    y = ops.modulated_conv2d(x, weight, styles, noise=noise, up=up, padding=1, resample_filter=f,
                             flip_weight=(up == 1), fused=True)
    return ops.bias_act(y, bias, act="lrelu", gain=math.sqrt(2) * gain, clamp=clamp)


@pytest.mark.parametrize("batch,up,noise_kind", list(itertools.product([1, 3], [1, 2], ["const", "per-sample", None])))
@pytest.mark.parametrize("channels_last", [False, True])
def test_cpu_layer_matches_grouped_formulation(batch, up, noise_kind, channels_last):
    g = torch.Generator().manual_seed(7)
    x = torch.randn(batch, 6, 8, 8, generator=g)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    weight = torch.randn(5, 6, 3, 3, generator=g)
    styles = torch.randn(batch, 6, generator=g) + 1
    bias = torch.randn(5, generator=g)
    size = 8 * up
    noise = {"const": torch.randn(size, size, generator=g) * 0.3,
             "per-sample": torch.randn(batch, 1, size, size, generator=g) * 0.3, None: None}[noise_kind]
    f = ops.setup_filter([1, 3, 3, 1])
    with torch.no_grad():
        got = ops.modulated_conv2d_bias_act(x, weight, styles, bias, noise=noise, up=up, padding=1,
                                            resample_filter=f, gain=0.7, clamp=0.9, flip_weight=(up == 1))
        want = _reference_layer(x, weight, styles, bias, noise, up, clamp=0.9, gain=0.7)
    assert (want.abs() >= 0.9 - 1e-6).any() and (want.abs() < 0.5).any()  # the clamp is exercised
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("batch", [1, 4])
def test_torgb_matmul_matches_convolution(batch):
    g = torch.Generator().manual_seed(8)
    x = torch.randn(batch, 7, 6, 6, generator=g).contiguous(memory_format=torch.channels_last)
    weight = torch.randn(3, 7, 1, 1, generator=g)
    styles = torch.randn(batch, 7, generator=g)
    bias = torch.randn(3, generator=g)
    with torch.no_grad():
        got = ops.modulated_torgb(x, weight, styles, bias, clamp=1.5)
        want = ops.bias_act(ops.modulated_conv2d(x, weight, styles, demodulate=False, fused=True), bias, clamp=1.5)
    assert got.shape == want.shape and (want.abs() == 1.5).any()
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def test_squared_weight_sums_cache_follows_in_place_changes():
    from stylegan_ops.modconv import demodulation_coefficients

    g = torch.Generator().manual_seed(9)
    weight = torch.randn(4, 3, 3, 3, generator=g)
    styles = torch.randn(2, 3, generator=g)
    with torch.no_grad():
        before = demodulation_coefficients(weight, styles)
        weight.mul_(2)  # e.g. a checkpoint loaded in place
        after = demodulation_coefficients(weight, styles)
    torch.testing.assert_close(after, before / 2)
    # with autograd the sums are recomputed and carry the gradient
    weight.requires_grad_(True)
    demodulation_coefficients(weight, styles).sum().backward()
    assert weight.grad is not None and weight.grad.abs().sum() > 0
