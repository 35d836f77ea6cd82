#!/usr/bin/env python
"""Time the full StyleGAN2 generator forward (mapping + synthesis) in the FFHQ config.

Measures seconds per image (and images/s) for synthface's Generator and, optionally, for
NVIDIA's stylegan2-ada-pytorch Generator with the same random weights, at each requested
resolution, batch size and precision, in the same run. Also counts the generator's FLOPs and
measures the device's matmul peak, so each timing comes with the fraction of that peak it
reaches. Prints a JSON record to stdout (and to --out FILE); progress goes to stderr.

    python scripts/bench_generator.py                         # 256 and 1024, batches 1 and 8 (CPU)
    python scripts/bench_generator.py --reference /path/to/stylegan2-ada-pytorch --out bench_out/cpu.json
    python scripts/bench_generator.py --device cuda --reference /path/to/stylegan2-ada-pytorch \
        --batches 1,8,32 --precisions fp32,fp16 --out bench_out/gpu.json

Precision fp16 is the FFHQ config's own (num_fp16_res=4: the four highest resolutions run in
fp16, CUDA only); fp32 sets num_fp16_res=0 for both networks. bf16 (CPU) runs synthface's
synthesis network under torch.autocast(bfloat16) (Generator.set_cpu_precision), which oneDNN maps
to AMX / AVX512-BF16 where the CPU has them, against NVIDIA's in fp32 (it has no bf16 path): the
ratio is then the speed-up a user gets by asking for bf16, and the difference is bf16's error,
reported but not held to --tolerance.

NVIDIA's code is only imported at run time from the checkout given with --reference; none of
it lives in this repository.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

# Run from a plain checkout too, not only from an installed package.
REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from synthface.fileio import write_json_atomic  # noqa: E402
from synthface.generator import Generator  # noqa: E402

# FFHQ config (stylegan2-ada-pytorch --cfg=stylegan2 / paper config F); only img_resolution varies.
Z_DIM = W_DIM = 512
MAPPING_KWARGS = dict(num_layers=8)
SYNTHESIS_KWARGS = dict(channel_base=32768, channel_max=512, architecture="skip", conv_clamp=256, num_fp16_res=4)
NUM_FP16_RES = {"fp32": 0, "fp16": 4, "bf16": 0}
WEIGHT_SEED = 0   # seed for the random weights (both nets share them)
LATENT_SEED = 123  # seed for the z used in the equality check and the timings


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def int_list(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v.strip()]


def build_kwargs(resolution: int, precision: str = "fp16") -> dict:
    return dict(z_dim=Z_DIM, c_dim=0, w_dim=W_DIM, img_resolution=resolution, img_channels=3,
                mapping_kwargs=dict(MAPPING_KWARGS),
                synthesis_kwargs=dict(SYNTHESIS_KWARGS, num_fp16_res=NUM_FP16_RES[precision]))


# --------------------------------------------------------------------------------------------
# Machine description: enough to tell later which numbers came from where.

def cpu_model() -> str | None:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def git_commit(path: Path) -> str | None:
    try:
        out = subprocess.run(["git", "-C", str(path), "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=10)
        if out.returncode != 0:
            return None
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def load_average() -> list[float] | None:
    # Other processes on the machine skew CPU timings; record how busy it was.
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except (OSError, AttributeError):
        return None


def machine_info(device: torch.device) -> dict:
    info = dict(
        date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        platform=platform.platform(),
        processor=platform.processor() or None,
        cpu_model=cpu_model(),
        cpu_count=os.cpu_count(),
        python=platform.python_version(),
        torch=torch.__version__,
        torch_num_threads=torch.get_num_threads(),
        device=str(device),
        device_name=cpu_model() if device.type == "cpu" else torch.cuda.get_device_name(device),
        synthface_commit=git_commit(REPO_ROOT),
        load_average_start=load_average(),
    )
    if device.type == "cuda":
        info.update(cuda=torch.version.cuda, cudnn=torch.backends.cudnn.version(),
                    cudnn_benchmark=torch.backends.cudnn.benchmark,
                    allow_tf32_matmul=torch.backends.cuda.matmul.allow_tf32,
                    allow_tf32_cudnn=torch.backends.cudnn.allow_tf32)
    return info


# --------------------------------------------------------------------------------------------
# The two implementations, wrapped as z -> image so the timing loop treats them alike.

def import_reference(path: str):
    """NVIDIA's `training.networks` from a stylegan2-ada-pytorch checkout (imported, never copied)."""
    root = Path(path).resolve()
    if not (root / "training" / "networks.py").is_file():
        sys.exit(f"--reference {path}: no training/networks.py there (not a stylegan2-ada-pytorch checkout)")
    sys.path.insert(0, str(root))
    from training import networks  # noqa: PLC0415  (only importable after the path insert)
    return networks, root


def reference_plugins() -> dict:
    """Whether NVIDIA's compiled CUDA ops were used or its slower pure-PyTorch fallback (CPU always falls back)."""
    try:
        from torch_utils.ops import bias_act, upfirdn2d  # noqa: PLC0415
        return dict(bias_act=bias_act._plugin is not None, upfirdn2d=upfirdn2d._plugin is not None)
    except Exception:  # noqa: BLE001 - informational only
        return {}


def ours_kernels(device: torch.device) -> dict:
    """Whether synthface's CUDA kernels were built and used, and why not."""
    if device.type != "cuda":
        return dict(used=False, why="CPU: the PyTorch ops are the CPU path")
    from stylegan_ops import _plugin  # noqa: PLC0415
    return dict(used=_plugin.plugin() is not None, why=_plugin._state.get("error"), mode=_plugin.mode())


def make_pair(resolution: int, device: torch.device, networks, precision: str = "fp16"):
    """(ours, ref) with identical weights; ref is None without --reference."""
    torch.manual_seed(WEIGHT_SEED)
    ref = None
    if networks is not None:
        ref = networks.Generator(**build_kwargs(resolution, precision)).eval().requires_grad_(False)
    ours = Generator(**build_kwargs(resolution, precision)).eval().requires_grad_(False)
    if ref is not None:
        # Same random weights and const-noise buffers in both; strict, so any naming drift fails here.
        ours.load_state_dict(ref.state_dict(), strict=True)
        ref = ref.to(device)
    return ours.to(device), ref


def forward_fns(ours, ref, device: torch.device, precision: str = "fp32"):
    if precision == "bf16":
        ours.set_cpu_precision("bf16")  # what `--precision bf16` gives users: synthesis under bf16 autocast

    def run_ours(z):
        return ours(z, None, truncation_psi=1, noise_mode="const")

    def run_ref(z):
        # NVIDIA's blocks would run fp16 on CPU too (slow, partly unsupported): force fp32 there,
        # which is what ours does by itself off CUDA.
        c = torch.empty([z.shape[0], 0], device=device)
        return ref(z, c, truncation_psi=1, noise_mode="const", force_fp32=(device.type == "cpu"))

    return run_ours, (run_ref if ref is not None else None)


def latents(batch: int, device: torch.device) -> torch.Tensor:
    gen = torch.Generator().manual_seed(LATENT_SEED)
    return torch.randn([batch, Z_DIM], generator=gen).to(device)


# --------------------------------------------------------------------------------------------
# FLOPs and the device's matmul peak

@torch.no_grad()
def count_flops(run, device: torch.device) -> int:
    """FLOPs of one image: the convolutions and matmuls of synthface's forward at batch 1, as
    torch.utils.flop_counter counts them (elementwise work is not counted)."""
    from torch.utils.flop_counter import FlopCounterMode  # noqa: PLC0415
    z = latents(1, device)
    with FlopCounterMode(display=False) as counter:
        run(z)
    return int(counter.get_total_flops())


def matmul_peak(device: torch.device, dtype: torch.dtype, n: int | None = None, repeats: int = 10) -> float:
    """Measured FLOP/s of a large square matmul: the practical peak the generator is held against."""
    n = n or (8192 if device.type == "cuda" else 2048)
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(2):
        a @ b
    sync(device)
    t0 = time.perf_counter()
    for _ in range(repeats):
        a @ b
    sync(device)
    return 2 * n**3 * repeats / (time.perf_counter() - t0)


# --------------------------------------------------------------------------------------------
# Timing

def sync(device: torch.device) -> None:
    # CUDA launches are asynchronous: wait for the work to finish before reading the clock.
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, z, device: torch.device) -> float:
    sync(device)
    t0 = time.perf_counter()
    fn(z)
    sync(device)
    return time.perf_counter() - t0


def summarize(per_image: list[float]) -> dict:
    return dict(median_s_per_image=statistics.median(per_image), min_s_per_image=min(per_image),
                samples_s_per_image=[round(t, 6) for t in per_image])


def bench_case(fns: dict, batch: int, repeats: int, warmup: int, device: torch.device) -> dict:
    """Time every implementation `repeats` times, interleaved so load spikes hit them equally."""
    z = latents(batch, device)
    names = list(fns)
    for i in range(warmup):
        for name in names:
            log(f"  warmup {i + 1}/{warmup} {name}")
            timed(fns[name], z, device)
    samples = {name: [] for name in names}
    for i in range(repeats):
        # Alternate which one goes first, so neither always runs right after the other.
        order = names if i % 2 == 0 else names[::-1]
        for name in order:
            seconds = timed(fns[name], z, device)
            samples[name].append(seconds / batch)
            log(f"  repeat {i + 1}/{repeats} {name}: {seconds / batch:.4f} s/img")
    return {name: summarize(s) for name, s in samples.items()}


@torch.no_grad()
def check_equal(run_ours, run_ref, batch: int, device: torch.device) -> dict:
    z = latents(batch, device)
    a = run_ours(z).float()
    b = run_ref(z).float()
    if a.shape != b.shape:
        return dict(shape_ours=list(a.shape), shape_ref=list(b.shape), max_abs_diff=None)
    diff = (a - b).abs()
    return dict(max_abs_diff=diff.max().item(), mean_abs_diff=diff.mean().item(),
                output_abs_max=b.abs().max().item())


def print_table(results: list[dict]) -> None:
    """The paired figures at a glance, on stderr (the JSON on stdout stays machine-readable)."""
    head = "| resolution | batch | precision | ours s/img | NVIDIA s/img | ratio | ours GFLOP/s | NVIDIA GFLOP/s | max abs diff |"
    lines = [head, "|---" * (head.count("|") - 1) + "|"]
    for e in results:
        ref = e.get("ref")
        lines.append(f"| {e['resolution']} | {e['batch']} | {e['precision']} | {e['ours']['median_s_per_image']:.3f} | "
                     + (f"{ref['median_s_per_image']:.3f} | {e['ratio']:.2f} | " if ref else "- | - | ")
                     + f"{e['ours']['gflop_per_s']:.0f} | " + (f"{ref['gflop_per_s']:.0f} | " if ref else "- | ")
                     + (f"{e['check']['max_abs_diff']:.1e} |" if "check" in e else "- |"))
    print("\n".join(lines), file=sys.stderr)


def default_tolerance(device: torch.device) -> float:
    # fp32 on CPU agrees to rounding; on CUDA the 4 highest resolutions run in fp16.
    return 1e-3 if device.type == "cpu" else 5e-2


# --------------------------------------------------------------------------------------------

def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--resolutions", type=int_list, default="256,1024", help="comma-separated (default: 256,1024)")
    p.add_argument("--batches", type=int_list, default=None,
                   help="comma-separated batch sizes (default: 1,8 on CPU, 1,8,32 on CUDA)")
    p.add_argument("--precisions", default=None,
                   help="comma-separated from fp32,fp16,bf16 (default: fp32 on CPU, fp32,fp16 on CUDA; fp16 needs "
                        "CUDA; bf16 is synthface under autocast against NVIDIA in fp32)")
    p.add_argument("--no-cudnn-benchmark", action="store_true",
                   help="leave torch.backends.cudnn.benchmark off (default: on, for both networks)")
    p.add_argument("--repeats", type=int, default=5, help="timed runs per implementation and case (default: 5)")
    p.add_argument("--warmup", type=int, default=1, help="untimed runs per implementation and case (default: 1)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto",
                   help="auto = cuda when available (default: auto)")
    p.add_argument("--reference", metavar="PATH", default=None,
                   help="stylegan2-ada-pytorch checkout to compare against, with the same weights")
    p.add_argument("--tolerance", type=float, default=None,
                   help="max abs output difference ours vs reference (default: 1e-3 on CPU, 5e-2 on CUDA)")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's choice)")
    p.add_argument("--out", metavar="FILE", default=None, help="also write the JSON to this file")
    args = p.parse_args(argv)
    if args.repeats < 1 or args.warmup < 0 or not args.resolutions or args.batches == []:
        p.error("need --repeats >= 1, --warmup >= 0 and at least one resolution and batch")
    if args.precisions is not None:
        args.precisions = [v.strip() for v in args.precisions.split(",") if v.strip()]
        bad = [v for v in args.precisions if v not in NUM_FP16_RES]
        if bad or not args.precisions:
            p.error(f"--precisions: choose from fp32,fp16,bf16 (got {bad or 'nothing'})")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.device == "auto":
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    elif args.device == "cuda" and not torch.cuda.is_available():
        sys.exit("--device cuda: CUDA is not available in this torch build")
    else:
        device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    on_cuda = device.type == "cuda"
    batches = args.batches or ([1, 8, 32] if on_cuda else [1, 8])
    precisions = args.precisions or (["fp32", "fp16"] if on_cuda else ["fp32"])
    if "fp16" in precisions and not on_cuda:
        sys.exit("--precisions fp16 needs --device cuda (both generators run fp32 on CPU)")
    if "bf16" in precisions and on_cuda:
        sys.exit("--precisions bf16 is the CPU option (--device cpu); on CUDA use fp16")
    if on_cuda:
        torch.backends.cudnn.benchmark = not args.no_cudnn_benchmark
    tolerance = args.tolerance if args.tolerance is not None else default_tolerance(device)

    networks = None
    record = dict(machine=machine_info(device))
    if args.reference:
        networks, ref_root = import_reference(args.reference)
        record["reference"] = dict(path=str(ref_root), commit=git_commit(ref_root))
    shared = {k: v for k, v in build_kwargs(None).items() if k != "img_resolution"}
    # num_fp16_res depends on the precision: recorded per precision below, not in the shared config
    shared["synthesis_kwargs"] = {k: v for k, v in shared["synthesis_kwargs"].items() if k != "num_fp16_res"}
    record["config"] = dict(shared,
                            resolutions=args.resolutions, batches=batches, precisions=precisions,
                            truncation_psi=1, noise_mode="const",
                            repeats=args.repeats, warmup=args.warmup, weight_seed=WEIGHT_SEED,
                            latent_seed=LATENT_SEED, tolerance=tolerance,
                            num_fp16_res={p: NUM_FP16_RES[p] for p in precisions})
    peaks = {}
    for prec in precisions:
        dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(prec, torch.float32)
        peaks[prec] = matmul_peak(device, dtype)
        log(f"matmul peak {prec}: {peaks[prec] / 1e12:.2f} TFLOP/s")
    record["matmul_peak_flops"] = peaks
    log(f"device={device} ({record['machine']['device_name']}), torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, reference={'yes' if networks else 'no'}")

    results, all_match = [], True
    with torch.no_grad():  # inference only: no autograd bookkeeping in the timings
        for prec in precisions:
            for res in args.resolutions:
                log(f"building {res}x{res} {prec} generator(s)")
                ours, ref = make_pair(res, device, networks, prec)
                run_ours, run_ref = forward_fns(ours, ref, device, prec)
                fns = {"ours": run_ours}
                if run_ref is not None:
                    fns["ref"] = run_ref
                flops = count_flops(run_ours, device)
                log(f"{res}px: {flops / 1e9:.1f} GFLOP per image")
                for batch in batches:
                    entry = dict(resolution=res, batch=batch, precision=prec, flops_per_image=flops)
                    if run_ref is not None:
                        # Time only networks that compute the same thing.
                        entry["check"] = check_equal(run_ours, run_ref, batch, device)
                        diff = entry["check"]["max_abs_diff"]
                        # bf16 against fp32 is expected to differ: its error is reported, not held to the tolerance
                        entry["check"]["match"] = diff is not None and (prec == "bf16" or diff <= tolerance)
                        all_match &= entry["check"]["match"]
                        log(f"{res}px {prec} batch {batch}: max |ours - ref| = {diff}"
                            + ("" if entry["check"]["match"] else f"  ** above tolerance {tolerance} **"))
                    log(f"{res}px {prec} batch {batch}: timing ({args.warmup} warmup, {args.repeats} repeats)")
                    entry.update(bench_case(fns, batch, args.repeats, args.warmup, device))
                    for name in fns:
                        s_img = entry[name]["median_s_per_image"]
                        entry[name]["images_per_s"] = 1 / s_img
                        entry[name]["fraction_of_matmul_peak"] = flops / s_img / peaks[prec]
                        entry[name]["gflop_per_s"] = flops / s_img / 1e9
                    if "ref" in entry:
                        entry["ratio"] = entry["ref"]["median_s_per_image"] / entry["ours"]["median_s_per_image"]
                        log(f"{res}px {prec} batch {batch}: ours {entry['ours']['images_per_s']:.2f} img/s "
                            f"({entry['ours']['gflop_per_s']:.0f} GFLOP/s), ref {entry['ref']['images_per_s']:.2f} "
                            f"img/s ({entry['ref']['gflop_per_s']:.0f} GFLOP/s), ratio {entry['ratio']:.3f}")
                    else:
                        log(f"{res}px {prec} batch {batch}: ours {entry['ours']['images_per_s']:.2f} img/s")
                    results.append(entry)
                del ours, ref, run_ours, run_ref, fns  # free the big nets before building the next size
                if on_cuda:
                    torch.cuda.empty_cache()

    record["machine"]["load_average_end"] = load_average()
    record["ours_kernels"] = ours_kernels(device)
    if networks is not None and on_cuda:
        record["reference"]["cuda_plugins"] = reference_plugins()
    record["results"] = results
    if networks is not None:
        record["outputs_match"] = all_match
    text = json.dumps(record, indent=2)
    print(text)
    print_table(results)
    if args.out:
        write_json_atomic(args.out, record)
        log(f"wrote {args.out}")
    # Non-zero exit when the two networks disagree: the timings then compare different computations.
    return 0 if all_match else 1


if __name__ == "__main__":
    sys.exit(main())
