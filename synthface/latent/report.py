"""`synthface sample`'s job: sample cells, compare with the prior baselines, audit, and write
latents, a small balanced image set, contact sheets, a frequency chart and report.md/json."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Mapping, Optional, Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from ..fileio import (atomic_write, disk_full_message, image_grid, save_image_atomic, sweep_temporaries,
                      write_json_atomic)
from ..locks import DirectoryLock
from ..utils import cell_file_name, log_stderr
from .cells import label_cells, matches
from .sampling import audit_precision, cell_frequencies, check_labeller, sample_cells, uniform_baseline


cell_dirname = cell_file_name  # kept: other modules and scripts import it by this name


def bar_chart(series: Mapping[str, Mapping[str, float]], title: str, width: int = 760) -> np.ndarray:
    """Grouped horizontal bars: series name -> {category: fraction}."""
    cats = list(next(iter(series.values())))
    colours = [(90, 90, 90), (31, 119, 180), (214, 39, 40), (44, 160, 44)]
    font = ImageFont.load_default()
    bar_h, gap, left, top = 12, 10, 230, 40
    height = top + len(cats) * (len(series) * bar_h + gap) + 20 + 16 * len(series)
    im = Image.new("RGB", (width, height), "white")
    d = ImageDraw.Draw(im)
    d.text((10, 10), title, fill="black", font=font)
    vmax = max(max(v.values()) for v in series.values()) or 1.0
    scale = (width - left - 70) / vmax
    y = top
    for c in cats:
        d.text((10, y + 2), c, fill="black", font=font)
        for k, (sname, vals) in enumerate(series.items()):
            v = vals[c]
            d.rectangle([left, y, left + v * scale, y + bar_h - 2], fill=colours[k % len(colours)])
            d.text((left + v * scale + 4, y), f"{100 * v:.1f}%", fill="black", font=font)
            y += bar_h
        y += gap
    for k, sname in enumerate(series):
        d.rectangle([10, y + 4, 20, y + 12], fill=colours[k % len(colours)])
        d.text((26, y + 2), sname, fill="black", font=font)
        y += 16
    return np.asarray(im)


def run_sampling(model, G, specs: Sequence[Mapping[str, str]], n: int, outdir, labeller=None, audit=None,
                 seed: int = 0, truncation: float = 1.0, budget: float = 4.0, baseline_n: int = 1000,
                 save_images: bool = True, batch_size: int = 64, accept_confidence: Optional[float] = None,
                 log: Callable[[str], None] = log_stderr) -> dict:
    """`synthface sample`: the report, latents, sheets and images in `outdir`, which this process
    holds alone while it writes (another writer is refused; temporaries of dead ones swept)."""
    with disk_full_message(outdir), DirectoryLock(outdir, "sample", log=log, sweep=sweep_temporaries):
        return _sample_and_report(model, G, specs, n, Path(outdir), labeller, audit, seed, truncation, budget,
                                  baseline_n, save_images, batch_size, accept_confidence, log)


def _sample_and_report(model, G, specs, n, outdir: Path, labeller, audit, seed, truncation, budget, baseline_n,
                       save_images, batch_size, accept_confidence, log) -> dict:
    if audit is not None:
        check_labeller(model, audit, "audit labeller")
    threshold = model.confidence if accept_confidence is None else accept_confidence
    results = sample_cells(model, G, specs, n, labeller, seed, truncation, budget, batch_size, threshold, log)
    report = {"n_per_cell": n, "seed": seed, "truncation": truncation, "budget": budget,
              "accept_confidence": threshold,
              "verifier": labeller.describe() if labeller is not None else None,
              "audit": audit.describe() if audit is not None else None,
              "model": {"attributes": model.attributes_, "projection": model.projection, "density": model.density,
                        "confidence": model.confidence, "generator_hash": model.generator_hash_,
                        "fit_report": model.report_}, "cells": {}}
    # Baselines: the generator's own distribution, labelled by the verifier and the audit.
    base = None
    if baseline_n and (labeller is not None or audit is not None):
        log(f"baseline: {baseline_n} prior samples")
        base = uniform_baseline(G, labeller or audit, model, baseline_n, seed, batch_size)
        base_v = base["probs"] if labeller is not None else None
        base_a = audit.predict_proba(base["images"]) if audit is not None else None
        if base_v is not None:
            report["uniform_sampling_verifier"] = cell_frequencies(base_v, model)
        if base_a is not None:
            report["uniform_sampling_audit"] = cell_frequencies(base_a, model)
    all_audit = []
    for r in results:
        row = {k: r[k] for k in ("requested", "accepted", "generated", "acceptance_rate",
                                 "verified_precision_before_rejection", "accepted_per_generated")}
        if base is not None and labeller is not None:
            idx, conf = label_cells(base["probs"], model.attributes_, threshold)
            prior_rate = float(matches(idx, conf, r["spec"], model.schema_, model.attributes_).mean())
            row["rejection_sampling_accepted_per_generated"] = prior_rate
            row["gain_over_rejection_sampling"] = (row["accepted_per_generated"] / prior_rate
                                                   if prior_rate > 0 else None)
        if audit is not None and r["accepted"]:
            ap = audit.predict_proba(r["images"])
            all_audit.append(ap)
            row["audit_precision"] = audit_precision(ap, r["spec"], model)
            idx, conf = label_cells(ap, model.attributes_, model.confidence)
            row["audit_confident_fraction"] = float(conf.all(1).mean())
        report["cells"][r["cell"]] = row
        d = cell_dirname(r["cell"])
        if r["accepted"]:
            save_image_atomic(image_grid(list(r["images"][:32]), cols=8), outdir / "sheets" / f"{d}.png")
            if save_images:
                for i, im in enumerate(r["images"]):
                    save_image_atomic(im, outdir / "images" / d / f"{i:05d}.png")
    if all_audit:
        merged = {a: np.concatenate([p[a] for p in all_audit]) for a in model.attributes_}
        report["balanced_set_audit"] = cell_frequencies(merged, model)
        fr = [v["argmax"] for v in report["balanced_set_audit"].values()]
        report["balanced_set_audit_spread_points"] = float(100 * (max(fr) - min(fr)))
    lat = {"w": np.concatenate([r["w"] for r in results]),
           "prior_seeds": np.concatenate([r["prior_seeds"] for r in results]),
           "cell": np.concatenate([[r["cell"]] * r["accepted"] for r in results]).astype(str)}
    atomic_write(outdir / "latents.npz", lambda f: np.savez(f, **lat))
    series = {}
    judge = "audit" if audit is not None else "verifier"
    if f"uniform_sampling_{judge}" in report:
        series["uniform sampling (prior)"] = {c: v["argmax"] for c, v in report[f"uniform_sampling_{judge}"].items()}
    if "balanced_set_audit" in report:
        series["latent model"] = {c: v["argmax"] for c, v in report["balanced_set_audit"].items()}
    if len(series) == 2:
        save_image_atomic(bar_chart(series, f"cell frequencies, labelled by the {judge} classifier"),
                          outdir / "frequencies.png")
    write_json_atomic(outdir / "report.json", report)
    atomic_write(outdir / "report.md", lambda f: f.write(markdown(report, results).encode()))
    return report


def _pct(v) -> str:
    return "-" if v is None else f"{100 * v:.1f}"


def markdown(report: dict, results) -> str:
    fit = report["model"]["fit_report"]
    lines = ["# synthface cell sampling", "",
             f"Latent model: {report['model']['projection']} projection ({fit['n_components']} dims), "
             f"{report['model']['density']} per cell, fitted on {fit['bank_size']} bank latents "
             f"({fit['confident_samples']} confident at {fit['confidence_threshold']}); held-out cell accuracy "
             f"from the projection: {_pct((fit.get('holdout') or {}).get('accuracy'))}%.", "",
             f"{report['n_per_cell']} faces requested per cell (seed {report['seed']}, truncation toward the cell "
             f"mean {report['truncation']}, budget {report['budget']} x n, accepted when the verifier's probability "
             f"is >= {report['accept_confidence']}).", "",
             "| cell | accepted | generated | verifier precision before rejection % | accepted per generated | "
             "rejection sampling from the prior | gain | audit precision % |",
             "|---|---|---|---|---|---|---|---|"]
    for name, r in report["cells"].items():
        gain = r.get("gain_over_rejection_sampling")
        lines.append(f"| {name} | {r['accepted']}/{r['requested']} | {r['generated']} | "
                     f"{_pct(r['verified_precision_before_rejection'])} | {r['accepted_per_generated']:.3f} | "
                     f"{r.get('rejection_sampling_accepted_per_generated', float('nan')):.3f} | "
                     f"{'-' if gain is None else f'{gain:.1f}x'} | {_pct(r.get('audit_precision'))} |")
    if "balanced_set_audit" in report:
        lines += ["", "Cell frequencies judged by the audit classifier (never used for fitting or verification):",
                  "", "| cell | uniform sampling (prior) % | latent-model set % |", "|---|---|---|"]
        uni = report.get("uniform_sampling_audit", {})
        for c, v in report["balanced_set_audit"].items():
            lines.append(f"| {c} | {_pct(uni.get(c, {}).get('argmax'))} | {_pct(v['argmax'])} |")
        lines += ["", f"Spread of the latent-model set's cell frequencies: "
                      f"{report['balanced_set_audit_spread_points']:.1f} points.", "", "![frequencies](frequencies.png)"]
    lines += ["", "## Contact sheets", ""]
    for r in results:
        if r["accepted"]:
            lines += [f"**{r['cell']}**", "", f"![{r['cell']}](sheets/{cell_dirname(r['cell'])}.png)", ""]
    return "\n".join(lines) + "\n"
