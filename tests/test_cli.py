"""The CLI: NVIDIA-style images command, convert, info, demo, and clean error messages."""

import json

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from synthface.cli import main
from synthface.generator.synthesis import generate_images
from synthface.generator import load_generator

import checkpoint_factory as cf
from conftest import make_generator


@pytest.fixture
def network(tmp_path):
    path = tmp_path / "net.pkl"
    path.write_bytes(cf.nvidia_pickle_bytes(make_generator(c_dim=0)))
    return path


def test_images_writes_seed_files_matching_the_api(tmp_path, network):
    out = tmp_path / "out"
    r = CliRunner().invoke(main, ["images", "--network", str(network), "--seeds", "0-2,12", "--trunc", "0.7",
                                  "--trunc-cutoff", "4", "--noise-mode", "const", "--outdir", str(out),
                                  "--device", "cpu", "--batch", "3"])
    assert r.exit_code == 0, r.output
    assert sorted(p.name for p in out.iterdir()) == ["seed0000.png", "seed0001.png", "seed0002.png", "seed0012.png"]
    G = load_generator(network)
    want = dict(generate_images(G, [12], truncation_psi=0.7, truncation_cutoff=4, noise_mode="const", batch_size=1))
    got = np.asarray(Image.open(out / "seed0012.png"))
    assert got.shape == (16, 16, 3)
    assert np.abs(got.astype(int) - want[12].astype(int)).max() <= 1


def test_images_conditional_needs_class(tmp_path):
    path = tmp_path / "c.pkl"
    path.write_bytes(cf.nvidia_pickle_bytes(make_generator(c_dim=3)))
    r = CliRunner().invoke(main, ["images", "--network", str(path), "--seeds", "0", "--outdir", str(tmp_path / "o")])
    assert r.exit_code != 0 and "--class-idx" in r.output and "Traceback" not in r.output
    r = CliRunner().invoke(main, ["images", "--network", str(path), "--seeds", "0", "--class-idx", "2",
                                  "--outdir", str(tmp_path / "o")])
    assert r.exit_code == 0 and (tmp_path / "o" / "seed0000.png").exists()


def test_convert_and_info(tmp_path, network):
    dst = tmp_path / "net.safetensors"
    r = CliRunner().invoke(main, ["convert", str(network), str(dst)])
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(main, ["info", str(dst), "--json"])
    assert r.exit_code == 0, r.output
    info = json.loads(r.output)
    assert info["format"] == "safetensors" and info["resolution"] == 16 and info["num_ws"] == 6
    assert info["z_dim"] == 16 and info["architecture"] == "skip" and len(info["sha256"]) == 64
    r = CliRunner().invoke(main, ["info", str(network)])
    assert r.exit_code == 0 and "nvidia-pickle" in r.output


@pytest.mark.parametrize("args,needle", [
    (["images", "--network", "missing.pkl", "--seeds", "0", "--outdir", "o"], "not found"),
    (["images", "--network", "NET", "--seeds", "x", "--outdir", "o"], "bad seed"),
    (["images", "--network", "NET", "--seeds", "0", "--trunc-cutoff", "99", "--outdir", "o"], "cutoff"),
    (["convert", "NET", "out.pkl"], ".safetensors"),
])
def test_errors_are_one_clear_message(tmp_path, network, args, needle, monkeypatch):
    monkeypatch.chdir(tmp_path)
    args = [str(network) if a == "NET" else a for a in args]
    r = CliRunner().invoke(main, args)
    assert r.exit_code != 0
    assert needle in r.output and "Traceback" not in r.output


def test_demo_runs(tmp_path):
    small = ["--n", "64", "--bank-n", "1500", "--per-cell", "6", "--ids-per-cell", "5", "--images-per-id", "4"]
    r = CliRunner().invoke(main, ["demo", "--outdir", str(tmp_path / "d"), *small])
    assert r.exit_code == 0, r.output
    d = tmp_path / "d"
    grid = Image.open(d / "seed_grid.png")
    assert grid.size[0] > 64 * 8
    res = json.loads((d / "assessment.json").read_text())
    assert res["images"] == 64 and abs(sum(res["cell_frequency"].values()) - 1) < 1e-9
    report = (d / "report.md").read_text()
    assert "seed_grid.png" in report and "renderer/group2_female.png" in report
    assert len(list((d / "renderer").glob("*.png"))) == 6
    # the balanced set: every cell, same size, judged by the audit classifier
    assert "balanced/frequencies.png" in report and (d / "balanced" / "frequencies.png").exists()
    bal = json.loads((d / "balanced" / "report.json").read_text())
    assert len(bal["cells"]) == 6 and all(c["accepted"] == 6 for c in bal["cells"].values())
    assert len(list((d / "balanced" / "images").glob("*/*.png"))) == 36
    assert len(list((d / "dataset" / "imagefolder").glob("*/*.png"))) == 120 and "identity dataset" in report
    assert (d / "evaluation" / "report.html").is_file() and "evaluation/report.html" in report
    # a second run (bank resumed from disk) gives identical images
    first = (d / "seed_grid.png").read_bytes(), (d / "balanced" / "sheets" / "group-group2_gender-female.png").read_bytes()
    r = CliRunner().invoke(main, ["demo", "--outdir", str(d), *small])
    assert r.exit_code == 0
    assert ((d / "seed_grid.png").read_bytes(),
            (d / "balanced" / "sheets" / "group-group2_gender-female.png").read_bytes()) == first


def test_world_assess_scores_the_shipped_generator(tmp_path):
    out = tmp_path / "assess"
    r = CliRunner().invoke(main, ["world", "assess", "--seeds", "0-95", "--outdir", str(out), "--device", "cpu"])
    assert r.exit_code == 0, r.output
    res = json.loads(r.output[r.output.index("{"):])
    assert res["images"] == 96
    assert sum(res["cell_frequency"].values()) == pytest.approx(1.0)
    # the shipped generator labels most random faces confidently; a broken one (noise, grey) would not
    assert res["confident_0.9_fraction"] > 0.7
    assert res["group_confident_0.9_fraction"] >= res["confident_0.9_fraction"]
    # every cell of the biased mix shows up within 96 faces, and the majority cell leads
    freq = res["cell_frequency"]
    assert min(freq.values()) > 0 and max(freq, key=freq.get) == "group3/male"
    assert (out / "seed_grid.png").exists() and (out / "assessment.json").exists()
    assert list((out / "cells").glob("*.png"))


def test_world_assess_rejects_a_missing_network(tmp_path):
    r = CliRunner().invoke(main, ["world", "assess", "--network", str(tmp_path / "nope.pkl"),
                                  "--outdir", str(tmp_path / "o")])
    assert r.exit_code != 0 and "nope.pkl" in r.output


def _all_commands(group, prefix=()):
    import click
    for name, cmd in group.commands.items():
        if isinstance(cmd, click.Group):
            yield from _all_commands(cmd, prefix + (name,))
        else:
            yield prefix + (name,)


def test_every_help_page_renders_cleanly():
    """No unbounded range shown as 'x<=None' and no doubled '%%' in any command's --help."""
    for path in _all_commands(main):
        r = CliRunner().invoke(main, [*path, "--help"])
        assert r.exit_code == 0, (path, r.output)
        assert "None]" not in r.output and "<=None" not in r.output, (path, r.output)
        assert "%%" not in r.output, (path, r.output)
