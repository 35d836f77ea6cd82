#!/usr/bin/env python
"""Training-step throughput: synthface's backbone and margin loss beside arcface_torch's, in one run.

    python scripts/bench_train.py --arcface-root /work/ref/insightface --out bench_out/train_r50_cpu.json

One step = forward of a batch through the backbone, the margin head (L2-normalised embeddings
against L2-normalised class centres, combined margin cos(m1*theta + m2) - m3 scaled by s,
cross-entropy), backward, and an SGD step (momentum 0.9, weight decay 5e-4) on backbone and
centres. arcface_torch's side is its `backbones.get_model(arch)` and its `losses.CombinedMarginLoss`
with the head as its PartialFC_V2 computes it on one process at sample rate 1 (linear on the
normalised vectors, clamp to [-1, 1], margin, cross-entropy), since PartialFC itself needs
torch.distributed; synthface's side is `synthface.nets.build_backbone` and
`synthface.train.losses.MarginHead(CombinedMarginLoss)`. Both start from the same weights. Each side
runs in the memory format its trainer uses: arcface_torch's train.py leaves tensors contiguous;
synthface's train_recognition uses channels_last (synthface.train.recognition.CHANNELS_LAST) on every
device; --same-format runs both contiguous to compare the computation alone.

Sides alternate (ABAB..., the order swapped every repeat) so drifting machine load hits both alike;
the figure per side is the median step time. ratio = synthface images/s / arcface_torch images/s.
On CUDA, --amp bf16 runs the forward under autocast as arcface_torch's fp16 config does with bf16.
"""

from __future__ import annotations

import statistics
import sys
import time
import warnings
from pathlib import Path

import click
import torch
import torch.nn.functional as F

from synthface.fileio import write_json_atomic
from synthface.nets import build_backbone


def arcface_modules(root: Path):
    for cand in (root, root / "recognition" / "arcface_torch"):
        if (cand / "backbones" / "iresnet.py").is_file() and (cand / "losses.py").is_file():
            sys.path.insert(0, str(cand))
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                from backbones import get_model  # noqa: E402  (arcface_torch)
                from losses import CombinedMarginLoss  # noqa: E402
            return get_model, CombinedMarginLoss
    raise click.ClickException(f"{root} holds no arcface_torch (backbones/iresnet.py and losses.py)")


class ArcfaceSide(torch.nn.Module):
    """arcface_torch's training computation on one process: backbone -> PartialFC_V2 (sample rate 1)."""

    def __init__(self, backbone, margin, centres):
        super().__init__()
        self.backbone, self.margin = backbone, margin
        self.weight = torch.nn.Parameter(centres.clone())

    def forward(self, x, labels):
        emb = self.backbone(x)
        logits = F.linear(F.normalize(emb), F.normalize(self.weight)).clamp(-1, 1)
        return F.cross_entropy(self.margin(logits, labels), labels)


class SynthfaceSide(torch.nn.Module):
    def __init__(self, backbone, head):
        super().__init__()
        self.backbone, self.head = backbone, head

    def forward(self, x, labels):
        return self.head(self.backbone(x), labels)


def step_fn(model, opt, x, y, device, amp):
    def step():
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp == "bf16"):
            loss = model(x, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        return float(loss)
    return step


@click.command()
@click.option("--arcface-root", required=True, type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--arch", default="r50", show_default=True)
@click.option("--batch", default=32, show_default=True)
@click.option("--classes", default=1000, show_default=True, help="identities in the margin head")
@click.option("--repeats", default=5, show_default=True, help="timed steps per side")
@click.option("--warmup", default=1, show_default=True, help="untimed steps per side first")
@click.option("--device", default="cpu", show_default=True)
@click.option("--amp", type=click.Choice(["none", "bf16"]), default="none", show_default=True)
@click.option("--threads", default=0, show_default=True, help="torch CPU threads (0: torch's default)")
@click.option("--seed", default=0, show_default=True)
@click.option("--same-format", is_flag=True, help="both sides contiguous (synthface's trainer uses channels_last)")
@click.option("--out", default="bench_out/train_bench.json", show_default=True, type=click.Path(path_type=Path))
def main(arcface_root, arch, batch, classes, repeats, warmup, device, amp, threads, seed, same_format, out):
    if threads:
        torch.set_num_threads(threads)
    device = torch.device(device)
    if amp != "none" and device.type != "cuda":
        raise click.ClickException("--amp bf16 is for CUDA (the CPU figure is fp32)")
    get_model, TheirMargin = arcface_modules(arcface_root)
    from synthface.train.losses import CombinedMarginLoss, MarginHead
    from synthface.train.recognition import CHANNELS_LAST
    ours_cl = CHANNELS_LAST and not same_format

    torch.manual_seed(seed)
    s, m1, m2, m3 = 64.0, 1.0, 0.5, 0.0  # arcface_torch's ArcFace setting of its combined margin
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs_bb = get_model(arch, fp16=False, num_features=512)
    ours_bb = build_backbone(arch, 512)
    ours_bb.load_state_dict(theirs_bb.state_dict())
    centres = torch.normal(0, 0.01, (classes, 512))
    head = MarginHead(512, classes, CombinedMarginLoss(s, m1, m2, m3))
    with torch.no_grad():
        head.weight.copy_(centres)
    sides = {"arcface_torch": ArcfaceSide(theirs_bb, TheirMargin(s, m1, m2, m3), centres),
             "synthface": SynthfaceSide(ours_bb, head)}
    gen = torch.Generator().manual_seed(seed)
    x = ((torch.rand(batch, 3, 112, 112, generator=gen) * 255 - 127.5) / 127.5).to(device)
    y = torch.randint(0, classes, (batch,), generator=gen).to(device)
    steps = {}
    for name, model in sides.items():
        model.to(device).train()
        xs = x
        if name == "synthface" and ours_cl:  # as synthface.train.engine.Trainer(channels_last=True) does
            model.to(memory_format=torch.channels_last)
            xs = x.contiguous(memory_format=torch.channels_last)
        params = [p for p in model.parameters() if p.requires_grad]
        opt = torch.optim.SGD(params, lr=0.02, momentum=0.9, weight_decay=5e-4)
        steps[name] = step_fn(model, opt, xs, y, device, amp)
    times = {name: [] for name in sides}
    cpu = {name: [] for name in sides}  # process CPU time: less sensitive to other jobs on the machine
    losses = {name: [] for name in sides}
    order = list(sides)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # arcface_torch's torch.cuda.amp.autocast deprecation
        for _ in range(warmup):
            for name in order:
                losses[name].append(steps[name]())
        for r in range(repeats):
            for name in (order if r % 2 == 0 else order[::-1]):
                t0, c0 = time.perf_counter(), time.process_time()
                losses[name].append(steps[name]())
                times[name].append(time.perf_counter() - t0)
                cpu[name].append(time.process_time() - c0)
                click.echo(f"repeat {r + 1}/{repeats} {name:14s} {times[name][-1]:.3f} s/step "
                           f"({cpu[name][-1]:.3f} CPU s)")
    rows = {}
    for name, ts in times.items():
        med = statistics.median(ts)
        rows[name] = {"median_s_per_step": med, "images_per_s": batch / med, "step_s": ts,
                      "median_cpu_s_per_step": statistics.median(cpu[name]), "step_cpu_s": cpu[name],
                      "losses": losses[name]}
    ratio = rows["synthface"]["images_per_s"] / rows["arcface_torch"]["images_per_s"]
    cpu_ratio = rows["arcface_torch"]["median_cpu_s_per_step"] / rows["synthface"]["median_cpu_s_per_step"]
    report = {"arch": arch, "batch": batch, "input": [3, 112, 112], "classes": classes, "dtype": "float32",
              "amp": amp, "device": str(device), "threads": torch.get_num_threads(), "torch": torch.__version__,
              "repeats": repeats, "warmup": warmup, "margin": {"s": s, "m1": m1, "m2": m2, "m3": m3},
              "optimizer": "SGD momentum 0.9 weight decay 5e-4", "results": rows,
              "memory_format": {"arcface_torch": "contiguous", "synthface": "channels_last" if ours_cl else "contiguous"},
              "ratio_synthface_over_arcface": ratio, "cpu_time_ratio_synthface_over_arcface": cpu_ratio}
    if device.type == "cuda":
        report["gpu"] = torch.cuda.get_device_name(device)
    write_json_atomic(out, report)
    for name, row in rows.items():
        click.echo(f"{name:14s} median {row['median_s_per_step']:.3f} s/step  {row['images_per_s']:.2f} images/s")
    click.echo(f"ratio synthface / arcface_torch: {ratio:.3f} (CPU time: {cpu_ratio:.3f})   wrote {out}")


if __name__ == "__main__":
    main()
