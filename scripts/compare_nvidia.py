#!/usr/bin/env python
"""Cross-check synthface's generator and loaders against NVIDIA's stylegan2-ada-pytorch.

NVIDIA's code is NOT part of synthface (non-commercial licence); point --reference at a
checkout you keep elsewhere. For each architecture (skip / orig / resnet), unconditional and
conditional, the script builds a small network with NVIDIA's code, perturbs every parameter
and buffer (noise strengths, biases, w_avg...), pickles it with NVIDIA's own persistence
(protocols 2-5, as their training loop writes it), loads the file with
`synthface.load_generator` (restricted unpickler, no NVIDIA import) and compares images for
the same seeds, psi, cutoff and noise mode. It also converts a TensorFlow-layout pickle with
both NVIDIA's legacy converter and ours and compares those.

Prints JSON; exits 1 if any max-abs difference exceeds --tolerance (default 1e-4).

    python scripts/compare_nvidia.py --reference ~/src/stylegan2-ada-pytorch
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import pickle
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
import synthface  # noqa: E402


def _nvidia(path: str):
    sys.path.insert(0, str(Path(path).expanduser().resolve()))
    import dnnlib  # noqa: F401
    import legacy
    from training import networks

    return networks, legacy, dnnlib


def _perturb(G, seed):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, p in G.named_parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.3)
        G.mapping.w_avg.copy_(torch.randn(G.mapping.w_avg.shape, generator=g))
    return G


def _images(G, seeds, c, psi, cutoff, noise_mode, nvidia):
    z = torch.from_numpy(np.stack([np.random.RandomState(s).randn(G.z_dim) for s in seeds])).float()
    torch.manual_seed(123)  # 'random' noise: both draw from the global RNG in the same layer order
    kw = dict(truncation_psi=psi, truncation_cutoff=cutoff, noise_mode=noise_mode)
    if nvidia:
        kw["force_fp32"] = True
    with torch.no_grad():
        return G(z, c, **kw)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reference", required=True, help="path to a stylegan2-ada-pytorch checkout")
    ap.add_argument("--tolerance", type=float, default=1e-4)
    ap.add_argument("--resolution", type=int, default=64)
    args = ap.parse_args()
    networks, legacy, dnnlib = _nvidia(args.reference)
    sys.path.insert(0, str(ROOT / "tests"))
    import checkpoint_factory as cf

    results = []
    seeds = [0, 1, 2, 3]
    tmp = Path(tempfile.mkdtemp(prefix="synthface-compare-"))
    for arch in ("skip", "orig", "resnet"):
        for c_dim in (0, 4):
            torch.manual_seed(0)
            kwargs = dnnlib.EasyDict(
                z_dim=64, c_dim=c_dim, w_dim=64, img_resolution=args.resolution, img_channels=3,
                mapping_kwargs=dnnlib.EasyDict(num_layers=4),
                synthesis_kwargs=dnnlib.EasyDict(channel_base=4096, channel_max=128, architecture=arch,
                                                 conv_clamp=256, num_fp16_res=4))
            ref = _perturb(networks.Generator(**kwargs).eval().requires_grad_(False), seed=len(results))
            c = torch.eye(c_dim)[[0, 1, 2, 3]] if c_dim else torch.zeros(len(seeds), 0)
            for protocol in (2, 3, 4, 5):
                path = tmp / f"{arch}-c{c_dim}-p{protocol}.pkl"
                with open(path, "wb") as f:
                    pickle.dump(dict(G=copy.deepcopy(ref), D=None, G_ema=copy.deepcopy(ref), augment_pipe=None,
                                     training_set_kwargs=None), f, protocol=protocol)
                ours = synthface.load_generator(path)
                for psi, cutoff, noise in ((1.0, None, "const"), (0.7, None, "const"), (0.5, 4, "none"),
                                           (0.8, None, "random")):
                    if protocol != 4 and (psi, noise) != (1.0, "const"):
                        continue  # protocols only change the container; one setting suffices
                    a = _images(ref, seeds, c, psi, cutoff, noise, nvidia=True)
                    b = _images(ours, seeds, c if c_dim else None, psi, cutoff, noise, nvidia=False)
                    results.append(dict(source="nvidia-pickle", arch=arch, c_dim=c_dim, protocol=protocol, psi=psi,
                                        cutoff=cutoff, noise_mode=noise, max_abs_diff=float((a - b).abs().max()),
                                        image_abs_max=float(a.abs().max())))
            # TensorFlow layout: written from the NVIDIA-built network, converted by both.
            if arch != "orig":  # NVIDIA's converter cannot read 'orig' TF files (ToRGB_lod naming)
                ours_from_ref = synthface.load_generator(tmp / f"{arch}-c{c_dim}-p4.pkl")
                tf_bytes = cf.tf_pickle_bytes(ours_from_ref)
                tf_path = tmp / f"{arch}-c{c_dim}-tf.pkl"
                tf_path.write_bytes(tf_bytes)
                with open(tf_path, "rb") as f:  # our TF file has a dummy D, so convert Gs alone
                    ref_tf = legacy.convert_tf_generator(legacy._LegacyUnpickler(f).load()[2]).eval()
                ours_tf = synthface.load_generator(tf_path)
                a = _images(ref_tf, seeds, c, 0.7, None, "const", nvidia=True)
                b = _images(ours_tf, seeds, c if c_dim else None, 0.7, None, "const", nvidia=False)
                results.append(dict(source="tf-pickle", arch=arch, c_dim=c_dim, protocol=3, psi=0.7, cutoff=None,
                                    noise_mode="const", max_abs_diff=float((a - b).abs().max()),
                                    image_abs_max=float(a.abs().max())))
    for p in tmp.iterdir():
        p.unlink()
    tmp.rmdir()
    worst = max(r["max_abs_diff"] for r in results)
    report = dict(reference=os.path.abspath(args.reference), torch=torch.__version__, cases=len(results),
                  worst_max_abs_diff=worst, tolerance=args.tolerance, passed=worst <= args.tolerance,
                  results=results)
    print(json.dumps(report, indent=1))
    sys.exit(0 if report["passed"] else 1)


if __name__ == "__main__":
    main()
