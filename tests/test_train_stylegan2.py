"""The StyleGAN2 training loop on a tiny folder: it trains, snapshots, resumes and exports."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from synthface.errors import SynthfaceError
from synthface.generator import Discriminator, load_generator
from synthface.train.stylegan2 import TrainConfig, train


def test_discriminator_names_and_shapes():
    D = Discriminator(32, 3, channel_base=512, channel_max=64)
    names = dict(D.named_parameters())
    for n in ["b32.fromrgb.weight", "b32.conv0.weight", "b32.conv1.weight", "b32.skip.weight", "b8.conv1.bias",
              "b4.conv.weight", "b4.fc.weight", "b4.out.weight"]:
        assert n in names
    assert "b16.fromrgb.weight" not in names
    out = D(torch.randn(8, 3, 32, 32))
    assert out.shape == (8, 1)
    with pytest.raises(ValueError, match="img has shape"):
        D(torch.randn(2, 3, 16, 16))


@pytest.fixture
def folder(tmp_path):
    d = tmp_path / "faces"
    rng = np.random.default_rng(0)
    for i in range(8):
        (d / f"{i // 4}").mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(d / f"{i // 4}" / f"{i}.png")
    return d


def test_train_snapshot_and_resume(folder, tmp_path):
    out = tmp_path / "run"
    cfg = TrainConfig(data=str(folder), outdir=str(out), resolution=16, z_dim=8, w_dim=8, mapping_layers=2,
                      channel_base=128, channel_max=16, batch=4, kimg=0.008, snapshot_kimg=0.004, grid_seeds=4,
                      r1_interval=2, threads=1)
    path = train(cfg, log=lambda s: None)
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert log[-1]["nimg"] == 8
    G = load_generator(path)
    assert G.img_resolution == 16
    img = G(torch.randn(2, 8), None, noise_mode="const")
    assert torch.isfinite(img).all()
    st = torch.load(out / "checkpoint.pt", weights_only=True)
    assert st["nimg"] == 8
    # resuming with a larger budget continues from 8 images instead of restarting
    cfg.kimg = 0.012
    train(cfg, log=lambda s: None)
    st2 = torch.load(out / "checkpoint.pt", weights_only=True)
    assert st2["nimg"] == 12
    assert not torch.equal(st["G"]["synthesis.b16.conv1.weight"], st2["G"]["synthesis.b16.conv1.weight"])
    assert (out / "fakes-latest.png").exists() and (out / "reals.png").exists()
    assert not list(out.glob("network-snapshot-*"))  # only the latest, unless asked
    assert st2["opt_G"]["param_groups"][0]["lr"] == pytest.approx(cfg.g_lr)
    # going on at a lower rate (a fine-tuning phase): the new rates replace the checkpoint's
    cfg.kimg, cfg.g_lr, cfg.d_lr = 0.016, cfg.g_lr / 5, cfg.d_lr / 5
    train(cfg, log=lambda s: None)
    st3 = torch.load(out / "checkpoint.pt", weights_only=True)
    assert st3["nimg"] == 16
    assert st3["opt_G"]["param_groups"][0]["lr"] == pytest.approx(cfg.g_lr)
    assert st3["opt_D"]["param_groups"][0]["lr"] == pytest.approx(cfg.d_lr * 2 / 3)  # r1_interval 2: mb = 2/3


def test_keep_snapshots_keeps_each_one_loadable(folder, tmp_path):
    out = tmp_path / "run"
    cfg = TrainConfig(data=str(folder), outdir=str(out), resolution=16, z_dim=8, w_dim=8, mapping_layers=2,
                      channel_base=128, channel_max=16, batch=4, kimg=0.004, snapshot_kimg=0.004, grid_seeds=4,
                      r1_interval=2, threads=1, keep_snapshots=True)
    train(cfg, log=lambda s: None)
    kept = sorted(p.name for p in out.glob("network-snapshot-*"))
    assert kept == ["network-snapshot-000000.safetensors"]  # named by whole kimg, as NVIDIA names them
    a, b = load_generator(out / kept[0]), load_generator(out / "network-snapshot.safetensors")
    z = torch.randn(2, 8)
    assert torch.equal(a(z, None, noise_mode="const"), b(z, None, noise_mode="const"))
    assert not list(out.glob("*.tmp"))


def test_non_square_images_get_a_clear_error(tmp_path):
    d = tmp_path / "bad"
    d.mkdir()
    Image.new("RGB", (20, 16)).save(d / "x.png")
    with pytest.raises(SynthfaceError, match="square"):
        train(TrainConfig(data=str(d), outdir=str(tmp_path / "r"), resolution=16), log=lambda s: None)
    with pytest.raises(SynthfaceError, match="no images"):
        (tmp_path / "empty").mkdir()
        train(TrainConfig(data=str(tmp_path / "empty"), outdir=str(tmp_path / "r2"), resolution=16), log=lambda s: None)


def test_init_from_exported_generator_with_d_warmup_and_topk(folder, tmp_path):
    small = dict(data=str(folder), resolution=16, z_dim=8, w_dim=8, mapping_layers=2, channel_base=128,
                 channel_max=16, batch=4, snapshot_kimg=0.004, grid_seeds=4, r1_interval=2, threads=1)
    src = train(TrainConfig(outdir=str(tmp_path / "a"), kimg=0.008, **small), log=lambda s: None)
    G_src = load_generator(src)
    # a fresh run started from the exported G: while D warms up, G's weights (and G_ema's) do not
    # move (w_avg, a running mean of the mapping's output, keeps tracking)
    out = tmp_path / "b"
    cfg = TrainConfig(outdir=str(out), kimg=0.008, init_generator=str(src), d_warmup_kimg=0.008, g_topk=0.5,
                      seed=3, **small)
    train(cfg, log=lambda s: None)
    st = torch.load(out / "checkpoint.pt", weights_only=True)
    for k, v in G_src.named_parameters():
        assert torch.equal(st["G"][k], v) and torch.equal(st["G_ema"][k], v), k
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert "loss_G" not in log[-1]
    # after the warm-up G trains (here with g_topk 0.5)
    cfg.kimg = 0.016
    train(cfg, log=lambda s: None)
    st2 = torch.load(out / "checkpoint.pt", weights_only=True)
    assert not torch.equal(st2["G"]["synthesis.b16.conv1.weight"], G_src.state_dict()["synthesis.b16.conv1.weight"])
    assert "loss_G" in json.loads((out / "log.jsonl").read_text().splitlines()[-1])


def test_init_generator_must_match_the_configured_network(folder, tmp_path):
    small = dict(data=str(folder), resolution=16, z_dim=8, w_dim=8, mapping_layers=2, batch=4, grid_seeds=4,
                 r1_interval=2, threads=1)
    src = train(TrainConfig(outdir=str(tmp_path / "a"), kimg=0.004, snapshot_kimg=0.004, channel_base=128,
                            channel_max=16, **small), log=lambda s: None)
    with pytest.raises(SynthfaceError, match="does not match the configured network"):
        train(TrainConfig(outdir=str(tmp_path / "b"), kimg=0.004, channel_base=256, channel_max=32,
                          init_generator=str(src), **small), log=lambda s: None)
    with pytest.raises(SynthfaceError, match="g_topk"):
        train(TrainConfig(outdir=str(tmp_path / "c"), kimg=0.004, channel_base=128, channel_max=16, g_topk=0.0,
                          **small), log=lambda s: None)
