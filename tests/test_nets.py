"""synthface.nets: arcface_torch-compatible backbones, their loading and saving, and the demo
world's nets recovered from the shipped ONNX files."""

import importlib.util
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from synthface import SynthfaceError
from synthface.nets import (ARCHS, WORLD_MODELS, build_backbone, infer_arch, load_backbone, load_world_model,
                            save_backbone)

ROOT = Path(__file__).resolve().parents[1]
ASSETS = ROOT / "synthface" / "world" / "assets"


def _x(n=2, size=112, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(n, 3, size, size, generator=g) * 255 - 127.5) / 127.5


@pytest.fixture(scope="module")
def mbf_state():
    """A small arcface_torch architecture with non-trivial BN statistics."""
    torch.manual_seed(0)
    net = build_backbone("mbf", embedding_dim=128)
    with torch.no_grad():
        for name, b in net.named_buffers():
            if name.endswith("running_var"):
                b.uniform_(0.5, 2.0)
    return net.state_dict()


def test_iresnet_r18_has_arcface_torch_names_and_shapes():
    with torch.device("meta"):  # names and shapes only: skip the weight initialisation
        sd = build_backbone("r18").state_dict()
    # counted from arcface_torch's iresnet18: 187 tensors, parameters and BN buffers
    assert len(sd) == 187
    expected = {"conv1.weight": (64, 3, 3, 3), "prelu.weight": (64,), "layer1.0.bn1.weight": (64,),
                "layer1.0.downsample.0.weight": (64, 64, 1, 1), "layer2.0.conv2.weight": (128, 128, 3, 3),
                "layer2.1.prelu.weight": (128,), "layer4.1.bn3.running_var": (512,),
                "bn2.num_batches_tracked": (), "fc.weight": (512, 512 * 7 * 7), "features.running_mean": (512,)}
    for k, shape in expected.items():
        assert tuple(sd[k].shape) == shape, k
    assert "layer1.1.downsample.0.weight" not in sd  # only a stage's first block changes shape
    with torch.device("meta"):
        net = build_backbone("r18", embedding_dim=128)
    assert not net.features.weight.requires_grad  # arcface_torch freezes the embedding BN's scale
    assert net.fc.weight.shape == (128, 512 * 7 * 7)


def test_mobilefacenet_has_arcface_torch_names_and_shapes():
    with torch.device("meta"):
        sd = build_backbone("mbf").state_dict()
    assert len(sd) == 333
    expected = {"layers.0.layers.0.weight": (128, 3, 3, 3), "layers.1.layers.0.weight": (128, 2, 3, 3),
                "layers.2.layers.1.layers.0.weight": (128, 1, 3, 3), "layers.3.layers.3.layers.2.layers.1.bias": (128,),
                "layers.4.layers.2.layers.0.weight": (256, 256, 1, 1), "conv_sep.layers.2.weight": (512,),
                "features.layers.0.layers.0.weight": (512, 1, 7, 7), "features.layers.2.weight": (512, 512),
                "features.layers.3.running_var": (512,)}
    for k, shape in expected.items():
        assert tuple(sd[k].shape) == shape, k
    assert "features.layers.2.bias" not in sd


@pytest.mark.parametrize("arch", ["r18", "r34", "r50", "r100", "r200", "mbf", "mbf_large"])
def test_arch_is_inferred_from_the_tensors(arch):
    with torch.device("meta"):
        net = build_backbone(arch, embedding_dim=256)
    assert infer_arch(net.state_dict()) == (arch, {"embedding_dim": 256})


def _same_tensors(net, state):
    got = net.state_dict()
    assert got.keys() == state.keys()
    for k, v in state.items():
        assert torch.equal(got[k], v), k


def test_load_arcface_style_pt(tmp_path, mbf_state):
    net = build_backbone("mbf", embedding_dim=128)
    net.load_state_dict(mbf_state)
    net.eval()
    # DistributedDataParallel's prefix is stripped
    torch.save({f"module.{k}": v for k, v in mbf_state.items()}, tmp_path / "model.pt")
    loaded = load_backbone(tmp_path / "model.pt")
    assert not loaded.training and loaded.synthface_meta["arch"] == "mbf"
    assert loaded.synthface_meta["embedding_dim"] == 128
    _same_tensors(loaded, mbf_state)
    x = _x(2)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), net(x), rtol=0, atol=0)
    # arcface_torch's checkpoint_gpu_0.pt keeps the backbone under state_dict_backbone
    torch.save({"state_dict_backbone": mbf_state, "epoch": torch.tensor(3)}, tmp_path / "ckpt.pth")
    _same_tensors(load_backbone(tmp_path / "ckpt.pth"), mbf_state)


def test_missing_or_unexpected_tensor_is_named(tmp_path, mbf_state):
    sd = mbf_state
    missing = {k: v for k, v in sd.items() if k != "layers.3.layers.1.layers.1.layers.1.running_mean"}
    torch.save(missing, tmp_path / "missing.pt")
    with pytest.raises(SynthfaceError, match=r"missing tensor 'layers.3.layers.1.layers.1.layers.1.running_mean'"):
        load_backbone(tmp_path / "missing.pt")
    torch.save({**sd, "head.weight": torch.zeros(3)}, tmp_path / "extra.pt")
    with pytest.raises(SynthfaceError, match=r"unexpected tensor 'head.weight'"):
        load_backbone(tmp_path / "extra.pt")
    torch.save(sd, tmp_path / "mbf.pt")
    with pytest.raises(SynthfaceError, match=r"does not fit r18: missing tensor 'conv1.weight'"):
        load_backbone(tmp_path / "mbf.pt", arch="r18")
    bad = dict(sd, **{"conv_sep.layers.0.weight": torch.zeros(512, 100, 1, 1)})
    torch.save(bad, tmp_path / "shape.pt")
    with pytest.raises(SynthfaceError, match=r"'conv_sep.layers.0.weight' has shape \(512, 100, 1, 1\)"):
        load_backbone(tmp_path / "shape.pt")
    torch.save({"conv.weight": torch.zeros(1)}, tmp_path / "unknown.pt")
    with pytest.raises(SynthfaceError, match="cannot tell the architecture"):
        load_backbone(tmp_path / "unknown.pt")


def test_pt_that_is_not_a_plain_state_dict_is_refused(tmp_path):
    torch.manual_seed(0)
    torch.save({"weights": [1, 2, 3]}, tmp_path / "list.pt")
    with pytest.raises(SynthfaceError, match="state dict of tensors"):
        load_backbone(tmp_path / "list.pt")
    torch.save(build_backbone("mbf"), tmp_path / "module.pt")  # a pickled module: weights_only refuses it
    with pytest.raises(SynthfaceError, match="plain tensor state dict"):
        load_backbone(tmp_path / "module.pt")
    with pytest.raises(SynthfaceError, match="does not exist"):
        load_backbone(tmp_path / "nothing.pt")


def test_save_and_load_safetensors(tmp_path):
    torch.manual_seed(1)
    net = build_backbone("mbf", embedding_dim=128).eval()
    path = save_backbone(net, "mbf", tmp_path / "backbone.safetensors", data="test")
    side = json.loads((tmp_path / "backbone.json").read_text())
    assert side["arch"] == "mbf" and side["embedding_dim"] == 128 and side["format_version"] == 1
    assert side["input"]["size"] == 112 and side["input"]["mean"] == 127.5 and side["data"] == "test"
    loaded = load_backbone(path)
    _same_tensors(loaded, net.state_dict())
    x = _x(1)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), net(x), rtol=0, atol=0)
    # without the sidecar the architecture comes from the tensors
    (tmp_path / "backbone.json").unlink()
    assert load_backbone(path).synthface_meta["arch"] == "mbf"
    (tmp_path / "backbone.json").write_text(json.dumps({**side, "format_version": 99}))
    with pytest.raises(SynthfaceError, match="version"):
        load_backbone(path)
    with pytest.raises(SynthfaceError, match="unknown backbone"):
        build_backbone("r42")


def test_world_nets_moved_without_breaking_world_models():
    from synthface.nets import world_nets
    from synthface.world import models

    assert models.Recogniser is world_nets.Recogniser and models.backbone is world_nets.backbone
    assert set(ARCHS) >= {"r18", "r34", "r50", "r100", "r200", "mbf", "world-recognizer", "world-attributes"}


@pytest.fixture(scope="module")
def faces():
    from synthface.world import BALANCED, World

    world = World(seed=0, distribution=BALANCED)
    ident = world.identities(list(range(960_000, 960_016)))
    return world.render(ident, np.arange(16) % 3, 64)


ONNX_OF = {"world-recognizer": "pack/recognition.onnx", "world-audit-recognizer": "audit/recognition.onnx",
           "world-attributes": "attributes.onnx", "world-audit-attributes": "audit/attributes.onnx",
           "world-genderage": "pack/genderage.onnx"}


@pytest.mark.parametrize("name", list(WORLD_MODELS))
def test_world_model_equals_its_onnx(name, faces):
    import onnxruntime as ort

    from synthface.world.models import crop_batch

    net = load_world_model(name)
    inp = net.synthface_meta["input"]
    x = (crop_batch(faces, "arcface" if inp["crop"] == "ffhq_arcface" else "attribute") - inp["mean"]) / inp["std"]
    sess = ort.InferenceSession(str(ASSETS / ONNX_OF[name]), providers=["CPUExecutionProvider"])
    ref = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0]
    x.requires_grad_(True)
    out = net(x)
    rel = np.abs(out.detach().numpy() - ref).max() / np.abs(ref).max()
    assert rel <= 1e-5, rel
    # differentiable: a gradient reaches the input image
    out.square().sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_unknown_world_model():
    with pytest.raises(SynthfaceError, match="world-recognizer"):
        load_world_model("world")


ARCFACE_ROOT = os.environ.get("SYNTHFACE_ARCFACE_ROOT")


@pytest.mark.skipif(not ARCFACE_ROOT or not Path(ARCFACE_ROOT).is_dir(),
                    reason="set SYNTHFACE_ARCFACE_ROOT to a checkout of insightface (arcface_torch)")
@pytest.mark.parametrize("arch", ["r18", "mbf"])
def test_equals_arcface_torch(arch, tmp_path):
    spec = importlib.util.spec_from_file_location("compare_arcface", ROOT / "scripts" / "compare_arcface.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    row = mod.compare(mod.arcface_get_model(Path(ARCFACE_ROOT)), arch, batch=1, seed=0, workdir=tmp_path)
    assert row["inferred_arch"] == arch
    assert row["max_rel_error"] <= 1e-5
