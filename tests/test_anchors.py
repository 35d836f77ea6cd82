"""Anchored cells (latent.anchors): real faces inverted into W, identities drawn as mixes of two anchors."""

import numpy as np
import pytest
import torch

from synthface.errors import SynthfaceError
from synthface.generator import load_generator
from synthface.generator.synthesis import generator_hash, prior_latents, synthesize
from synthface.identity import load_embedder, select_identities
from synthface.labelling import load_labeller
from synthface.latent import parse_cells
from synthface.latent.anchors import (MIX_HIGH, MIX_LOW, anchor_mix, anchors_by_cell, invert_images, load_anchors,
                                      save_anchors)
from synthface.world.assets import generator_path

G2F = "group=group2,gender=female"
G3M = "group=group3,gender=male"


def _on_a_segment(w, W, lo=MIX_LOW, hi=MIX_HIGH, tol=1e-4):
    """Whether w = t W[a] + (1 - t) W[b] for two different rows a, b and t in [lo, hi]."""
    for a in range(len(W)):
        for b in range(len(W)):
            if a == b:
                continue
            d = W[a] - W[b]
            t = float((w - W[b]) @ d / (d @ d))
            if lo - 1e-6 <= t <= hi + 1e-6 and np.abs(t * W[a] + (1 - t) * W[b] - w).max() < tol:
                return True
    return False


def test_anchor_mix_lies_between_two_different_anchors_and_is_seeded():
    W = np.random.default_rng(0).normal(size=(5, 8)).astype(np.float32)
    mixes = [anchor_mix(W, np.random.default_rng(s)) for s in range(20)]
    assert all(_on_a_segment(m, W) for m in mixes)
    assert not any((np.abs(W - m).max(1) < 1e-3).any() for m in mixes)  # never an anchor itself
    assert np.array_equal(anchor_mix(W, np.random.default_rng(3)), mixes[3])


def test_anchor_file_round_trip_and_clear_errors(tmp_path):
    G = load_generator(generator_path())
    imgs = synthesize(G, prior_latents(G, [1, 2, 3], 1.0))
    W = np.arange(3 * G.w_dim, dtype=np.float32).reshape(3, -1)
    path = save_anchors(tmp_path / "a.npz", W, [G2F, G2F, G3M], imgs, generator_hash(G), "test faces")
    a = load_anchors(path, G)
    assert np.array_equal(a["w"], W) and a["cell"].tolist() == [G2F, G2F, G3M] and a["crops"].shape == (3, 112, 112, 3)
    assert a["source"] == "test faces"
    with pytest.raises(SynthfaceError, match="a mix needs at least 2"):
        anchors_by_cell(a, [G2F, G3M])
    assert list(anchors_by_cell(a, [G2F, "group=group1,gender=male"])) == [G2F]
    save_anchors(tmp_path / "other.npz", W, [G2F] * 3, imgs, "0123456789abcdef", "x")
    with pytest.raises(SynthfaceError, match="another generator"):
        load_anchors(tmp_path / "other.npz", G)
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(SynthfaceError, match="not an anchor file"):
        load_anchors(tmp_path / "junk.npz")


def test_inversion_brings_a_generated_face_back():
    from synthface.identity.torch_embedder import TorchBackboneEmbedder
    torch.manual_seed(0)
    G = load_generator(generator_path())
    w_true = prior_latents(G, [424242, 515151], 1.0)
    target = synthesize(G, w_true)
    before = [p.requires_grad for p in G.parameters()]
    W = invert_images(G, target, TorchBackboneEmbedder("world-recognizer"), steps=40)
    err = np.abs(synthesize(G, W).astype(float) - target).mean()
    start = np.abs(synthesize(G, prior_latents(G, list(range(1000, 3000)), 1.0)).astype(float)[None]
                   - target[:, None]).mean((2, 3, 4)).min(1).mean()
    assert err < 0.6 * start, (err, start)       # much closer than the closest prior face it started from
    assert [p.requires_grad for p in G.parameters()] == before  # the generator is left as it was


def test_anchored_cell_draws_between_its_anchors_and_other_cells_are_unchanged(demo_latent_model):
    model = demo_latent_model[0]
    G = load_generator(generator_path())
    specs = parse_cells(f"{G2F};{G3M}", model.schema_, model.attributes_)
    lab, emb = load_labeller("world"), load_embedder("world")
    kw = dict(separation=0.5, seed=3, accept_confidence=0.9, progress=False)
    # anchors: latents of confidently labelled faces of the cell (stand-ins for inverted real faces)
    pool = prior_latents(G, list(range(5000, 5400)), 1.0)
    from synthface.latent.cells import label_cells, matches
    idx, conf = label_cells(lab.predict_proba(synthesize(G, pool)), model.attributes_, 0.9)
    W_a = pool[matches(idx, conf, specs[0], model.schema_, model.attributes_)][:6]
    assert len(W_a) == 6
    plain = select_identities(model, G, lab, emb, specs, 2, **kw)
    anchored = select_identities(model, G, lab, emb, specs, 2, anchors={G2F: W_a}, **kw)
    in_a = anchored.cell == anchored.cells.index(G2F)
    assert all(_on_a_segment(w, W_a, tol=1e-3) for w in anchored.w[in_a])
    other = plain.cell == plain.cells.index(G3M)
    assert np.allclose(anchored.w[~in_a], plain.w[other], atol=1e-5)
    assert np.array_equal(anchored.candidate[~in_a], plain.candidate[other])


def test_generate_with_anchors_refuses_matches_of_anchor_people(tmp_path, demo_latent_model):
    """The anchor faces join the leakage gallery: at a threshold nothing passes, the anchored cell fails with a
    hint about anchors, and a file for none of the requested cells is refused before anything is written."""
    from synthface.dataset import DatasetConfig, generate_dataset
    model, _, _ = demo_latent_model
    G = load_generator(generator_path())
    pool = prior_latents(G, list(range(7000, 7006)), 1.0)
    path = save_anchors(tmp_path / "a.npz", pool, [G2F] * 6, synthesize(G, pool), generator_hash(G), "test")
    lab, emb = load_labeller("world"), load_embedder("world")
    cfg = DatasetConfig(cells=G2F, ids_per_cell=1, images_per_id=1, separation=0.5, consistency=0.3,
                        accept_confidence=0.5, anchors=str(path), leakage_threshold=-1.0, identity_budget=3)
    with pytest.raises(SynthfaceError, match="more anchor faces"):
        generate_dataset(model, G, lab, emb, tmp_path / "ds", cfg, progress=False, log=lambda m: None)
    cfg2 = DatasetConfig(cells=G3M, ids_per_cell=1, images_per_id=1, separation=0.5, anchors=str(path))
    with pytest.raises(SynthfaceError, match="none of the requested ones"):
        generate_dataset(model, G, lab, emb, tmp_path / "ds2", cfg2, progress=False, log=lambda m: None)
    assert not (tmp_path / "ds2").exists()


def test_labeller_torch_twin_and_label_term():
    from synthface.latent.anchors import LabelTerm
    lab = load_labeller("world")
    net = lab.labellers[0]
    G = load_generator(generator_path())
    imgs = synthesize(G, prior_latents(G, list(range(40)), 1.0))
    x = torch.as_tensor(imgs).permute(0, 3, 1, 2).float()
    assert np.abs(net.logits_tensor(x).detach().numpy() - net.logits(imgs)).max() < 1e-3  # same graph, torch ops
    p = lab.predict_proba(imgs)
    schema = {"group": ["group1", "group2", "group3"], "gender": ["female", "male"]}
    own = [f"group={schema['group'][g]},gender={schema['gender'][s]}"
           for g, s in zip(p["group"].argmax(1), p["gender"].argmax(1))]
    sure = (p["group"].max(1) >= 0.99) & (p["gender"].max(1) >= 0.99)
    assert 0 < sure.sum() < len(sure)
    v = LabelTerm(lab, own, schema, confidence=0.99)(x, slice(0, len(x))).detach().numpy()
    assert (v[sure] == 0).all() and (v[~sure] > 0).all()  # nothing pushes a face the labeller is sure of
    flipped = [c.replace("female", "M").replace("male", "female").replace("M", "male") for c in own]
    x.requires_grad_(True)
    v_wrong = LabelTerm(lab, flipped, schema, weight=2.0)(x, slice(0, len(x)))
    assert (v_wrong[torch.as_tensor(sure)] > 2 * np.log(99)).all()   # the other gender, confidently: a large pull
    v_wrong.sum().backward()
    assert x.grad.abs().sum() > 0
    with pytest.raises(SynthfaceError, match="no gender class"):
        LabelTerm(lab, ["group=group1,gender=other"], schema)
    with pytest.raises(SynthfaceError, match="no 'age' head"):
        LabelTerm(lab, ["group=group1,gender=female"], {"age": ["young", "old"]})


def test_inversion_hands_each_batch_its_own_rows_to_the_cell_loss():
    from synthface.identity.torch_embedder import TorchBackboneEmbedder
    G = load_generator(generator_path())
    target = synthesize(G, prior_latents(G, [7, 8, 9], 1.0))
    seen = []

    def cell_loss(img, rows):
        seen.append((rows.start, rows.stop, len(img)))
        return img.new_zeros(len(img))

    invert_images(G, target, TorchBackboneEmbedder("world-recognizer"), steps=2, batch=2, cell_loss=cell_loss)
    assert seen == [(0, 2, 2), (0, 2, 2), (2, 3, 1), (2, 3, 1)]


def test_anchors_command_writes_a_file_with_its_label_term_and_refuses_a_bad_weight(tmp_path, demo_latent_model):
    from click.testing import CliRunner

    from synthface.cli import main
    _, _, model_path = demo_latent_model
    base = ["anchors", "--network", "world", "--model", str(model_path), "--cells", G2F, "--world-per-cell", "2",
            "--steps", "2"]
    r = CliRunner().invoke(main, base + ["--out", str(tmp_path / "a.npz")])
    assert r.exit_code == 0, r.output
    a = load_anchors(tmp_path / "a.npz", load_generator(generator_path()))
    assert a["w"].shape[0] == 2 and a["cell"].tolist() == [G2F, G2F] and "label term weight 1" in a["source"]
    r = CliRunner().invoke(main, base + ["--label-weight", "0", "--out", str(tmp_path / "b.npz")])
    assert r.exit_code == 0 and "label term" not in load_anchors(tmp_path / "b.npz")["source"]
    r = CliRunner().invoke(main, base + ["--label-weight", "nan", "--out", str(tmp_path / "c.npz")])
    assert r.exit_code == 2 and "not a finite number" in r.output and not (tmp_path / "c.npz").exists()


def test_label_term_refuses_a_labeller_that_is_not_a_softmax():
    from synthface.latent.anchors import LabelTerm

    class Sigmoid:
        path, activation = "multi_label.onnx", "sigmoid"
        attributes = {"gender": (["female", "male"], (0, 2))}

        def logits_tensor(self, x):
            return x

    with pytest.raises(SynthfaceError, match="uses sigmoid; use --label-weight 0"):
        LabelTerm(Sigmoid(), [G2F], {"gender": ["female", "male"]})


def _tuning_case(n=3, invert_steps=15):
    """Three renderer group2 women, inverted into the demo generator (few steps), for the tuning tests."""
    from synthface.identity.torch_embedder import TorchBackboneEmbedder
    from synthface.world.reference import renderer_anchor_faces
    torch.manual_seed(0)
    G = load_generator(generator_path())
    faces, _ = renderer_anchor_faces([G2F], n, G.img_resolution)
    twin = TorchBackboneEmbedder("world-recognizer")
    return G, faces, twin, invert_images(G, faces, twin, steps=invert_steps)


def test_tuned_generator_draws_the_anchors_closer_and_keeps_other_faces():
    from synthface.latent.anchors import tune_generator
    G, faces, twin, W = _tuning_case()
    base = generator_hash(G)
    Gt = tune_generator(G, W, faces, twin, steps=40, batch=3)
    assert generator_hash(G) == base                       # the original is left as it was
    assert all(torch.equal(a, b) for a, b in zip(Gt.mapping.parameters(), G.mapping.parameters()))
    before = np.abs(synthesize(G, W).astype(float) - faces).mean()
    after = np.abs(synthesize(Gt, W).astype(float) - faces).mean()
    assert after < 0.85 * before, (after, before)          # the anchors' faces are drawn more closely
    other = prior_latents(G, list(range(90_000, 90_016)), 1.0)  # not among the locality term's latents
    change = np.abs(synthesize(Gt, other).astype(float) - synthesize(G, other)).mean()
    assert change < 0.5 * (before - after) + 2.0, (change, before - after)  # other faces move far less


def test_tuned_generator_file_is_accepted_by_its_latent_model_and_anchors(tmp_path, demo_latent_model):
    from synthface.generator.checkpoint import describe, save_generator
    from synthface.latent.sampling import check_generator
    model = demo_latent_model[0]
    G = load_generator(generator_path())
    assert G.tuned_from == ""
    import copy
    Gt = copy.deepcopy(G)
    with torch.no_grad():
        next(Gt.synthesis.parameters()).add_(0.01)
    save_generator(Gt, tmp_path / "t.safetensors", extra_metadata={"tuned_from": generator_hash(G)})
    Gl = load_generator(tmp_path / "t.safetensors")
    assert Gl.tuned_from == generator_hash(G) and generator_hash(Gl) != generator_hash(G)
    assert describe(tmp_path / "t.safetensors")["tuned_from"] == generator_hash(G)
    check_generator(model, Gl)                             # the model fitted on G applies to its tuned copy
    save_generator(Gt, tmp_path / "u.safetensors", extra_metadata={"tuned_from": "0123"})
    with pytest.raises(SynthfaceError, match="different generator"):
        check_generator(model, load_generator(tmp_path / "u.safetensors"))
    imgs = synthesize(G, prior_latents(G, [1, 2], 1.0))
    save_anchors(tmp_path / "a.npz", prior_latents(G, [1, 2], 1.0), [G2F] * 2, imgs, generator_hash(Gl), "x",
                 tuned_from=generator_hash(G), tuned_network=str(tmp_path / "t.safetensors"))
    assert load_anchors(tmp_path / "a.npz", Gl)["tuned_network"] == str(tmp_path / "t.safetensors")
    with pytest.raises(SynthfaceError, match="pass that file as --network"):
        load_anchors(tmp_path / "a.npz", G)


def test_anchors_command_tunes_and_generate_uses_the_tuned_generator(tmp_path, demo_latent_model):
    from click.testing import CliRunner

    from synthface.cli import main
    _, _, model_path = demo_latent_model
    # group3/male: the demo generator's commonest cell, so a few steps give anchors whose mixes stay in it
    base = ["anchors", "--network", "world", "--model", str(model_path), "--cells", G3M, "--world-per-cell", "3",
            "--steps", "2"]
    r = CliRunner().invoke(main, base + ["--tuned-network", str(tmp_path / "x.safetensors"),
                                         "--out", str(tmp_path / "x.npz")])
    assert r.exit_code == 1 and "give --tune-steps" in r.output and not (tmp_path / "x.npz").exists()
    r = CliRunner().invoke(main, base + ["--tune-steps", "3", "--out", str(tmp_path / "a.npz")])
    assert r.exit_code == 0, r.output
    tuned = tmp_path / "a.generator.safetensors"
    Gt = load_generator(tuned)
    assert Gt.tuned_from == generator_hash(load_generator(generator_path()))
    from synthface.generator import base_network
    assert base_network(tuned) == "world"                  # so generate keeps the demo world's defaults for it
    assert base_network(tmp_path / "a.npz") == str(tmp_path / "a.npz")
    a = load_anchors(tmp_path / "a.npz", Gt)
    assert a["tuned_network"] == str(tuned) and len(a["w"]) == 3
    gen = ["generate", "--model", str(model_path), "--cells", G3M, "--ids-per-cell", "1", "--images-per-id", "1",
           "--anchors", str(tmp_path / "a.npz"), "--separation", "0.5", "--accept-confidence", "0.5",
           "--leakage-threshold", "0.99"]
    r = CliRunner().invoke(main, gen + ["--network", "world", "--out", str(tmp_path / "ds0")])
    assert r.exit_code == 1 and "pass that file as --network" in r.output
    r = CliRunner().invoke(main, gen + ["--network", str(tuned), "--out", str(tmp_path / "ds")])
    assert r.exit_code == 0, r.output
    assert len(list((tmp_path / "ds").rglob("*.png"))) >= 1
