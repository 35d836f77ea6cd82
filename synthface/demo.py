"""The built-in default that `make demo` runs on.

Until the demo world (procedural faces and a StyleGAN2 trained on them) lands, the demo
builds a small StyleGAN2 from a fixed seed, saves it in synthface's .safetensors format,
loads it back through the same `load_generator` path real checkpoints take, and writes a
seed grid. An untrained network draws abstract colour fields, not faces.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from .generate import generate_images, image_grid, save_image_atomic
from .generator import Generator, describe, load_generator, save_generator

DEMO_CONFIG = dict(
    z_dim=64, c_dim=0, w_dim=64, img_resolution=64, img_channels=3,
    mapping_kwargs=dict(num_layers=4),
    synthesis_kwargs=dict(channel_base=2048, channel_max=128, architecture="skip", conv_clamp=256),
)


def build_demo_generator(seed: int = 0) -> Generator:
    """A small, deterministic StyleGAN2 (64x64) with non-trivial noise strengths and w_avg."""
    g = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        G = Generator(**DEMO_CONFIG)
    with torch.no_grad():
        for name, p in G.named_parameters():
            if name.endswith("noise_strength"):
                p.fill_(0.1)
        G.mapping.w_avg.copy_(torch.randn(G.w_dim, generator=g) * 0.5)
    return G.eval().requires_grad_(False)


def run_demo(outdir: str | Path, seeds=range(16), log=print) -> dict:
    outdir = Path(outdir)
    net_path = outdir / "demo_generator.safetensors"
    if not net_path.exists():
        save_generator(build_demo_generator(), net_path, source="synthface demo (untrained, seed 0)")
        log(f"built demo network -> {net_path}")
    G = load_generator(net_path, device="cpu")
    info = describe(net_path)
    log(json.dumps({k: info[k] for k in ("format", "resolution", "z_dim", "w_dim", "num_ws", "parameters")}))
    images = []
    for seed, arr in generate_images(G, list(seeds), truncation_psi=0.7, noise_mode="const", batch_size=8,
                                     progress=True):
        save_image_atomic(arr, outdir / "images" / f"seed{seed:04d}.png")
        images.append(arr)
    grid_path = save_image_atomic(image_grid(images, cols=8), outdir / "seed_grid.png")
    log(f"wrote {len(images)} images to {outdir / 'images'} and the grid {grid_path}")
    return {"network": str(net_path), "grid": str(grid_path), "images": len(images)}
