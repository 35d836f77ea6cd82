"""Refined variations: the ONNX graph evaluated with torch ops equals onnxruntime, gradient steps through
the generator bring a face's nuisances closer to its target while the recogniser still matches it, and
settings that cannot work are refused with a hint."""

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from synthface.errors import SynthfaceError
from synthface.generator import load_generator
from synthface.generator.synthesis import prior_latents, synthesize
from synthface.identity import load_embedder
from synthface.identity.refine import Refiner, differentiable_twin, make_refiner
from synthface.labelling.nuisance import load_nuisance_regressor
from synthface.labelling.onnx_torch import OnnxAsTorch
from synthface.world import BALANCED, World
from synthface.world.assets import generator_path


def _small_cnn(path, op_extra=None):
    """Conv -> BatchNormalization -> Relu -> MaxPool -> GlobalAveragePool -> Flatten -> Gemm (+ op_extra)."""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal(s).astype(np.float32), n) for n, s in (
        ("w", (4, 3, 3, 3)), ("b", (4,)), ("g", (4,)), ("beta", (4,)), ("fc", (2, 4)), ("fcb", (2,)))]
    inits += [numpy_helper.from_array(rng.random(4).astype(np.float32) - 0.5, "mean"),
              numpy_helper.from_array(rng.random(4).astype(np.float32) + 0.5, "var")]
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1], strides=[2, 2]),
             helper.make_node("BatchNormalization", ["c", "g", "beta", "mean", "var"], ["n"], epsilon=1e-5),
             helper.make_node("Relu", ["n"], ["r"]),
             helper.make_node("MaxPool", ["r"], ["p"], kernel_shape=[2, 2], strides=[2, 2]),
             helper.make_node("GlobalAveragePool", ["p"], ["a"]),
             helper.make_node("Flatten", ["a"], ["f"], axis=1),
             helper.make_node("Gemm", ["f", "fc", "fcb"], ["y" if op_extra is None else "z"], transB=1)]
    if op_extra:
        nodes.append(helper.make_node(op_extra, ["z"], ["y"]))
    g = helper.make_graph(nodes, "t", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 3, 16, 16])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 2])], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = 8
    onnx.save(m, str(path))
    return path


def test_onnx_graph_with_torch_ops_equals_onnxruntime(tmp_path):
    import onnxruntime as ort

    path = _small_cnn(tmp_path / "cnn.onnx")
    x = np.random.default_rng(1).standard_normal((5, 3, 16, 16)).astype(np.float32)
    want = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    got = OnnxAsTorch(path)(torch.from_numpy(x)).numpy()
    assert np.abs(got - want).max() < 1e-5 and np.abs(want).max() > 0.01
    with pytest.raises(SynthfaceError, match="operators Softmax have no torch counterpart"):
        OnnxAsTorch(_small_cnn(tmp_path / "soft.onnx", "Softmax"))


def test_the_world_regressor_gives_gradients_and_onnxruntime_values():
    reg = load_nuisance_regressor("world")
    world = World(seed=0, distribution=BALANCED)
    faces = world.render(world.identities(range(12)), [0] * 12)
    x = torch.from_numpy(faces).permute(0, 3, 1, 2).float().requires_grad_(True)
    y = reg.predict_tensor(x)
    assert np.abs(y.detach().numpy() - reg.predict_matrix(faces)).max() < 1e-4
    y[:, reg.names.index("yaw")].sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


@pytest.fixture(scope="module")
def setup():
    G = load_generator(generator_path())
    reg = load_nuisance_regressor("world")
    emb = load_embedder("world")
    return G, reg, emb, differentiable_twin(emb)


def _case(G, reg, emb, seeds, people, shot):
    """Prior faces of `seeds` as per-layer latents, renderer people's nuisance values as their targets, the
    targets' spread, and the faces' reference embeddings."""
    W = prior_latents(G, list(seeds), 1.0)
    base = synthesize(G, W, "const")
    world = World(seed=0, distribution=BALANCED)
    targets = reg.predict_matrix(world.render(world.identities(people), [shot] * len(people))).astype(np.float64)
    spread = reg.predict_matrix(world.render(world.identities(range(200, 400)), [0] * 200)).std(0)
    return W, np.repeat(W[:, None], G.num_ws, 1), base, targets, spread, emb.embed(base)


def test_refinement_approaches_the_target_and_keeps_the_identity(setup):
    G, reg, emb, twin = setup
    W, ws, base, targets, spread, e_ref = _case(G, reg, emb, range(700, 706), range(100, 106), 3)
    y0 = reg.predict_matrix(base)
    used = np.ones(len(reg.names), bool)
    layers = G.num_ws * 6 // 10
    errs, cons = [], []
    for steps in (0, 10):
        r = Refiner(reg, twin, spread, used, steps=steps)
        out = np.stack([r.refine(G, ws[i:i + 1], targets[i:i + 1], e_ref[i], layers)[0] for i in range(len(W))])
        assert np.array_equal(out[:, layers:], ws[:, layers:])   # the fine (style-mixed) layers are kept
        im = synthesize(G, out, "const")
        errs.append((np.abs(reg.predict_matrix(im) - targets) / spread).mean())
        cons.append((emb.embed(im) * e_ref).sum(1))
    assert errs[0] == pytest.approx((np.abs(y0 - targets) / spread).mean(), rel=1e-4)   # 0 steps: unchanged
    assert errs[1] < 0.7 * errs[0]
    assert cons[1].min() > 0.661   # still matched at the demo's consistency threshold (FMR 1e-3)


def test_refinement_settings_that_cannot_work_are_refused(setup):
    _, _, emb, twin = setup
    assert make_refiner(0, "world", emb, None) is None
    with pytest.raises(SynthfaceError, match="refines labelled variations"):
        make_refiner(5, None, emb, None)
    assert differentiable_twin(twin) is twin

    class OtherOnnx:
        path = "/models/glint360k_r100.onnx"

    with pytest.raises(SynthfaceError, match="recogniser torch can differentiate.*torch:PATH or arcface:PATH"):
        differentiable_twin(OtherOnnx())


def test_make_variations_refines_full_steps_and_keeps_the_checks(setup, demo_latent_model):
    """Through the identity pipeline: full-strength attempts are refined (and say so), and every kept image
    still passed the label and consistency checks with the dataset's own models."""
    from synthface.identity.directions import fit_directions
    from synthface.identity.identities import make_variations
    from synthface.labelling import load_labeller
    from synthface.latent.cells import label_cells, matches

    G, reg, emb, twin = setup
    model = demo_latent_model[0]
    verifier = load_labeller("world")
    d = fit_directions(model, G, reg, n=300, seed=0, log=lambda m: None).prepare(model.A_)
    spec = {"group": "group3", "gender": "male"}
    prior = prior_latents(G, list(range(900, 940)), model.truncation_psi_)
    W, _ = model.sample(spec, 40, prior, seed=5)
    ims = synthesize(G, W, "const")
    idx, conf = label_cells(verifier.predict_proba(ims), model.attributes_, model.confidence)
    w_id = W[np.nonzero(matches(idx, conf, spec, model.schema_, model.attributes_))[0][0]]
    ref = emb.embed(synthesize(G, w_id[None], "const"))[0]
    refiner = Refiner(reg, twin, d.targets.std(0), d.used, steps=4)
    res = make_variations(model, G, verifier, emb, spec, w_id, ref, 0, 2, 0, None, None, 1.0, None, 0.661,
                          budget=8, directions=d, refiner=refiner)
    got = res["variations"]
    assert len(got) == 2
    assert all(v["refined"] == (v["strength"] == 1.0) for v in got) and any(v["refined"] for v in got)
    assert all(v["consistency"] >= 0.661 for v in got)
    imgs = np.stack([v["image"] for v in got])
    idx, conf = label_cells(verifier.predict_proba(imgs), model.attributes_, model.confidence)
    assert matches(idx, conf, spec, model.schema_, model.attributes_).all()


@pytest.mark.gpu
def test_refinement_runs_on_the_generator_device():
    """On CUDA the regressor's graph and the recogniser's twin follow the generator."""
    G = load_generator(generator_path(), device="cuda")
    reg, emb = load_nuisance_regressor("world"), load_embedder("world")
    twin = differentiable_twin(emb, "cuda")
    W = prior_latents(G, [1, 2], 1.0)
    ws = np.repeat(W[:, None], G.num_ws, 1)
    e_ref = emb.embed(synthesize(G, W, "const"))
    r = Refiner(reg, twin, np.ones(len(reg.names)), np.ones(len(reg.names), bool), steps=2)
    out = r.refine(G, ws, np.zeros((2, len(reg.names))), e_ref[0], G.num_ws // 2)
    assert out.shape == ws.shape and np.isfinite(out).all() and not np.array_equal(out, ws)


def test_identity_target_frees_images_above_it_and_needs_refinement(setup):
    """The identity term pulls only below the target cosine: at a target every image already clears, the
    result is exactly that of no identity term; at the default target (1) it differs and keeps the identity
    closer; a target without refinement steps is refused."""
    G, reg, emb, twin = setup
    W, ws, _, targets, spread, e_ref = _case(G, reg, emb, range(710, 714), range(110, 114), 5)
    used = np.ones(len(reg.names), bool)
    layers = G.num_ws * 6 // 10

    def run(**kw):
        r = Refiner(reg, twin, spread, used, steps=6, **kw)
        return np.stack([r.refine(G, ws[i:i + 1], targets[i:i + 1], e_ref[i], layers)[0] for i in range(len(W))])

    free, low, full = run(lam_id=0.0), run(id_target=-1.0), run()
    assert np.array_equal(free, low)
    assert not np.allclose(full, free)
    cos = lambda out: (emb.embed(synthesize(G, out, "const")) * e_ref).sum(1)  # noqa: E731
    assert cos(full).mean() > cos(free).mean()
    with pytest.raises(SynthfaceError, match="give --refine-steps N too"):
        make_refiner(0, "world", emb, None, id_target=0.84)
    assert make_refiner(3, "world", emb, type("D", (), {"targets": targets, "used": used})(), id_target=0.84).id_target == 0.84


def test_a_dataset_made_before_a_setting_existed_resumes_at_its_default(tmp_path):
    import json
    from dataclasses import asdict

    from synthface.dataset.writer import DatasetConfig, _check_or_write_meta
    meta = {"version": 1, "config": asdict(DatasetConfig(cells="all", ids_per_cell=2, images_per_id=2))}
    older = {**meta, "config": {k: v for k, v in meta["config"].items() if k != "refine_identity_target"}}
    (tmp_path / "dataset.json").write_text(json.dumps(older))
    _check_or_write_meta(tmp_path, meta)                       # the default: what the older version did
    changed = {**meta, "config": {**meta["config"], "refine_identity_target": 0.84}}
    with pytest.raises(SynthfaceError, match="different settings"):
        _check_or_write_meta(tmp_path, changed)
