#!/usr/bin/env python
"""Check that synthface.load_backbone gives arcface_torch's own outputs on arcface_torch's weights.

    python scripts/compare_arcface.py --arcface-root /work/ref/insightface --out compare_arcface.json

--arcface-root: a checkout of deepinsight/insightface (or of its recognition/arcface_torch folder),
kept outside this repository. For each architecture the script builds arcface_torch's network,
gives it random weights and non-trivial BatchNorm statistics (random running means, variances
and affine parameters; arcface_torch's own init leaves BN at identity, which would hide a mix-up),
saves its state dict as train_v2.py does (torch.save of the state dict, as model.pt), loads that
file through synthface.load_backbone (architecture inferred from the tensors) and compares both
networks' eval-mode outputs on the same normalised 112x112 batch. Relative error: max |a - b| /
max |b|. Writes a JSON report; exits 1 when any architecture exceeds --tol.
"""

from __future__ import annotations

import sys
import tempfile
import time
import warnings
from pathlib import Path

import click
import torch

from synthface.fileio import write_json_atomic
from synthface.nets import load_backbone

DEFAULT_ARCHS = ("r18", "r34", "r50", "r100", "mbf")


def arcface_get_model(root: Path):
    """arcface_torch's backbones.get_model, imported from the checkout without installing it."""
    for cand in (root, root / "recognition" / "arcface_torch"):
        if (cand / "backbones" / "iresnet.py").is_file():
            sys.path.insert(0, str(cand))
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                from backbones import get_model  # noqa: E402  (arcface_torch's package)
            return get_model
    raise click.ClickException(f"{root} holds no arcface_torch (looked for backbones/iresnet.py in it and in "
                               "recognition/arcface_torch/)")


def randomise(net: torch.nn.Module, gen: torch.Generator):
    """Random weights everywhere, including BN statistics, so every tensor's place matters."""
    with torch.no_grad():
        for name, t in list(net.named_parameters()) + list(net.named_buffers()):
            if not t.is_floating_point():
                continue
            if name.endswith("running_var"):
                t.copy_(torch.rand(t.shape, generator=gen) * 1.5 + 0.5)
            elif name.endswith("running_mean"):
                t.copy_(torch.randn(t.shape, generator=gen) * 0.1)
            elif t.ndim == 1:  # BN/PReLU weights and biases
                base = 1.0 if name.endswith("weight") else 0.0
                t.copy_(base + torch.randn(t.shape, generator=gen) * 0.1)
            else:  # He-scaled, so activations keep their size through a hundred layers
                fan_in = t[0].numel()
                t.copy_(torch.randn(t.shape, generator=gen) * (2.0 / fan_in) ** 0.5)


def compare(get_model, arch: str, batch: int, seed: int, workdir: Path) -> dict:
    gen = torch.Generator().manual_seed(seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # arcface_torch uses the deprecated torch.cuda.amp.autocast
        theirs = get_model(arch, fp16=False, num_features=512)
        randomise(theirs, gen)
        theirs.eval()
        path = workdir / f"{arch}.pt"
        torch.save(theirs.state_dict(), path)
        ours = load_backbone(path)
        x = torch.rand(batch, 3, 112, 112, generator=gen) * 255
        x = (x - 127.5) / 127.5
        with torch.no_grad():
            t0 = time.perf_counter()
            ref = theirs(x)
            t_ref = time.perf_counter() - t0
            t0 = time.perf_counter()
            out = ours(x)
            t_ours = time.perf_counter() - t0
    err = (out - ref).abs().max().item()
    scale = ref.abs().max().item()
    cos = torch.nn.functional.cosine_similarity(out, ref, dim=1).min().item()
    return {"arch": arch, "inferred_arch": ours.synthface_meta["arch"], "tensors": len(theirs.state_dict()),
            "parameters": sum(p.numel() for p in theirs.parameters()), "batch": batch,
            "max_abs_error": err, "max_abs_output": scale, "max_rel_error": err / scale,
            "min_cosine": cos, "forward_s_arcface": t_ref, "forward_s_synthface": t_ours}


@click.command()
@click.option("--arcface-root", required=True, type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--arch", "archs", multiple=True, default=DEFAULT_ARCHS, show_default=True)
@click.option("--batch", default=4, show_default=True)
@click.option("--seed", default=0, show_default=True)
@click.option("--tol", default=1e-5, show_default=True, help="largest relative error allowed")
@click.option("--out", default="compare_arcface.json", show_default=True, type=click.Path(path_type=Path))
def main(arcface_root, archs, batch, seed, tol, out):
    torch.manual_seed(seed)
    get_model = arcface_get_model(arcface_root)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, arch in enumerate(archs):
            row = compare(get_model, arch, batch, seed + i, Path(tmp))
            row["pass"] = row["max_rel_error"] <= tol and row["inferred_arch"] == arch
            rows.append(row)
            click.echo(f"{arch:6s} tensors {row['tensors']:5d}  max rel. error {row['max_rel_error']:.2e}  "
                       f"min cosine {row['min_cosine']:.9f}  {'ok' if row['pass'] else 'FAIL'}")
    report = {"tolerance": tol, "torch": torch.__version__, "threads": torch.get_num_threads(),
              "arcface_root": str(arcface_root), "results": rows, "pass": all(r["pass"] for r in rows)}
    write_json_atomic(out, report)
    click.echo(f"wrote {out}")
    sys.exit(0 if report["pass"] else 1)


if __name__ == "__main__":
    main()
