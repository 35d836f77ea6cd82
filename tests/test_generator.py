"""The network: official names and sizes, formulations, truncation, noise, batch independence."""

import numpy as np
import pytest
import torch

from synthface.generator.synthesis import generate_images, parse_seeds, seed_latents
from synthface.generator import Generator
from synthface.errors import SynthfaceError

from conftest import make_generator

FFHQ = dict(z_dim=512, c_dim=0, w_dim=512, img_resolution=1024, img_channels=3, mapping_kwargs=dict(num_layers=8),
            synthesis_kwargs=dict(channel_base=32768, channel_max=512))


def test_ffhq_1024_state_dict_matches_official_layout():
    G = Generator(**FFHQ)
    sd = G.state_dict()
    params = dict(G.named_parameters())
    buffers = dict(G.named_buffers())
    # Counts from the official FFHQ-1024 network (shared/docs/stylegan2-reference.md section 1.8).
    assert len(sd) == 182 and len(params) == 138 and len(buffers) == 44
    assert sum(p.numel() for p in params.values()) == 30_370_060
    assert sum(p.numel() for p in G.mapping.parameters()) == 2_101_248
    assert sum(p.numel() for p in G.synthesis.parameters()) == 28_268_812
    assert sum(b.numel() for b in buffers.values()) == 2_797_104
    assert G.num_ws == 18
    # A few exact names and shapes.
    assert sd["synthesis.b4.const"].shape == (512, 4, 4)
    assert sd["synthesis.b1024.conv0.weight"].shape == (32, 64, 3, 3)
    assert sd["synthesis.b1024.conv1.noise_const"].shape == (1024, 1024)
    assert sd["synthesis.b64.torgb.affine.weight"].shape == (512, 512)
    assert sd["synthesis.b8.resample_filter"].shape == (4, 4)
    assert sd["mapping.fc7.weight"].shape == (512, 512) and sd["mapping.w_avg"].shape == (512,)
    assert "synthesis.b4.conv0.weight" not in sd


@pytest.mark.parametrize("res,num_ws", [(64, 10), (256, 14), (512, 16)])
def test_num_ws(res, num_ws):
    G = Generator(**dict(FFHQ, img_resolution=res, synthesis_kwargs=dict(channel_base=512, channel_max=16)))
    assert G.num_ws == num_ws


def test_architectures_have_the_official_modules():
    skip, orig, resnet = (make_generator(a) for a in ("skip", "orig", "resnet"))
    assert "synthesis.b8.torgb.weight" in skip.state_dict()
    assert "synthesis.b8.torgb.weight" not in orig.state_dict() and "synthesis.b16.torgb.weight" in orig.state_dict()
    rs = resnet.state_dict()
    assert rs["synthesis.b8.skip.weight"].shape[2:] == (1, 1) and "synthesis.b8.skip.bias" not in rs
    assert "synthesis.b8.skip.resample_filter" in rs


@pytest.mark.parametrize("arch", ["skip", "orig", "resnet"])
@pytest.mark.parametrize("c_dim", [0, 4])
def test_fused_and_nonfused_modconv_agree(arch, c_dim):
    G = make_generator(arch, c_dim=c_dim)
    z = torch.randn(5, G.z_dim, generator=torch.Generator().manual_seed(0))
    c = torch.eye(4)[[0, 1, 2, 3, 0]] if c_dim else None
    with torch.no_grad():
        a = G(z, c, truncation_psi=0.8, noise_mode="const", fused_modconv=True)
        b = G(z, c, truncation_psi=0.8, noise_mode="const", fused_modconv=False)
    assert a.shape == (5, 3, 16, 16) and a.abs().max() > 0.1
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_truncation_and_cutoff_maths():
    G = make_generator()
    z = torch.randn(3, G.z_dim, generator=torch.Generator().manual_seed(1))
    w = G.mapping(z)
    assert w.shape == (3, G.num_ws, G.w_dim)
    assert torch.equal(w[:, 0], w[:, -1])  # broadcast
    avg = G.mapping.w_avg
    t = G.mapping(z, truncation_psi=0.7)
    torch.testing.assert_close(t, avg + 0.7 * (w - avg))
    torch.testing.assert_close(G.mapping(z, truncation_psi=0.0), avg.expand_as(w).contiguous())
    k = 3
    tc = G.mapping(z, truncation_psi=0.5, truncation_cutoff=k)
    torch.testing.assert_close(tc[:, :k], avg + 0.5 * (w[:, :k] - avg))
    assert torch.equal(tc[:, k:], w[:, k:])


def test_mapping_normalises_z_and_embeds_c():
    G = make_generator(c_dim=3)
    z = torch.randn(2, G.z_dim)
    c = torch.eye(3)[:2]
    # 2nd-moment normalisation makes the mapping invariant to the scale of z
    torch.testing.assert_close(G.mapping(z, c), G.mapping(10 * z, c))
    assert not torch.allclose(G.mapping(z, c), G.mapping(z, torch.eye(3)[[2, 2]]))
    with pytest.raises(ValueError, match="conditional"):
        G.mapping(z, None)


def test_noise_modes():
    G = make_generator()
    z = torch.randn(2, G.z_dim, generator=torch.Generator().manual_seed(2))
    const1, const2 = G(z, noise_mode="const"), G(z, noise_mode="const")
    assert torch.equal(const1, const2)
    assert not torch.allclose(G(z, noise_mode="none"), const1)
    gens = lambda: [torch.Generator().manual_seed(s) for s in (7, 8)]
    r1, r2 = G(z, noise_mode="random", noise_generator=gens()), G(z, noise_mode="random", noise_generator=gens())
    assert torch.equal(r1, r2) and not torch.allclose(r1, const1)
    with pytest.raises(ValueError, match="noise_mode"):
        G(z, noise_mode="fixed")
    # without noise inputs every mode gives the same image
    Gn = make_generator(use_noise=False)
    assert "synthesis.b8.conv0.noise_const" not in Gn.state_dict()
    torch.testing.assert_close(Gn(z, noise_mode="none"), Gn(z, noise_mode="const"))


def test_conv_clamp_limits_activations():
    G = make_generator(conv_clamp=0.05)
    x = G(torch.randn(2, G.z_dim))
    # torgb output is clamped to +-0.05 per block and accumulated over 3 up-sampled blocks
    assert x.abs().max() <= 0.05 * 3 + 1e-6


def test_batch_size_independence():
    G = make_generator()
    seeds = list(range(7))
    for mode in ("const", "random"):
        one = dict(generate_images(G, seeds, truncation_psi=0.7, noise_mode=mode, batch_size=1))
        four = dict(generate_images(G, seeds, truncation_psi=0.7, noise_mode=mode, batch_size=4))
        for s in seeds:
            assert np.abs(one[s].astype(int) - four[s].astype(int)).max() <= 1
        assert len({one[s].tobytes() for s in seeds}) == len(seeds)


def test_seed_convention_matches_numpy_randomstate():
    z = seed_latents([0, 42], 512)
    np.testing.assert_array_equal(z[1].numpy(), np.random.RandomState(42).randn(512).astype(np.float32))
    assert parse_seeds("0-3,12, 7") == [0, 1, 2, 3, 12, 7]
    for bad in ("", "a-3", "5-2", "1,-2"):
        with pytest.raises(SynthfaceError):
            parse_seeds(bad)


@pytest.mark.gpu
def test_fp16_blocks_on_cuda_track_fp32():
    G = make_generator(num_fp16_res=2, resolution=32).cuda()
    z = torch.randn(4, G.z_dim, device="cuda")
    fp32 = G(z, force_fp32=True)
    fp16 = G(z)
    assert fp16.dtype == torch.float32
    assert (fp16 - fp32).abs().max() < 0.05 * fp32.abs().max()
    cpu = G.cpu()(z.cpu())
    torch.testing.assert_close(fp32.cpu(), cpu, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("channels_last", [True, False])
def test_cpu_fast_path_matches_grouped_reference(batch, channels_last, monkeypatch):
    """The CPU path (weights modulated and demodulated in place at batch 1, styles on the activations
    above, ToRGB as a matmul, NHWC) against the plain grouped formulation, on random weights."""
    from synthface.generator import networks

    monkeypatch.setattr(networks, "CPU_CHANNELS_LAST", channels_last)
    G = make_generator("skip")
    with torch.no_grad():
        for p in G.parameters():  # random biases and noise strengths too, so every term counts
            if p.ndim <= 1:
                p.copy_(torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())) * 0.2)
        z = torch.randn(batch, G.z_dim, generator=torch.Generator().manual_seed(1))
        fast = G(z, noise_mode="const")
        plain = G(z, noise_mode="const", fused_modconv=True)
    assert fast.is_contiguous() and fast.abs().max() > 0.1
    torch.testing.assert_close(fast, plain, atol=1e-4, rtol=0)


@torch.no_grad()
def test_cpu_bf16_synthesis_is_close_to_fp32_and_keyed_apart():
    from synthface.generator.synthesis import generator_hash

    G = make_generator(resolution=32).eval()
    ws = G.mapping(torch.randn(4, G.z_dim, generator=torch.Generator().manual_seed(1)), None)
    h32 = generator_hash(G)
    ref = G.synthesis(ws, noise_mode="const")
    G.set_cpu_precision("bf16")
    low = G.synthesis(ws, noise_mode="const")
    assert low.dtype == torch.float32 and low.shape == ref.shape
    err = (low - ref).abs()
    assert 0 < err.max() < 0.1 * ref.abs().max() + 0.05  # bf16 arithmetic really ran, and stayed close
    assert err.mean() < 0.02 * ref.abs().mean() + 0.01
    # a bank or dataset begun in one precision cannot resume in the other; fp32 keeps its hash
    assert generator_hash(G) != h32
    assert generator_hash(G.set_cpu_precision("fp32")) == h32
    assert torch.equal(G.synthesis(ws, noise_mode="const"), ref)
    with pytest.raises(ValueError, match="fp32, bf16"):
        G.set_cpu_precision("fp16")


def test_load_generator_rejects_an_unknown_precision(tmp_path):
    from synthface.generator import load_generator

    with pytest.raises(SynthfaceError, match="precision must be one of fp32, bf16"):
        load_generator("world", precision="int8")
    G = load_generator("world", precision="bf16")
    assert G.synthesis.cpu_precision == "bf16"
