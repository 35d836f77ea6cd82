"""The main job, one command per step: `synthface label` (a bank of labelled latents), `fit` (the
demographic latent model), `sample` (verified faces per cell), `generate` (N identities x K images per
cell) and `merge` (a sharded dataset's manifest, exports and audit). Option names follow NVIDIA's
generate.py where they overlap, so existing commands carry over."""

from __future__ import annotations

from pathlib import Path

import click

from .errors import run_api as _run  # the command bodies below call it _run
from .options import (CELLS, CELLS_HELP, DEVICE, EMBEDDER_HELP, FINITE, FMR, FRACTION, LABELLER_HELP, NONNEG_INT,
                      NONNEGATIVE, POSITIVE_INT, PRECISION_HELP, SCHEMA_HELP, SEED, SIMILARITY, CommaList, FiniteFloat,
                      load_network)


@click.command()
@click.option("--network", required=True, help="Generator file, or 'world' for the demo world's.")
@click.option("--labeller", "labellers", multiple=True, default=["world"], show_default=True, help=LABELLER_HELP)
@click.option("--schema", default=None, help=SCHEMA_HELP)
@click.option("--n", type=click.IntRange(min=1), default=100000, show_default=True, help="latents in the bank")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="bank directory (resumable)")
@click.option("--seed", type=SEED, default=0, show_default=True, help="sample i uses seed + i")
@click.option("--trunc", "truncation_psi", type=FINITE, default=1.0, show_default=True)
@click.option("--noise-mode", type=click.Choice(["const", "random", "none"]), default="const", show_default=True)
@click.option("--batch", "batch_size", type=click.IntRange(min=1), default=64, show_default=True)
@click.option("--chunk", "chunk_size", type=click.IntRange(min=1), default=4096, show_default=True)
@click.option("--device", type=DEVICE, default="auto", show_default=True)
@click.option("--precision", type=click.Choice(["fp32", "bf16"]), default="fp32", show_default=True,
              help=PRECISION_HELP)
def label(network, labellers, schema, n, out, seed, truncation_psi, noise_mode, batch_size, chunk_size, device,
          precision):
    """Label a bank of generated faces: z -> w -> image -> attribute probabilities."""
    from ..labelling import load_labeller
    from ..latent import build_bank

    G, dev = load_network(network, device, precision)
    lab = _run(load_labeller, labellers, schema, device=str(dev))
    bank = _run(build_bank, G, lab, out, n, seed=seed, truncation_psi=truncation_psi, noise_mode=noise_mode,
                batch_size=batch_size, chunk_size=chunk_size, log=lambda m: click.echo(m, err=True))
    click.echo(f"{out}: {len(bank)} labelled latents; attributes "
               + "; ".join(f"{a} ({', '.join(c)})" for a, c in bank.schema.items()), err=True)


@click.command()
@click.option("--bank", required=True, type=click.Path(file_okay=False))
@click.option("--attributes", type=CommaList(item="attribute"), default=None,
              help="comma-separated, e.g. gender,ethnicity (default: all)")
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="model file, e.g. model.synthface")
@click.option("--confidence", type=FiniteFloat(0, 1, min_open=True), default=0.9, show_default=True,
              help="keep latents whose every label has at least this probability")
@click.option("--projection", type=click.Choice(["lda", "svm", "pca-lda"]), default="lda", show_default=True)
@click.option("--components", "n_components", type=click.IntRange(min=1), default=None,
              help="projection dims (default: cells - 1 for LDA, all SVM normals)")
@click.option("--density", type=click.Choice(["gaussian", "gmm"]), default="gaussian", show_default=True)
@click.option("--gmm-components", type=click.IntRange(min=1), default=3, show_default=True)
@click.option("--shrinkage", default="auto", show_default=True, help="covariance shrinkage: auto (Ledoit-Wolf) or 0..1")
@click.option("--min-count", type=click.IntRange(min=2), default=30, show_default=True,
              help="cells with fewer confident latents are not fitted")
@click.option("--seed", "random_state", type=SEED, default=0, show_default=True)
def fit(bank, attributes, out, confidence, projection, n_components, density, gmm_components, shrinkage, min_count,
        random_state):
    """Fit the demographic latent model (projection of W + one density per cell) on a bank."""
    import warnings

    from ..latent import DemographicLatentModel, LatentBank

    if shrinkage != "auto":
        try:
            shrinkage = float(shrinkage)
        except ValueError:
            raise click.BadParameter("use auto or a number in [0, 1]", param_hint="--shrinkage") from None
        if not 0.0 <= shrinkage <= 1.0:  # also refuses nan
            raise click.BadParameter(f"{shrinkage}: use auto or a number in [0, 1]", param_hint="--shrinkage")
    attrs = list(attributes) if attributes else None
    b = _run(LatentBank, bank)
    model = DemographicLatentModel(attributes=attrs, confidence=confidence, projection=projection,
                                   n_components=n_components, density=density, gmm_components=gmm_components,
                                   shrinkage=shrinkage, min_count=min_count, random_state=random_state)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _run(model.fit_bank, b)
    for w in caught:
        click.echo(f"warning: {w.message}", err=True)
    _run(model.save, out)
    r = model.report_
    click.echo(f"{r['confident_samples']}/{r['bank_size']} confident latents; {r['projection']} projection, "
               f"{r['n_components']} dims; held-out cell accuracy {100 * r['holdout']['accuracy']:.1f}%"
               if r["holdout"] else "", err=True)
    for name, c in r["cells"].items():
        click.echo(f"  {name}: {c['confident_count']}{'' if c['fitted'] else '  (too small, not fitted)'}", err=True)
    click.echo(f"wrote {out}", err=True)


@click.command()
@click.option("--model", "model_path", required=True, type=click.Path(dir_okay=False))
@click.option("--network", required=True, help="the generator the bank was labelled with ('world' for the demo's)")
@click.option("--cells", required=True, type=CELLS,
              help="'all', or cells separated by ';', e.g. 'gender=female,ethnicity=hispanic'")
@click.option("--n", type=click.IntRange(min=1), default=100, show_default=True, help="faces per cell")
@click.option("--outdir", required=True, type=click.Path(file_okay=False))
@click.option("--labeller", "labellers", multiple=True, default=["world"], show_default=True,
              help="verifying labeller (re-labels every sample; rejects are redrawn). " + LABELLER_HELP)
@click.option("--schema", default=None, help=SCHEMA_HELP)
@click.option("--no-verify", is_flag=True, help="skip verification (latents only, no re-labelling)")
@click.option("--audit", "audits", multiple=True, default=(), help="independent labeller(s) that only judge the result")
@click.option("--audit-schema", default=None, help="--schema for the audit labeller")
@click.option("--accept-confidence", type=FiniteFloat(0, 1, min_open=True), default=None,
              help="verifier probability needed to accept (default: the model's fitting threshold)")
@click.option("--trunc", "truncation", type=FINITE, default=1.0, show_default=True,
              help="truncation toward the cell mean in the projection (1 = none)")
@click.option("--budget", type=FiniteFloat(min=1), default=4.0, show_default=True,
              help="generate at most budget x n faces per cell")
@click.option("--baseline", "baseline_n", type=click.IntRange(min=0), default=1000, show_default=True,
              help="prior samples for the uniform / rejection-sampling baselines")
@click.option("--seed", type=SEED, default=0, show_default=True)
@click.option("--save-images/--no-save-images", default=True, show_default=True)
@click.option("--batch", "batch_size", type=click.IntRange(min=1), default=64, show_default=True)
@click.option("--device", type=DEVICE, default="auto", show_default=True)
def sample(model_path, network, cells, n, outdir, labellers, schema, no_verify, audits, audit_schema,
           accept_confidence, truncation, budget, baseline_n, seed, save_images, batch_size, device):
    """Sample demographic cells with the latent model, verify, compare with the prior, report."""
    from ..labelling import load_labeller
    from ..latent import DemographicLatentModel, parse_cells, run_sampling

    model = _run(DemographicLatentModel.load, model_path)
    specs = _run(parse_cells, cells, model.schema_, model.attributes_)
    G, dev = load_network(network, device)
    lab = None if no_verify else _run(load_labeller, labellers, schema, device=str(dev))
    aud = _run(load_labeller, audits, audit_schema, device=str(dev)) if audits else None
    rep = _run(run_sampling, model, G, specs, n, outdir, labeller=lab, audit=aud, seed=seed, truncation=truncation,
               budget=budget, baseline_n=baseline_n, save_images=save_images, batch_size=batch_size,
               accept_confidence=accept_confidence, log=lambda m: click.echo(m, err=True))
    short = [c for c, r in rep["cells"].items() if r["accepted"] < n]
    click.echo(f"wrote {Path(outdir) / 'report.md'}", err=True)
    if short:
        raise click.ClickException(f"cells short of {n} accepted faces within the budget: {'; '.join(short)} "
                                   "(raise --budget, lower --accept-confidence, or refit on a larger bank)")
@click.command()
@click.option("--network", required=True, help="the generator the latent model was fitted for ('world': the demo's)")
@click.option("--model", "model_path", required=True, type=click.Path(dir_okay=False))
@click.option("--cells", type=CELLS, default="all", show_default=True, help=CELLS_HELP)
@click.option("--ids-per-cell", type=click.IntRange(min=1), required=True)
@click.option("--images-per-id", type=click.IntRange(min=1), required=True)
@click.option("--out", required=True, type=click.Path(file_okay=False))
@click.option("--labeller", "labellers", multiple=True, default=["world"], show_default=True, help=LABELLER_HELP)
@click.option("--schema", default=None, help=SCHEMA_HELP)
@click.option("--recognizer", "--recogniser", "recognizer", default="world", show_default=True, help=EMBEDDER_HELP)
@click.option("--align", type=click.Choice(["fixed", "detect"]), default="fixed", show_default=True,
              help="fixed FFHQ->ArcFace transform, or the pack's detector + 5-point norm_crop")
@click.option("--separation", type=SIMILARITY, default=None,
              help="max cosine similarity between identities (default: the recogniser's threshold at "
                   "--separation-fmr on reference faces)")
@click.option("--separation-fmr", type=FMR, default=1e-4, show_default=True,
              help="false-match rate of the separation threshold, measured on --reference-* faces")
@click.option("--separation-quantile", type=FRACTION, default=None,
              help="fallback without reference faces: this quantile of impostor similarities of generated faces")
@click.option("--consistency", type=SIMILARITY, default=None,
              help="min cosine similarity of a variation to its identity (default: the recogniser's threshold at "
                   "--consistency-fmr on reference faces; without reference faces, the separation threshold)")
@click.option("--consistency-fmr", type=FMR, default=None,
              help="false-match rate of the consistency threshold on the reference faces [default: 1e-3]")
@click.option("--reference-embeddings", type=click.Path(dir_okay=False), default=None,
              help=".npy of real-face embeddings (one per person, same recogniser) for thresholds at an FMR")
@click.option("--reference-images", type=click.Path(file_okay=False), default=None,
              help="image folder <identity>/<image> of real faces for thresholds at an FMR "
                   "(default with --network world: the demo world's renderer faces)")
@click.option("--leakage-gallery", type=click.Path(dir_okay=False), default=None,
              help=".npy of embeddings (same recogniser) that identities must not match, e.g. the training set")
@click.option("--leakage-threshold", type=SIMILARITY, default=None)
@click.option("--anchors", type=click.Path(dir_okay=False, exists=True), default=None,
              help="anchor file from `synthface anchors`: its cells' identities are mixes of two real faces of the "
                   "cell inverted into W (more of a rare cell's variety); no identity may match an anchor person")
@click.option("--variations", type=click.Choice(["labelled", "pca"]), default=None,
              help="how images of one identity differ: labelled nuisance directions (pose, expression, light, "
                   "glasses read by --nuisance-regressor, aimed at the reference faces' range) or principal "
                   "components of W [default: labelled when a nuisance regressor is known, else pca]")
@click.option("--nuisance-regressor", default=None,
              help="world (the demo's, default with --network world) or onnx:PATH (regressor + JSON sidecar)")
@click.option("--strength", type=NONNEGATIVE, default=None,
              help="step along the variation directions [default: 1.0 labelled (the full conditional-mean step "
                   "towards a reference face's values), 0.5 pca]")
@click.option("--mix-from", type=NONNEG_INT, default=None,
              help="style-mix layers from this w index on (default: 60% of them)")
@click.option("--refine-steps", type=NONNEG_INT, default=0, show_default=True,
              help="labelled variations: gradient steps through the generator toward each image's target pose / "
                   "expression / light, keeping the identity (needs a recogniser torch can differentiate: world, "
                   "torch:PATH or arcface:PATH); 0: the linear step only")
@click.option("--refine-identity-target", type=FiniteFloat(0, 1, min_open=True), default=None,
              help="with --refine-steps: the identity term stops pulling once an image's cosine to its identity's "
                   "reference reaches this (e.g. the real data's median genuine similarity) [default: 1, it "
                   "always pulls]")
@click.option("--accept-confidence", type=FiniteFloat(0, 1, min_open=True), default=None)
@click.option("--trunc", "truncation", type=FINITE, default=1.0, show_default=True)
@click.option("--identity-budget", type=FiniteFloat(min=1.0), default=50.0, show_default=True,
              help="candidates per wanted identity")
@click.option("--capacity-candidates", type=click.IntRange(min=0), default=200, show_default=True,
              help="from 50 identities per cell on, estimate the capacity from this many candidates per cell first "
                   "and refuse a request clearly out of reach (0: skip)")
@click.option("--variation-budget", type=POSITIVE_INT, default=20, show_default=True, help="attempts per wanted image")
@click.option("--full-res", is_flag=True, help="also write the full-resolution images")
@click.option("--seed", type=SEED, default=0, show_default=True)
@click.option("--shard-index", type=NONNEG_INT, default=None, help="default: RANK or SLURM_ARRAY_TASK_ID, else 0")
@click.option("--num-shards", type=POSITIVE_INT, default=None,
              help="default: WORLD_SIZE or SLURM_ARRAY_TASK_COUNT, else 1")
@click.option("--no-merge", is_flag=True, help="do not merge even when this is the only shard")
@click.option("--ray", "ray_shards", type=click.IntRange(min=1), default=None,
              help="run this many shards on Ray actors (one GPU each if any; needs ray[data]), then merge")
@click.option("--audit", "audit_spec", default=None,
              help="recogniser that judges the merged set (" + EMBEDDER_HELP + ")")
@click.option("--rec-encoding", type=click.Choice(["jpeg444", "jpeg420", "png"]), default="jpeg444", show_default=True,
              help="images in rec/train.rec: JPEG q95 without (444) or with (420) chroma subsampling, or lossless PNG")
@click.option("--audit-fmr", type=FMR, default=1e-3, show_default=True,
              help="the audit's threshold: its false-match rate on the reference faces")
@click.option("--audit-quantile", type=FRACTION, default=None,
              help="fallback: the audit's impostor quantile on random generated faces instead")
@click.option("--batch", "batch_size", type=click.IntRange(min=1), default=64, show_default=True)
@click.option("--device", type=DEVICE, default="auto", show_default=True)
def generate(network, model_path, cells, ids_per_cell, images_per_id, out, labellers, schema, recognizer, align,
             separation, separation_fmr, separation_quantile, consistency, consistency_fmr, reference_embeddings,
             reference_images, leakage_gallery, leakage_threshold, anchors, variations, nuisance_regressor, strength, mix_from,
             refine_steps, refine_identity_target, accept_confidence, truncation,
             identity_budget, capacity_candidates, variation_budget, full_res, seed, shard_index, num_shards,
             no_merge, ray_shards, audit_spec, rec_encoding, audit_fmr, audit_quantile, batch_size, device):
    """Write N distinct identities x K varied images per cell (resumable, shardable)."""
    from ..dataset import DatasetConfig, run_generate

    cfg = DatasetConfig(cells=cells, ids_per_cell=ids_per_cell, images_per_id=images_per_id, seed=seed,
                        separation=separation, separation_quantile=separation_quantile, separation_fmr=separation_fmr,
                        consistency=consistency, consistency_fmr=consistency_fmr,
                        reference=_reference(reference_embeddings, reference_images),
                        strength=strength, mix_from=mix_from, accept_confidence=accept_confidence,
                        variations=variations, nuisance_regressor=nuisance_regressor, refine_steps=refine_steps,
                        refine_identity_target=refine_identity_target, truncation=truncation,
                        identity_budget=identity_budget, variation_budget=variation_budget,
                        full_res=full_res, leakage_threshold=leakage_threshold, anchors=anchors,
                        batch_size=batch_size)
    res = _run(run_generate, network, model_path, out, cfg, labellers, schema, recognizer, align,
               shard_index=shard_index, num_shards=num_shards, merge_after=not no_merge, ray_shards=ray_shards,
               audit=audit_spec, audit_quantile=audit_quantile, audit_fmr=audit_fmr, leakage_gallery=leakage_gallery,
               device=device, capacity_candidates=capacity_candidates, rec_encoding=rec_encoding,
               log=lambda m: click.echo(m, err=True))
    if "ray" in res:
        click.echo(f"ray: {len(res['ray'])} shards finished", err=True)
    else:
        g = res["generate"]
        click.echo(f"shard {res['shard_index']}/{res['num_shards']}: {g['this_shard']} identities "
                   f"({g['written_now']} written now)", err=True)
    if res["merged"] is not None:
        _print_summary(res["merged"], out)
    else:
        click.echo("when every shard has finished: synthface merge --out " + str(out), err=True)


@click.command()
@click.option("--network", required=True, help="Generator file, or 'world' for the demo world's.")
@click.option("--model", "model_path", required=True, type=click.Path(exists=True, dir_okay=False),
              help="latent model (.synthface): it names the cells")
@click.option("--cells", type=CELLS, default="all", show_default=True, help="cells to anchor, as `generate --cells`")
@click.option("--images", type=click.Path(file_okay=False, exists=True), default=None,
              help="folder of real faces aligned as the generator's (FFHQ-aligned, square); each is kept when "
                   "--labeller puts it in a requested cell at --confidence")
@click.option("--world-per-cell", type=click.IntRange(min=2), default=None,
              help="demo world (--network world): this many renderer people per cell, from an identity range "
                   "nothing else uses")
@click.option("--labeller", "labellers", multiple=True, default=["world"], show_default=True, help=LABELLER_HELP)
@click.option("--schema", default=None, help=SCHEMA_HELP)
@click.option("--confidence", type=FiniteFloat(0, 1, min_open=True), default=0.99, show_default=True)
@click.option("--recognizer", default="world", show_default=True,
              help="identity term of the inversion (world, torch:PATH or arcface:PATH: one torch can differentiate)")
@click.option("--steps", type=click.IntRange(min=1), default=150, show_default=True, help="Adam steps per face")
@click.option("--label-weight", type=FiniteFloat(0, None), default=1.0, show_default=True,
              help="weight of the inversion's label term (the --labeller's doubt that a face is in its cell; it "
                   "needs an ONNX labeller); 0: pixels and identity only")
@click.option("--batch", "batch_size", type=click.IntRange(min=1), default=100, show_default=True,
              help="faces inverted at once (lower it for large generators: each step runs G forward and backward)")
@click.option("--tune-steps", type=click.IntRange(min=0), default=0, show_default=True,
              help="then tune the generator's synthesis this many steps so it draws the anchor faces at their w "
                   "(pivotal tuning, other faces kept); 0: no tuning. Writes --tuned-network")
@click.option("--tune-locality", type=FiniteFloat(0, None), default=10.0, show_default=True,
              help="weight of the tuning's locality term (keeps other faces as the generator drew them); lower "
                   "reproduces the anchors more closely and changes other faces more")
@click.option("--tuned-network", type=click.Path(dir_okay=False), default=None,
              help="where the tuned generator goes (default: OUT with .generator.safetensors); generate with it as "
                   "--network")
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="anchor file (.npz) to write")
@click.option("--device", type=DEVICE, default="auto", show_default=True)
def anchors(network, model_path, cells, images, world_per_cell, labellers, schema, confidence, recognizer, steps,
            label_weight, batch_size, tune_steps, tune_locality, tuned_network, out, device):
    """Invert real faces of each cell into W: anchors that `generate --anchors` draws new identities between."""
    _run(_anchors, network, model_path, cells, images, world_per_cell, labellers, schema, confidence, recognizer,
         steps, label_weight, batch_size, out, device, tune_steps, tuned_network, tune_locality)


def _anchors(network, model_path, cells, images, world_per_cell, labellers, schema, confidence, recognizer, steps,
             label_weight, batch_size, out, device, tune_steps=0, tuned_network=None, tune_locality=10.0):
    from ..errors import SynthfaceError
    from ..identity import load_embedder
    from ..identity.refine import differentiable_twin
    from ..latent import DemographicLatentModel, parse_cells
    from ..labelling import load_labeller
    from ..latent.anchors import LabelTerm, build_anchors, faces_by_cell
    from ..latent.cells import spec_name

    if (images is None) == (world_per_cell is None):
        raise SynthfaceError("give the anchor faces: --images DIR (real faces) or --world-per-cell N (the demo world)")
    if world_per_cell is not None and str(network) != "world":
        raise SynthfaceError("--world-per-cell draws the demo world's renderer people: use it with --network world, "
                             "or give real faces with --images DIR")
    if tuned_network is not None and not tune_steps:
        raise SynthfaceError("--tuned-network names where a tuned generator goes: give --tune-steps N (> 0) too")
    if tune_steps and tuned_network is None:
        tuned_network = str(Path(out).with_suffix(".generator.safetensors"))
    model = DemographicLatentModel.load(model_path)
    specs = parse_cells(cells, model.schema_, model.attributes_)
    G, dev = load_network(network, device)
    twin = differentiable_twin(load_embedder(recognizer, str(dev)), str(dev))
    log = lambda m: click.echo(m, err=True)  # noqa: E731
    if world_per_cell is not None:
        from ..world.reference import renderer_anchor_faces
        faces, names = renderer_anchor_faces([spec_name(s) for s in specs], world_per_cell, G.img_resolution)
        source = f"demo-world renderer people, {world_per_cell} per cell (identities 9000000+)"
    labeller = load_labeller(labellers, schema, device=str(dev))
    if images is not None:
        from ..train.stylegan2 import load_image_folder
        allf = load_image_folder(images, G.img_resolution, log).permute(0, 2, 3, 1).numpy()
        faces, names = faces_by_cell(allf, model, labeller, specs, confidence)
        source = f"{len(faces)} of {len(allf)} faces of {images} (labelled at {confidence})"
    term = LabelTerm(labeller, names, model.schema_, label_weight, confidence) if label_weight > 0 else None
    if term is not None:
        source += f"; label term weight {label_weight:g}"
    counts = build_anchors(G, faces, names, twin, out, source, steps=steps, batch=batch_size, log=log,
                           cell_loss=term, tune_steps=tune_steps, tuned_network=tuned_network,
                           network_name=str(network), locality_weight=tune_locality)
    click.echo(f"{out}: " + ", ".join(f"{n} {c}" for n, c in counts.items()) + " anchors", err=True)
    if tune_steps:
        click.echo(f"{tuned_network}: the generator tuned on them; generate with --network {tuned_network} "
                   f"--anchors {out}", err=True)


def _reference(embeddings, images):
    if embeddings and images:
        raise click.UsageError("give --reference-embeddings or --reference-images, not both")
    return embeddings or images


@click.command("merge")
@click.option("--out", required=True, type=click.Path(file_okay=False))
@click.option("--audit", "audit_spec", default=None, help="recogniser that judges the set (" + EMBEDDER_HELP + ")")
@click.option("--audit-threshold", type=SIMILARITY, default=None, help="its threshold, given (default: at --audit-fmr)")
@click.option("--audit-fmr", type=FMR, default=1e-3, show_default=True,
              help="the audit's threshold: its false-match rate on the dataset's reference faces (or --reference-*)")
@click.option("--audit-quantile", type=FRACTION, default=None,
              help="fallback: its impostor quantile on random generated faces (needs --network)")
@click.option("--reference-embeddings", type=click.Path(dir_okay=False), default=None)
@click.option("--reference-images", type=click.Path(file_okay=False), default=None)
@click.option("--network", default=None, help="generator, for --audit-quantile")
@click.option("--rec-encoding", type=click.Choice(["jpeg444", "jpeg420", "png"]), default="jpeg444", show_default=True,
              help="images in rec/train.rec: JPEG q95 without (444) or with (420) chroma subsampling, or lossless PNG")
@click.option("--device", type=DEVICE, default="auto", show_default=True)
def merge_cmd(out, audit_spec, audit_threshold, audit_fmr, audit_quantile, reference_embeddings, reference_images,
              network, rec_encoding, device):
    """Validate a (sharded) dataset; write manifest, RecordIO, HF metadata, pairs, metrics and card."""
    from ..dataset import run_merge

    _print_summary(_run(run_merge, out, audit_spec, audit_threshold, audit_quantile, network, device, audit_fmr,
                        _reference(reference_embeddings, reference_images), rec_encoding=rec_encoding,
                        log=lambda m: click.echo(m, err=True)),
                   out)


def _print_summary(metrics: dict, out) -> None:
    click.echo("cell                                   candidates  label-rej  too-similar  accepted/cand", err=True)
    for c, st in metrics["identity_selection"].items():
        click.echo(f"{c:<38} {st['candidates']:>10} {st['rejected_label']:>10} {st['rejected_separation']:>12} "
                   f"{100 * st['acceptance_rate']:>12.1f}%", err=True)
    if "audit" in metrics:
        a = metrics["audit"]
        click.echo(f"audit @ {a['threshold']:.3f}: cross-identity image pairs below {100 * a['cross_identity_image_pairs_below_threshold']:.2f}%, "
                   f"C_intra {a['C_intra']:.3f}, U_class {a['U_class']:.3f}", err=True)
    click.echo(f"wrote {Path(out) / 'README.md'}", err=True)
