"""The latent pipeline on the demo world: labellers, the resumable bank, verified sampling judged
by the independently trained audit classifier, generator-hash checks and the CLI."""

import json

import numpy as np
import pytest
from PIL import Image
import torch
from click.testing import CliRunner

from synthface.cli import main
from synthface.errors import SynthfaceError
from synthface.generator import load_generator
from synthface.labelling import CombinedLabeller, MappedLabeller, PRESETS, load_labeller
from synthface.labelling.fairface import RACE7, FairFaceLabeller, ResNet34
from synthface.labelling.genderage import GenderAgeLabeller
from synthface.latent import LatentBank, build_bank, generator_hash, sample_cells
from synthface.latent.report import run_sampling
from synthface.world import World
from synthface.world.assets import generator_path, pack_dir

from conftest import make_generator


class FakeLabeller:
    schema = {"race": RACE7, "gender": ["Male", "Female"]}

    def __init__(self, p):
        self.p = p

    def predict_proba(self, images):
        return {"race": self.p, "gender": np.tile([0.2, 0.8], (len(self.p), 1))}

    def describe(self):
        return {"kind": "fake"}


def test_fairface_seven_races_map_onto_six_groups():
    p = np.array([[0.1, 0.1, 0.1, 0.3, 0.2, 0.1, 0.1]])
    lab = MappedLabeller(FakeLabeller(p), PRESETS["fairface6"])
    assert lab.schema["ethnicity"] == ["white", "black", "hispanic", "asian", "indian", "middleeastern"]
    out = lab.predict_proba(None)
    assert np.allclose(out["ethnicity"], [[0.1, 0.1, 0.1, 0.5, 0.1, 0.1]])
    assert lab.schema["gender"] == ["male", "female"] and np.allclose(out["gender"], [[0.2, 0.8]])
    four = MappedLabeller(FakeLabeller(p), PRESETS["fairface4"]).predict_proba(None)["ethnicity"]
    assert np.allclose(four, np.array([[0.1, 0.1, 0.5, 0.1]]) / 0.8)  # hispanic and middle eastern dropped


def test_schema_errors_name_the_problem():
    with pytest.raises(SynthfaceError, match=r"not mapped: \['Middle Eastern'\]"):
        MappedLabeller(FakeLabeller(None), {"eth": {"from": "race", "classes": {c: c for c in RACE7[:-1]}}})
    with pytest.raises(SynthfaceError, match="does not produce"):
        MappedLabeller(FakeLabeller(None), {"eth": {"from": "ethnicity"}})
    with pytest.raises(SynthfaceError, match="both produce attribute 'race'"):
        CombinedLabeller([FakeLabeller(None), FakeLabeller(None)])
    with pytest.raises(SynthfaceError, match="unknown labeller"):
        load_labeller("resnet")


def test_fairface_checkpoint_loads_with_torchvision_names_and_refuses_code(tmp_path):
    net = ResNet34(18)
    # torchvision's resnet34 has 21,797,672 parameters with its 1000-way head; FairFace's head is 18-way
    assert sum(p.numel() for p in net.parameters()) == 21_797_672 - 512 * 1000 - 1000 + 512 * 18 + 18
    sd = net.state_dict()
    assert {"conv1.weight", "layer2.0.downsample.0.weight", "layer3.5.bn2.running_var", "fc.bias"} <= set(sd)
    torch.save({"module." + k: v for k, v in sd.items()}, tmp_path / "ff.pt")  # DataParallel-style keys
    lab = FairFaceLabeller(tmp_path / "ff.pt")
    imgs = World(seed=0).render(World(seed=0).identities(range(3)), [0, 0, 0], size=64)
    out = lab.predict_proba(imgs)
    assert out["race"].shape == (3, 7) and out["gender"].shape == (3, 2) and out["age"].shape == (3, 9)
    assert np.allclose(out["race"].sum(1), 1, atol=1e-5)

    class Payload:
        def __reduce__(self):
            return (print, ("code ran",))
    torch.save({"fc.weight": Payload()}, tmp_path / "evil.pt")
    with pytest.raises(SynthfaceError, match="not a plain PyTorch state dict"):
        FairFaceLabeller(tmp_path / "evil.pt")


def test_insightface_genderage_labels_renderer_gender():
    lab = GenderAgeLabeller(pack_dir())
    w = World(seed=0)
    ident = w.identities(range(910000, 910200))
    out = lab.predict_proba(w.render(ident, [0] * 200, size=64))
    assert np.allclose(out["gender"].sum(1), 1, atol=1e-5) and out["age"].shape == (200, 9)
    assert (out["gender"].argmax(1) == ident["gender"]).mean() > 0.95


def test_two_labellers_of_one_attribute_combine_when_one_keeps_only_some():
    """genderage also produces gender: SPEC#age keeps only its age beside the world classifier's gender."""
    pack = pack_dir()
    with pytest.raises(SynthfaceError, match="both produce attribute 'gender'.*SPEC#ATTR"):
        load_labeller(["world", f"genderage:{pack}"])
    lab = load_labeller(["world", f"genderage:{pack}#age"])
    assert list(lab.schema) == ["group", "gender", "age"] and len(lab.schema["age"]) == 9
    w = World(seed=0)
    ident = w.identities(range(913000, 913040))
    imgs = w.render(ident, [0] * 40, size=64)
    out, world = lab.predict_proba(imgs), load_labeller("world").predict_proba(imgs)
    assert np.allclose(out["gender"], world["gender"])  # the world classifier's, not genderage's
    assert np.array_equal(out["age"], GenderAgeLabeller(pack).predict_proba(imgs)["age"])
    for bad in (f"genderage:{pack}#race", f"genderage:{pack}#"):
        with pytest.raises(SynthfaceError, match="after '#' name attributes it produces"):
            load_labeller(bad)


def test_world_age_labeller_adds_coarse_age_classes():
    """world-age: the world classifier's group and gender beside three age classes; renderer people over 55
    (whose faces carry age marks) are mostly put in the older classes, people under 30 in 'under 40'."""
    lab = load_labeller("world-age")
    assert lab.schema["age"] == ["under 40", "40-59", "60+"] and set(lab.schema) == {"group", "gender", "age"}
    w = World(seed=0)
    young = w.identities(range(911000, 911060), age=np.full(60, 25.0))
    old = w.identities(range(912000, 912060), age=np.full(60, 62.0))
    py, po = (lab.predict_proba(w.render(i, [0] * 60, size=64)) for i in (young, old))
    assert np.allclose(py["age"].sum(1), 1) and py["group"].shape == (60, 3)
    assert (py["age"].argmax(1) == 0).mean() >= 0.9
    assert (po["age"].argmax(1) > 0).mean() >= 0.7
    assert (py["gender"].argmax(1) == young["gender"]).mean() > 0.95


@pytest.fixture(scope="module")
def G():
    return load_generator(generator_path())


def test_bank_resumes_after_a_crash_identically(G, tmp_path):
    lab = load_labeller("world")
    kw = dict(seed=7, batch_size=16, chunk_size=32, progress=False, log=lambda s: None)
    build_bank(G, lab, tmp_path / "a", 80, **kw)
    build_bank(G, lab, tmp_path / "b", 80, stop_after_chunks=1, **kw)  # "crash" after one chunk
    assert len(LatentBank(tmp_path / "b")) == 32
    build_bank(G, lab, tmp_path / "b", 80, **kw)
    a, b = LatentBank(tmp_path / "a").load(), LatentBank(tmp_path / "b").load()
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1]) and np.array_equal(a[1], np.arange(7, 87))
    assert all(np.array_equal(a[2][k], b[2][k]) for k in a[2])
    # extending the bank keeps the first 80 rows and adds new seeds
    build_bank(G, lab, tmp_path / "b", 100, **kw)
    W, seeds, _ = LatentBank(tmp_path / "b").load()
    assert np.array_equal(W[:80], a[0]) and np.array_equal(seeds, np.arange(7, 107))
    with pytest.raises(SynthfaceError, match="different seed"):
        build_bank(G, lab, tmp_path / "b", 100, **{**kw, "seed": 8})
    # a damaged row is refused with the seed it belongs to
    with np.load(tmp_path / "b" / "chunk_00000.npz") as z:
        arrays = dict(z)
    arrays["w"][3, 0] = np.nan
    np.savez(tmp_path / "b" / "chunk_00000.npz", **arrays)
    with pytest.raises(SynthfaceError, match="NaN or inf.*seed 10"):
        LatentBank(tmp_path / "b").load()


@pytest.fixture(scope="module")
def fitted(demo_latent_model):
    return demo_latent_model[:2]


def test_rarest_cell_on_demand_judged_by_the_audit_classifier(G, fitted, tmp_path):
    model, bank = fitted
    assert model.generator_hash_ == generator_hash(G) == bank.meta["generator_hash"]
    counts = dict(zip([",".join(c) for c in model.cells_], model.counts_))
    # the bias the demo world was trained with: group2/female is 5% of the training set, far below 1/6
    assert counts["group2,female"] < 0.06 * sum(counts.values()) < counts["group3,male"]
    rep = run_sampling(model, G, [{"group": "group2", "gender": "female"}], 40, tmp_path, labeller=load_labeller("world"),
                       audit=load_labeller("world-audit"), accept_confidence=0.99, budget=8, baseline_n=600,
                       save_images=True, log=lambda s: None)
    cell = rep["cells"]["group=group2,gender=female"]
    assert cell["accepted"] == 40 and cell["audit_precision"] >= 0.9
    # uniform sampling reproduces the bias; the latent model beats rejection sampling by far
    assert rep["uniform_sampling_audit"]["group=group2,gender=female"]["argmax"] < 0.08
    assert cell["gain_over_rejection_sampling"] > 5
    assert len(list((tmp_path / "images" / "group-group2_gender-female").glob("*.png"))) == 40
    lat = np.load(tmp_path / "latents.npz")
    assert lat["w"].shape == (40, G.w_dim) and set(lat["cell"]) == {"group=group2,gender=female"}
    # with a baseline and an audit, the report embeds the uniform-vs-latent frequency chart
    assert "![frequencies](frequencies.png)" in (tmp_path / "report.md").read_text()
    assert Image.open(tmp_path / "frequencies.png").size[0] > 500


def test_sampling_refuses_another_generator_and_mismatched_labellers(fitted):
    model, _ = fitted
    with pytest.raises(SynthfaceError, match="different generator"):
        sample_cells(model, make_generator(resolution=16), [{"group": "group1"}], 2)
    G = load_generator(generator_path())
    fake = FakeLabeller(None)
    with pytest.raises(SynthfaceError, match="does not produce attribute 'group'"):
        sample_cells(model, G, [{"group": "group1"}], 2, labeller=fake)


def test_cli_label_fit_sample(tmp_path):
    r = CliRunner()
    res = r.invoke(main, ["label", "--network", "world", "--n", "1200", "--out", str(tmp_path / "bank"),
                          "--device", "cpu"])
    assert res.exit_code == 0, res.output
    res = r.invoke(main, ["fit", "--bank", str(tmp_path / "bank"), "--out", str(tmp_path / "m.synthface"),
                          "--min-count", "10"])
    assert res.exit_code == 0, res.output
    assert "held-out cell accuracy" in res.output and "group=group2,gender=female" in res.output
    res = r.invoke(main, ["sample", "--model", str(tmp_path / "m.synthface"), "--network", "world", "--cells",
                          "gender=female,group=group3;gender=male", "--n", "6", "--outdir", str(tmp_path / "s"),
                          "--audit", "world-audit", "--baseline", "200", "--device", "cpu"])
    assert res.exit_code == 0, res.output
    rep = json.loads((tmp_path / "s" / "report.json").read_text())
    assert set(rep["cells"]) == {"group=group3,gender=female", "gender=male"}
    assert all(c["accepted"] == 6 for c in rep["cells"].values())
    for args, msg in [(["--cells", "group=group9"], "unknown class 'group9'"),
                      (["--cells", "race=x"], "unknown attribute 'race'")]:
        res = r.invoke(main, ["sample", "--model", str(tmp_path / "m.synthface"), "--network", "world", "--n", "2",
                              "--outdir", str(tmp_path / "x"), *args])
        assert res.exit_code != 0 and msg in res.output and "Traceback" not in res.output
    res = r.invoke(main, ["fit", "--bank", str(tmp_path / "nothing"), "--out", str(tmp_path / "m2.synthface")])
    assert res.exit_code != 0 and "not a latent bank" in res.output
