"""The built-in default that `make demo` runs on: the demo world.

It loads the StyleGAN2 trained on the (deliberately biased) demo-world faces through the same
`load_generator` path real checkpoints take, generates random faces, labels them with the
world's attribute classifier and writes: a seed grid, one contact sheet per group x gender
cell, the renderer's own faces per cell for comparison, and report.md with the cell
frequencies next to the training distribution (the bias the balancing pipeline must undo).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .errors import SynthfaceError
from .fileio import atomic_write, image_grid, save_image_atomic
from .generator import describe, load_generator
from .labelling import OnnxClassifier
from .world import BIASED, GENDERS, GROUPS, World, take
from .world.assess import CELLS, assess_generator
from .assets import attribute_classifier_path, generator_path


def renderer_sheets(outdir: Path, per_cell: int = 16) -> dict:
    """Ground truth: the renderer's faces for every cell (4 images of each of 4 identities)."""
    world = World(seed=0)
    sheets = {}
    for gi, g in enumerate(GROUPS):
        for si, s in enumerate(GENDERS):
            ident = world.identities(range(1000 + 10 * (gi * 2 + si), 1000 + 10 * (gi * 2 + si) + 4), group=gi,
                                     gender=si)
            rows = np.repeat(np.arange(4), per_cell // 4)
            imgs = world.render(take(ident, rows), np.tile(np.arange(per_cell // 4), 4), size=64)
            p = save_image_atomic(image_grid(list(imgs), cols=8), outdir / "renderer" / f"{g}_{s}.png")
            sheets[f"{g}/{s}"] = str(p.relative_to(outdir))
    return sheets


def balanced_set(G, outdir: Path, bank_n: int, per_cell: int, log=print) -> dict:
    """The latent-model pipeline on the demo world: label a bank, fit, sample every cell with
    verification by the world's classifier, and judge the result with the audit classifier."""
    import warnings

    from .labelling import load_labeller
    from .latent import DemographicLatentModel, build_bank, parse_cells, run_sampling

    verifier, audit = load_labeller("world"), load_labeller("world-audit")
    log(f"labelling a bank of {bank_n} latents (resumable: {outdir / 'bank'})")
    bank = build_bank(G, verifier, outdir / "bank", bank_n, log=log)
    model = DemographicLatentModel(**DEMO_FIT)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        model.fit_bank(bank)
    model.save(outdir / "model.synthface")
    log(f"fitted: {model.report_['n_components']}-dim {model.projection} projection, held-out cell accuracy "
        f"{100 * model.report_['holdout']['accuracy']:.1f}%")
    specs = parse_cells("all", model.schema_, model.attributes_)
    return run_sampling(model, G, specs, per_cell, outdir / "balanced", labeller=verifier, audit=audit,
                        baseline_n=max(1000, 2 * per_cell), log=log, **DEMO_SAMPLE)


def identity_set(G, outdir: Path, ids_per_cell: int, images_per_id: int, log=print) -> dict:
    """N distinct identities x K images per cell from the fitted model, judged by the audit
    recogniser; D_intra against renderer faces of the same cell (the world's 'real' images)."""
    from .dataset import DatasetConfig, generate_dataset, merge
    from .dataset.writer import crop112
    from .identity import load_embedder
    from .identity.thresholds import reference_threshold
    from .world.reference import renderer_reference
    from .labelling import load_labeller
    from .latent import DemographicLatentModel

    model = DemographicLatentModel.load(outdir / "model.synthface")
    emb, audit = load_embedder("world"), load_embedder("world-audit")
    cfg = DatasetConfig(ids_per_cell=ids_per_cell, images_per_id=images_per_id, **DEMO_IDENTITIES)
    generate_dataset(model, G, load_labeller("world"), emb, outdir / "dataset", cfg, log=log)
    src = reference_threshold(renderer_reference(), audit, DEMO_AUDIT_FMR)
    world = World(seed=0)
    reference = {}
    for gi, g in enumerate(GROUPS):
        for si, s in enumerate(GENDERS):
            ident = world.identities(range(20000 + 1000 * (2 * gi + si), 20000 + 1000 * (2 * gi + si) + 100),
                                     group=gi, gender=si)
            reference[f"group={g},gender={s}"] = crop112(world.render(ident, [0] * 100, size=64))
    from .world.reference import coverage_inputs
    cov = coverage_inputs(list(reference), ids_per_cell, images_per_id)
    return merge(outdir / "dataset", audit=(audit, src["threshold"], src), reference=reference, log=log, coverage=cov)


# Settings of the demo's balanced set (and of the figures quoted in docs/benchmarks.md).
DEMO_FIT = dict(confidence=0.95)
DEMO_SAMPLE = dict(accept_confidence=0.99, truncation=1.0, budget=8.0)
# Identities are distinct when the world recogniser would not match them at FMR 1e-4 on renderer
# faces (the world's real faces), and a variation keeps its identity when the recogniser matches it
# at FMR 1e-3, the usual verification operating point (at 1e-4 an identity of a latent model fitted on
# a small bank could find no variation at all); the audit recogniser judges at its own FMR 1e-3.
# Images of one identity vary along labelled nuisance directions (pose, expression, light, glasses read by
# the world's nuisance regressor), each aimed at one renderer face's values (strength None: the full
# conditional-mean step, which moves a nuisance by about its W readout's R^2 times the distance to the target).
DEMO_IDENTITIES = dict(accept_confidence=0.99, separation_fmr=1e-4, consistency_fmr=1e-3, reference="world",
                       variations="labelled", nuisance_regressor="world", strength=None, identity_budget=150.0,
                       variation_budget=60)
DEMO_AUDIT_FMR = 1e-3


def run_demo(outdir: str | Path, n: int = 512, bank_n: int = 8000, per_cell: int = 100, ids_per_cell: int = 10,
             images_per_id: int = 5, log=print) -> dict:
    """The whole pipeline on the demo world; writes OUTDIR/report.md and everything it links to."""
    outdir = Path(outdir)
    net = generator_path()
    G = load_generator(net, device="cpu")
    info = describe(net)
    log(json.dumps({k: info[k] for k in ("format", "resolution", "z_dim", "w_dim", "num_ws", "parameters")}))
    clf = OnnxClassifier(attribute_classifier_path())
    log(f"generating and labelling {n} random faces (seeds 0-{n - 1}, psi 1)")
    res = assess_generator(G, clf, outdir, n=n, distribution=BIASED)
    truth = renderer_sheets(outdir)
    report = _assessment_section(net.name, info, n, res)
    bal = balanced_set(G, outdir, bank_n, per_cell, log) if per_cell else None
    if bal is not None:
        report += _balanced_section(bank_n, per_cell, bal)
    ids = identity_set(G, outdir, ids_per_cell, images_per_id, log) if (bal is not None and ids_per_cell) else None
    ev = None
    if ids is not None:
        report += _identity_section(ids_per_cell, images_per_id, ids["audit"])
        ev, text = _evaluate_dataset(outdir, log)
        report += text
    atomic_write(outdir / "report.md", lambda f: f.write(report.encode()))
    log(f"wrote {outdir / 'report.md'}, {outdir / 'seed_grid.png'} and contact sheets in {outdir / 'cells'}")
    return {"report": str(outdir / "report.md"), "assessment": res, "renderer_sheets": truth, "balanced": bal,
            "dataset": ids, "evaluation": ev}


def _assessment_section(net_name: str, info: dict, n: int, res: dict) -> str:
    rows = "\n".join(f"| {c} | {100 * res['training_cell_frequency'][c]:.1f} | {100 * res['cell_frequency'][c]:.1f} |"
                     for c in res["cell_frequency"])
    sheets = "\n".join(f"| {g}/{s} | ![](renderer/{g}_{s}.png) | " +
                       (f"![]({res['contact_sheets'][f'{g}/{s}']})" if f"{g}/{s}" in res["contact_sheets"] else "none")
                       + " |" for g, s in CELLS)
    return f"""# synthface demo: the demo world

Generator: `{net_name}` ({info['parameters']:,} parameters, {info['resolution']}x{info['resolution']}),
trained on demo-world faces drawn with a deliberate bias. {n} random samples (seeds 0-{n - 1}, psi 1),
labelled by the world's attribute classifier (`attributes.onnx`).

![seed grid](seed_grid.png)

- images with group and gender probability >= 0.9: **{100 * res['confident_0.9_fraction']:.1f}%**
  (group alone: {100 * res['group_confident_0.9_fraction']:.1f}%, gender alone: {100 * res['gender_confident_0.9_fraction']:.1f}%)
- largest gap between a cell's frequency and the training distribution: {res['max_abs_difference_points']:.1f} points

| cell | training set % | random samples % |
|---|---|---|
{rows}

Random sampling reproduces the bias; balanced sampling of any cell is the latent model's job.

| cell | renderer (ground truth) | generated, labelled into the cell |
|---|---|---|
{sheets}
"""


def _balanced_section(bank_n: int, per_cell: int, bal: dict) -> str:
    rows = "\n".join(f"| {c} | {100 * bal['uniform_sampling_audit'][c]['argmax']:.1f} | "
                     f"{100 * bal['balanced_set_audit'][c]['argmax']:.1f} | {100 * r['audit_precision']:.1f} | "
                     f"{r['gain_over_rejection_sampling']:.1f}x |" for c, r in bal["cells"].items())
    return f"""
## A balanced set from the latent model

A bank of {bank_n} generated faces was labelled by the world's classifier, the latent model fitted
on it (`model.synthface`), and {per_cell} faces sampled per cell, each re-labelled and redrawn if
not confidently in its cell. The audit classifier, trained independently and never used for
fitting or verification, judges the result. Images: `balanced/images/<cell>/`; details:
[balanced/report.md](balanced/report.md).

| cell | uniform sampling % (audit) | balanced set % (audit) | audit precision % | accepted per generated vs rejection sampling |
|---|---|---|---|---|
{rows}

![cell frequencies](balanced/frequencies.png)
"""


def _identity_section(ids_per_cell: int, images_per_id: int, a: dict) -> str:
    return f"""
## An identity dataset

{ids_per_cell} distinct identities x {images_per_id} images per cell (`dataset/`: arcface_torch ImageFolder,
RecordIO, Hugging Face metadata, manifest, pairs; card: [dataset/README.md](dataset/README.md)), selected with the
world's recogniser (distinct at its FMR 1e-4 threshold on renderer faces) and judged by the audit recogniser at
its FMR {DEMO_AUDIT_FMR:g} threshold on renderer faces ({a['threshold']:.3f}):
cross-identity image pairs below it {100 * a['cross_identity_image_pairs_below_threshold']:.2f} %, C_intra
{a['C_intra']:.3f}, U_class {a['U_class']:.3f}, D_intra against renderer faces {a['D_intra']:.3f}.
"""


def _evaluate_dataset(outdir: Path, log) -> tuple[dict | None, str]:
    """Both world recognisers scored on the demo's dataset; (metrics or None, report section)."""
    from .evaluation import run_evaluation
    from .identity import load_embedder

    try:
        ev = run_evaluation(outdir / "dataset", [("world", load_embedder("world")),
                                                 ("world-audit", load_embedder("world-audit"))],
                            outdir / "evaluation", log=log)
    except SynthfaceError as e:  # a dataset too small to score (tiny demo settings)
        log(f"evaluation skipped: {e}")
        return None, f"\n## Evaluating recognisers on it\n\nSkipped: {e}\n"
    rows = "\n".join(f"| {k} | {100 * r['accuracy_mean']:.2f} | {100 * r['accuracy_std']:.2f} | {r['ser']:.3f} |"
                     for k, r in ev["recognisers"].items())
    return ev, f"""
## Evaluating recognisers on it

Per-group verification and fairness metrics of the demo recogniser and the audit recogniser on that
dataset: [evaluation/report.html](evaluation/report.html) (also report.md, metrics.json, plots).

| recogniser | mean accuracy % | STD | SER |
|---|---|---|---|
{rows}
"""
