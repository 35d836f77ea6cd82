#!/usr/bin/env python
"""Throughput of Semi-Adversarial Networks (synthface.methods.san) at 112 and 224 pixels.

- train: one optimiser step of the full official objective (gender CE with the same and opposite prototypes,
  L1, matcher term on) through the frozen demo-world auxiliary networks (world-attributes as the gender
  classifier, world-recognizer as the matcher), official widths, batch 8 as published; images per second;
- train_autoencoder_only: the reconstruction pre-training step (no auxiliary network), to show what the
  auxiliary networks cost;
- transform: SemiAdversarialNet.outputs for the three prototypes (one decoder pass per batch), uint8 in and
  out, batch 32; images per second.

Random weights and inputs (throughput does not depend on them). The machine's load average goes into the
JSON: on a shared machine read the figures as upper bounds of the time.

    python scripts/bench_san.py --threads 1 --out bench_out/san_cpu.json
    python scripts/bench_san.py --device cuda --out bench_out/san_cuda.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

import numpy as np
import torch


def _time(fn, steps: int, warmup: int = 1, sync=lambda: None) -> float:
    for _ in range(warmup):
        fn()
    sync()
    t = time.perf_counter()
    for _ in range(steps):
        fn()
    sync()
    return (time.perf_counter() - t) / steps


def bench_size(size: int, device: str, steps: int, rgb: bool) -> dict:
    from synthface.methods.san import SANObjective, SemiAdversarialNet
    from synthface.methods.san_aux import load_gender_classifier, load_matcher

    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    clf, mat = load_gender_classifier("world-attributes").to(device), load_matcher("world-recognizer").to(device)
    san = SemiAdversarialNet(size=size, rgb=rgb)
    net = san._new_net().to(device)
    protos = torch.rand(2, 3, size, size, device=device)
    c = 3 if rgb else 1
    batch = {"image": torch.rand(8, c, size, size, device=device), "gender": torch.randint(0, 2, (8,), device=device),
             "epoch": torch.full((8,), 10, device=device)}
    res = {}
    for name, mode in (("train", "san"), ("train_autoencoder_only", "pretrain")):
        obj = SANObjective(net, protos, clf, mat, mode=mode, matcher_start=0)
        opt = torch.optim.Adam(net.parameters(), lr=2e-4)

        def step():
            loss, _ = obj(batch)
            opt.zero_grad()
            loss.backward()
            opt.step()
        dt = _time(step, steps, sync=sync)
        res[name] = {"images_per_s": 8 / dt, "s_per_step": dt, "batch": 8}
    san.net_ = net.eval().requires_grad_(False)
    san.prototypes_ = np.random.default_rng(0).random((3, 3, size, size), dtype=np.float32)
    imgs = np.random.default_rng(1).integers(0, 256, (32, size, size, 3), dtype=np.uint8)
    g = np.arange(32) % 2
    dt = _time(lambda: san.outputs(imgs, g, batch=32, device=device), max(1, steps // 2), sync=sync)
    res["transform"] = {"images_per_s": 32 / dt, "s_per_batch": dt, "batch": 32, "prototypes": 3}
    return res


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="112,224")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--rgb", action="store_true", help="the RGB model instead of the official grey one")
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    t0 = time.perf_counter()
    res = {"device": a.device, "threads": torch.get_num_threads(), "rgb": a.rgb, "steps": a.steps,
           "torch": torch.__version__, "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores",
           "gpu": torch.cuda.get_device_name(0) if a.device.startswith("cuda") else None,
           "load_average_start": os.getloadavg()[0], "sizes": {}}
    for s in [int(v) for v in a.sizes.split(",")]:
        res["sizes"][str(s)] = bench_size(s, a.device, a.steps, a.rgb)
        print(s, json.dumps(res["sizes"][str(s)]), flush=True)
    res["load_average_end"] = os.getloadavg()[0]
    res["seconds"] = time.perf_counter() - t0
    text = json.dumps(res, indent=2)
    if a.out:
        os.makedirs(os.path.dirname(a.out) or ".", exist_ok=True)
        with open(a.out, "w") as f:
            f.write(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
