"""Recogniser specs arcface:PATH and torch:PATH: the numpy API of every embedder, plus a torch
module gradients flow through."""

import numpy as np
import pytest
import torch

from synthface import SynthfaceError
from synthface.identity.embedders import load_embedder
from synthface.nets import build_backbone, save_backbone


@pytest.fixture(scope="module")
def faces():
    from synthface.world import BALANCED, World

    world = World(seed=0, distribution=BALANCED)
    return world.render(world.identities(list(range(970_000, 970_012))), np.arange(12) % 2, 64)


def test_torch_world_recogniser_equals_the_onnx_one(faces):
    torch_emb = load_embedder("torch:world-recognizer")
    onnx_emb = load_embedder("world")
    a, b = torch_emb.embed(faces), onnx_emb.embed(faces)
    assert a.shape == (12, 128)
    np.testing.assert_allclose(np.linalg.norm(a, axis=1), 1, atol=1e-6)
    assert np.abs(a - b).max() < 1e-5
    assert isinstance(torch_emb.module, torch.nn.Module) and not torch_emb.module.training


def test_arcface_spec_loads_a_state_dict_and_is_differentiable(tmp_path, faces):
    torch.manual_seed(0)
    net = build_backbone("mbf", embedding_dim=64).eval()
    torch.save(net.state_dict(), tmp_path / "model.pt")
    emb = load_embedder(f"arcface:{tmp_path / 'model.pt'}")
    e = emb.embed(faces[:3])
    assert e.shape == (3, 64)
    assert emb.describe()["arch"] == "mbf" and emb.describe()["kind"] == "arcface"
    # the same images through the differentiable path give the same embeddings, and a gradient
    x = torch.from_numpy(faces[:3]).permute(0, 3, 1, 2).float().requires_grad_(True)
    t = emb.embed_tensor(x)
    assert np.abs(t.detach().numpy() - e).max() < 1e-5
    (t[0] @ t[1]).backward()
    assert x.grad.abs().sum() > 0
    # the torch: spec reads synthface's own format
    save_backbone(net, "mbf", tmp_path / "backbone.safetensors")
    assert np.abs(load_embedder(f"torch:{tmp_path / 'backbone.safetensors'}").embed(faces[:3]) - e).max() < 1e-6


def test_bad_torch_specs(tmp_path):
    with pytest.raises(SynthfaceError, match="does not exist"):
        load_embedder(f"arcface:{tmp_path / 'none.pt'}")
    with pytest.raises(SynthfaceError, match="not a recogniser"):
        load_embedder("torch:world-attributes")
    with pytest.raises(SynthfaceError, match="arcface:PATH"):
        load_embedder("pytorch:x.pt")


def test_onnx_embed_aligned_runs_in_batches(faces):
    """embed_aligned feeds the network batch_size crops at a time (a whole dataset at once held GBs of
    activations): the same embeddings as one big batch, and an empty input still gives [0, D]."""
    from synthface.align import arcface_crop

    crops = arcface_crop(faces, 112).round().clamp(0, 255).byte().permute(0, 2, 3, 1).numpy()
    emb = load_embedder("world-audit")
    whole = emb.embed_aligned(crops)
    emb.batch_size = 3
    calls = []
    run = emb.model.session.run
    emb.model.session.run = lambda names, feed: calls.append(len(next(iter(feed.values())))) or run(names, feed)
    chunked = emb.embed_aligned(crops)
    assert calls == [3] * (len(crops) // 3) + ([len(crops) % 3] if len(crops) % 3 else [])
    np.testing.assert_allclose(chunked, whole, atol=1e-5)
    assert emb.embed_aligned(crops[:0]).shape == (0, whole.shape[1])
