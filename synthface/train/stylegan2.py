"""Train a StyleGAN2 (synthface's own Generator and Discriminator) on a folder of images.

The recipe of Karras et al. 2020, kept small: non-saturating logistic loss, lazy R1 on reals,
style mixing, an exponential moving average of G (what gets exported), Adam with beta1 = 0.
Path-length regularisation is left out (it buys smoother latents at ~30% more compute).
A run directory holds `checkpoint.pt` (everything needed to resume, written atomically),
`network-snapshot.safetensors` (G_ema in synthface's format), sample grids and `log.jsonl`.
Rerunning the same command resumes where it stopped.
"""

from __future__ import annotations

import copy
import json
import math
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ..errors import SynthfaceError
from ..generator import Discriminator, Generator, load_generator, resolve_device, save_generator
from ..generator.synthesis import to_uint8
from ..fileio import atomic_write, image_grid, save_image_atomic, write_json_atomic
from .engine import append_jsonl, save_checkpoint, seed_everything

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp"}


@dataclass
class TrainConfig:
    data: str = ""
    outdir: str = "runs/stylegan2"
    resolution: int = 64
    z_dim: int = 128
    w_dim: int = 128
    mapping_layers: int = 4
    channel_base: int = 1024             # the shipped demo-world generator's size
    channel_max: int = 128
    d_channel_base: Optional[int] = None
    batch: int = 32
    kimg: float = 300.0
    g_lr: float = 0.0025
    d_lr: float = 0.0025
    r1_gamma: Optional[float] = None      # None: NVIDIA's heuristic 0.0002 * res^2 / batch
    r1_interval: int = 16
    style_mixing: float = 0.9
    ema_kimg: Optional[float] = None      # None: batch * 10 / 32
    ema_rampup: float = 0.05
    init_generator: Optional[str] = None  # start G and G_ema from this exported generator (D starts fresh)
    d_warmup_kimg: float = 0.0            # train D alone this long first (lets a fresh D catch up with G)
    g_topk: float = 1.0                   # G's loss uses only this fraction of fakes that D rates most real
    mirror: bool = True
    seed: int = 0
    snapshot_kimg: float = 10.0
    keep_snapshots: bool = False          # also keep each snapshot as network-snapshot-<kimg 6 digits>.safetensors
    grid_seeds: int = 32
    device: str = "auto"
    threads: int = 0


def list_images(root: Path) -> list[Path]:
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith("."))
    if not files:
        raise SynthfaceError(f"no images (png/jpg/webp/bmp) under {root}: point --data at a folder of face images")
    return files


def _keep_snapshot(out: Path, nimg: int) -> None:
    """Copy the latest snapshot to network-snapshot-<kimg>.safetensors, to compare snapshots
    afterwards (NVIDIA's trainer keeps every one too)."""
    with open(out / "network-snapshot.safetensors", "rb") as src:
        atomic_write(out / f"network-snapshot-{nimg // 1000:06d}.safetensors", lambda f: shutil.copyfileobj(src, f))


def load_image_folder(root, resolution: int, log: Callable = print) -> torch.Tensor:
    """Every image under `root`, as uint8 [N, 3, R, R]; square images of another size are resized."""
    root = Path(root)
    if not root.is_dir():
        raise SynthfaceError(f"--data {root} is not a directory")
    files = list_images(root)
    out = np.empty((len(files), resolution, resolution, 3), np.uint8)
    for i, f in enumerate(files):
        with Image.open(f) as im:
            im = im.convert("RGB")
            if im.width != im.height:
                raise SynthfaceError(f"{f} is {im.width}x{im.height}; StyleGAN2 trains on square images "
                                     "(crop or align them first)")
            if im.width != resolution:
                im = im.resize((resolution, resolution), Image.LANCZOS)
            out[i] = np.asarray(im)
    log(f"loaded {len(files)} images from {root} at {resolution}x{resolution}")
    return torch.from_numpy(out).permute(0, 3, 1, 2).contiguous()


def build_networks(cfg: TrainConfig):
    num_ws_mapping = dict(num_layers=cfg.mapping_layers)
    G = Generator(z_dim=cfg.z_dim, c_dim=0, w_dim=cfg.w_dim, img_resolution=cfg.resolution, img_channels=3,
                  mapping_kwargs=num_ws_mapping,
                  synthesis_kwargs=dict(channel_base=cfg.channel_base, channel_max=cfg.channel_max,
                                        architecture="skip", conv_clamp=256))
    D = Discriminator(cfg.resolution, 3, channel_base=cfg.d_channel_base or cfg.channel_base,
                      channel_max=cfg.channel_max, conv_clamp=256)
    return G, D


def _mix_ws(G: Generator, z: torch.Tensor, prob: float, gen: torch.Generator) -> torch.Tensor:
    ws = G.mapping(z, None, update_w_avg=True)
    if prob > 0 and torch.rand([], generator=gen).item() < prob:
        cutoff = int(torch.randint(1, ws.shape[1], [], generator=gen).item())
        z2 = torch.randn(z.shape, generator=gen).to(z.device)
        ws = ws.clone()
        ws[:, cutoff:] = G.mapping(z2, None, update_w_avg=False)[:, cutoff:]
    return ws


def train(cfg: TrainConfig, log: Callable = print) -> Path:
    """Train (or resume) and return the path of the exported G_ema snapshot."""
    threads = torch.get_num_threads()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    try:
        return _train(cfg, log)
    finally:
        torch.set_num_threads(threads)


def _train(cfg: TrainConfig, log: Callable) -> Path:
    out = Path(cfg.outdir)
    out.mkdir(parents=True, exist_ok=True)
    device = resolve_device(cfg.device)
    if not 0 < cfg.g_topk <= 1:
        raise SynthfaceError(f"g_topk is {cfg.g_topk}; give a fraction of the batch in (0, 1]")
    seed_everything(cfg.seed)
    G, D = build_networks(cfg)
    G, D = G.to(device).train(), D.to(device).train()
    if cfg.init_generator and not (out / "checkpoint.pt").exists():
        _init_from(G, cfg.init_generator)   # before the data loads, so a mismatch fails fast
        log(f"G initialised from {cfg.init_generator}; D starts fresh")
    data = load_image_folder(cfg.data, cfg.resolution, log)
    G_ema = copy.deepcopy(G).eval().requires_grad_(False)
    r1_gamma = cfg.r1_gamma if cfg.r1_gamma is not None else 0.0002 * cfg.resolution**2 / cfg.batch
    ema_kimg = cfg.ema_kimg if cfg.ema_kimg is not None else cfg.batch * 10 / 32
    # Lazy regularisation: R1 runs every r1_interval steps, so Adam's settings are rescaled.
    mb = cfg.r1_interval / (cfg.r1_interval + 1)
    opt_G = torch.optim.Adam(G.parameters(), lr=cfg.g_lr, betas=(0.0, 0.99), eps=1e-8)
    opt_D = torch.optim.Adam(D.parameters(), lr=cfg.d_lr * mb, betas=(0.0, 0.99**mb), eps=1e-8)
    gen = torch.Generator().manual_seed(cfg.seed)
    step, nimg = 0, 0
    ckpt_path = out / "checkpoint.pt"
    if ckpt_path.exists():
        st = torch.load(ckpt_path, map_location=device, weights_only=True)
        G.load_state_dict(st["G"]), D.load_state_dict(st["D"]), G_ema.load_state_dict(st["G_ema"])
        opt_G.load_state_dict(st["opt_G"]), opt_D.load_state_dict(st["opt_D"])
        # The config's rates win over the checkpoint's, so a run can go on at a lower rate.
        for opt, lr in ((opt_G, cfg.g_lr), (opt_D, cfg.d_lr * mb)):
            for group in opt.param_groups:
                group["lr"] = lr
        gen.set_state(st["gen"])
        step, nimg = int(st["step"]), int(st["nimg"])
        log(f"resumed from {ckpt_path} at {nimg / 1000:.1f} kimg")
    write_json_atomic(out / "config.json", asdict(cfg))
    grid_z = torch.from_numpy(np.random.RandomState(cfg.seed).randn(cfg.grid_seeds, cfg.z_dim)).float().to(device)
    if nimg == 0:
        _save_grid(data[:cfg.grid_seeds].permute(0, 2, 3, 1).numpy(), out / "reals.png")

    def snapshot():
        save_checkpoint(ckpt_path, {"G": G.state_dict(), "D": D.state_dict(), "G_ema": G_ema.state_dict(),
                            "opt_G": opt_G.state_dict(), "opt_D": opt_D.state_dict(), "gen": gen.get_state(),
                            "step": step, "nimg": nimg, "config": json.dumps(asdict(cfg))})
        with torch.no_grad():
            img = G_ema(grid_z, None, noise_mode="const")
        arr = to_uint8(img)
        _save_grid(arr, out / f"fakes{nimg // 1000:06d}.png")
        _save_grid(arr, out / "fakes-latest.png")
        save_generator(G_ema, out / "network-snapshot.safetensors",
                       source=f"synthface train_stylegan2 ({nimg / 1000:.1f} kimg on {Path(cfg.data).name})",
                       extra_metadata={"kimg": f"{nimg / 1000:.1f}"})
        if cfg.keep_snapshots:
            _keep_snapshot(out, nimg)

    total = int(cfg.kimg * 1000)
    next_snap = (nimg // int(cfg.snapshot_kimg * 1000) + 1) * int(cfg.snapshot_kimg * 1000)
    t0, n0 = time.time(), nimg
    stats = {}
    while nimg < total:
        idx = torch.randint(0, len(data), [cfg.batch], generator=gen)
        real = data[idx].to(device).float() / 127.5 - 1
        if cfg.mirror:
            flip = torch.rand([cfg.batch], generator=gen) < 0.5
            real = torch.where(flip[:, None, None, None].to(device), real.flip(3), real)

        if nimg >= cfg.d_warmup_kimg * 1000:
            stats["loss_G"] = _g_step(G, D, opt_G, cfg, gen, device)
        stats.update(_d_step(G, D, opt_D, real, cfg, gen, device, step, r1_gamma))
        nimg += cfg.batch
        step += 1
        _ema_update(G_ema, G, cfg, nimg, ema_kimg)
        if step % 50 == 0 or nimg >= total:
            rate = (time.time() - t0) / max(nimg - n0, 1) * 1000
            line = dict(kimg=round(nimg / 1000, 2), nimg=nimg, sec_per_kimg=round(rate, 2), **{k: round(v, 4) for k, v in stats.items()})
            log(json.dumps(line))
            append_jsonl(out / "log.jsonl", line)
        if nimg >= next_snap or nimg >= total:
            snapshot()
            next_snap += int(cfg.snapshot_kimg * 1000)
    return out / "network-snapshot.safetensors"


def _g_step(G, D, opt_G, cfg: TrainConfig, gen, device) -> float:
    """Make D call the fakes real. With g_topk < 1 only the fakes D finds most real pull on G
    (Sinha et al. 2020: the gradients of the worst fakes, often ones between modes, can point G
    away from the data)."""
    z = torch.randn([cfg.batch, cfg.z_dim], generator=gen).to(device)
    D.requires_grad_(False)
    fake = G.synthesis(_mix_ws(G, z, cfg.style_mixing, gen), noise_mode="random")
    logits = D(fake).flatten()
    if cfg.g_topk < 1:
        logits = logits.topk(max(1, int(round(cfg.g_topk * cfg.batch)))).values
    loss_G = F.softplus(-logits).mean()
    opt_G.zero_grad(set_to_none=True)
    loss_G.backward()
    opt_G.step()
    D.requires_grad_(True)
    return loss_G.item()


def _d_step(G, D, opt_D, real, cfg: TrainConfig, gen, device, step: int, r1_gamma: float) -> dict:
    """Logistic loss on fakes and reals, plus lazy R1 on reals every r1_interval steps."""
    stats = {}
    z = torch.randn([cfg.batch, cfg.z_dim], generator=gen).to(device)
    with torch.no_grad():
        fake = G.synthesis(_mix_ws(G, z, cfg.style_mixing, gen), noise_mode="random")
    logits_fake, logits_real = D(fake), D(real)
    loss_D = F.softplus(logits_fake).mean() + F.softplus(-logits_real).mean()
    opt_D.zero_grad(set_to_none=True)
    loss_D.backward()
    if step % cfg.r1_interval == 0 and r1_gamma > 0:
        r = real.detach().requires_grad_(True)
        grad, = torch.autograd.grad(D(r).sum(), r, create_graph=True)
        r1 = grad.square().sum([1, 2, 3]).mean()
        (r1 * (r1_gamma / 2) * cfg.r1_interval).backward()
        stats["r1"] = r1.item()
    opt_D.step()
    stats.update(loss_D=loss_D.item(), real=logits_real.mean().item(), fake=logits_fake.mean().item())
    return stats


@torch.no_grad()
def _ema_update(G_ema, G, cfg: TrainConfig, nimg: int, ema_kimg: float) -> None:
    """EMA of G, with a ramp-up so early snapshots are not dominated by the random start. An --init
    G is already trained: its EMA averages at the full half-life from the start."""
    rampup = 0.0 if cfg.init_generator else cfg.ema_rampup
    ema_nimg = min(ema_kimg * 1000, nimg * rampup) if rampup else ema_kimg * 1000
    beta = 0.5 ** (cfg.batch / max(ema_nimg, 1e-8))
    for p_ema, p in zip(G_ema.parameters(), G.parameters()):
        p_ema.copy_(p.lerp(p_ema, beta))
    for b_ema, b in zip(G_ema.buffers(), G.buffers()):
        b_ema.copy_(b)


def _init_from(G: Generator, path: str):
    src = load_generator(path).state_dict()
    own = G.state_dict()
    bad = sorted(k for k in own if k not in src or src[k].shape != own[k].shape)
    if bad or len(src) != len(own):
        raise SynthfaceError(f"--init {path} does not match the configured network ({len(bad)} tensors differ, "
                             f"e.g. {bad[:3]}): give the resolution, z/w dims, mapping layers and channel "
                             "base/max it was trained with")
    G.load_state_dict(src)


def _save_grid(arr: np.ndarray, path: Path):
    save_image_atomic(image_grid(list(arr), cols=int(math.ceil(math.sqrt(len(arr))))), path)
