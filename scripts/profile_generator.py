#!/usr/bin/env python
"""Per-layer profile of the StyleGAN2 generator forward on CPU (FFHQ config, fp32).

Times each synthesis layer (SynthesisLayer: modulated conv + noise + bias_act; ToRGBLayer:
1x1 modulated conv + bias) and the skip image's up-sampling (upfirdn2d) by resolution, and
splits the whole forward by operator kind (convolutions, depthwise FIR filters, elementwise
epilogue, weight/style arithmetic) with torch.profiler. With --reference it profiles NVIDIA's
generator on the same weights too (its modules carry the same class names).

    python scripts/profile_generator.py --resolution 256 --batch 1 --threads 2 \
        --reference /path/to/stylegan2-ada-pytorch
"""

from __future__ import annotations

import argparse
import collections
import sys
import time
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT / "scripts"))
sys.path.insert(0, str(REPO_ROOT))

import bench_generator as bench  # noqa: E402

LAYER_CLASSES = ("SynthesisLayer", "ToRGBLayer")
ELEMENTWISE = {"aten::mul", "aten::mul_", "aten::add", "aten::add_", "aten::addcmul", "aten::leaky_relu",
               "aten::leaky_relu_", "aten::clamp", "aten::clamp_", "aten::copy_", "aten::fill_",
               "aten::constant_pad_nd", "aten::index"}


def layer_timers(net: torch.nn.Module) -> tuple[dict, list]:
    """Forward hooks that add each synthesis layer's wall time to totals[(block, kind)], and
    their handles (remove them to stop timing)."""
    totals = collections.defaultdict(float)
    starts, handles = {}, []
    for name, module in net.named_modules():
        if type(module).__name__ not in LAYER_CLASSES:
            continue
        block, kind = name.split(".")[-2:]

        def pre(mod, args, key=(block, kind)):
            starts[key] = time.perf_counter()

        def post(mod, args, out, key=(block, kind)):
            totals[key] += time.perf_counter() - starts[key]

        handles += [module.register_forward_pre_hook(pre), module.register_forward_hook(post)]
    return totals, handles


def op_kinds(prof) -> dict:
    """Self CPU seconds by operator kind."""
    kinds = collections.defaultdict(float)
    for evt in prof.key_averages(group_by_input_shape=True):
        seconds = evt.self_cpu_time_total / 1e6
        shapes = evt.input_shapes or []
        if evt.key in ("aten::mkldnn_convolution", "aten::_convolution", "aten::_slow_conv2d_forward",
                       "aten::slow_conv_transpose2d", "aten::thnn_conv2d"):
            depthwise = len(shapes) > 1 and len(shapes[1]) == 4 and shapes[1][1] == 1
            kinds["FIR (depthwise conv)" if depthwise else "convolution"] += seconds
        elif evt.key in ("aten::mm", "aten::addmm", "aten::bmm", "aten::sum", "aten::pow", "aten::rsqrt"):
            kinds["matmul / demodulation"] += seconds
        elif evt.key in ELEMENTWISE:
            kinds["elementwise (modulate, noise, bias_act, copies)"] += seconds
        else:
            kinds["other"] += seconds
    return dict(kinds)


@torch.no_grad()
def profile_one(name: str, run, net, z) -> None:
    run(z)  # warm-up (oneDNN primitive creation)
    totals, handles = layer_timers(net)
    t0 = time.perf_counter()
    run(z)
    wall = time.perf_counter() - t0
    for handle in handles:
        handle.remove()
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        run(z)
    print(f"\n== {name}: {wall:.3f} s for the batch (hooks only, no profiler)")
    by_kind = collections.defaultdict(float)
    for (block, kind), seconds in totals.items():
        by_kind[kind.rstrip("01")] += seconds
        print(f"  {block:>6} {kind:<6} {seconds * 1e3:9.1f} ms")
    layers = sum(totals.values())
    print(f"  layers: " + ", ".join(f"{k} {v * 1e3:.0f} ms" for k, v in by_kind.items())
          + f"; outside the layers (mapping, image up-sampling, casts) {(wall - layers) * 1e3:.0f} ms")
    print("  by operator kind (self CPU time under the profiler):")
    for kind, seconds in sorted(op_kinds(prof).items(), key=lambda kv: -kv[1]):
        print(f"    {kind:<48} {seconds * 1e3:9.1f} ms")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--resolution", type=int, default=256)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--reference", metavar="PATH", default=None, help="stylegan2-ada-pytorch checkout")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device("cpu")
    networks = bench.import_reference(args.reference)[0] if args.reference else None
    ours, ref = bench.make_pair(args.resolution, device, networks, "fp32")
    run_ours, run_ref = bench.forward_fns(ours, ref, device)
    z = bench.latents(args.batch, device)
    print(f"{args.resolution}px batch {args.batch}, {torch.get_num_threads()} threads, torch {torch.__version__}")
    profile_one("synthface", run_ours, ours, z)
    if run_ref is not None:
        profile_one("NVIDIA", run_ref, ref, z)
    return 0


if __name__ == "__main__":
    sys.exit(main())
