"""Bad inputs through the CLI, as a careless or hostile user types them (issue 18).

Each case asserts the exit code (2: the command line is wrong, 1: an input or the run failed), that no
traceback (and no "unexpected error") reaches the user, that the message names the problem, and that
nothing is left behind in the output location. Options are checked where they are parsed, so most
cases never touch a network; the rest run on tiny inputs (a 96-latent bank, a 6-identity render, one
2 x 2 cell of a dataset)."""

from __future__ import annotations

import errno
import json
import shutil
import warnings
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

import checkpoint_factory as cf
from conftest import make_generator
from synthface.cli import main

SAN_OPTS = ["train", "san", "--dataset", "{rend}", "--out", "{out}"]
EVAL = ["evaluate", "--dataset", "{rend}", "--recognizer", "world", "--out", "{out}"]


# ------------------------------------------------------------------ inputs


def _legacy_huge(path: Path) -> Path:
    """A legacy-format torch file whose pickle declares 10^12 float elements (4 TB) for 60 bytes."""
    buf = path.parent / "legacy_ok.pt"
    torch.save({"w": torch.zeros(3, 5)}, buf, _use_new_zipfile_serialization=False)
    data = buf.read_bytes()
    old = b"cpuq\x06K\x0fN"
    assert old in data
    path.write_bytes(data.replace(old, b"cpuq\x06\x8a\x06" + (10 ** 12).to_bytes(6, "little") + b"N", 1))
    return path


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    from synthface.generator import load_generator
    from synthface.labelling import load_labeller
    from synthface.labelling.fairface import ResNet34
    from synthface.latent import DemographicLatentModel, build_bank
    from synthface.world import BIASED, World
    from synthface.world.assets import generator_path
    from synthface.world.dataset import write_image_folder

    d = tmp_path_factory.mktemp("inputs")
    G = load_generator(generator_path())
    bank = build_bank(G, load_labeller("world"), d / "bank", 96, chunk_size=32, progress=False, log=lambda m: None)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        DemographicLatentModel(confidence=0.6, min_count=5).fit_bank(bank).save(d / "model.synthface")
    write_image_folder(World(seed=0, distribution=BIASED), d / "rend", 6, 2, 32, log=lambda m: None)
    (d / "groups.csv").write_text("identity,group\n" + "".join(f"{i:06d},g{i % 2}\n" for i in range(6)))
    (d / "notimg.png").write_text("this is not a PNG")
    (d / "junk.bin").write_bytes(b"\x00junk" * 20)
    Gn = make_generator()
    with torch.no_grad():
        Gn.synthesis.b4.conv1.weight[0, 0, 0, 0] = float("nan")
    (d / "nan.pkl").write_bytes(cf.nvidia_pickle_bytes(Gn))
    Gf = make_generator()  # a forged config asking for a network of 2^20 channels
    Gf.init_kwargs = dict(Gf.init_kwargs, synthesis_kwargs=dict(Gf.init_kwargs["synthesis_kwargs"], channel_max=1 << 20))
    (d / "forged.pkl").write_bytes(cf.nvidia_pickle_bytes(Gf))
    (d / "evil.pkl").write_bytes(b"cos\nsystem\n(S'touch /tmp/synthface_pwned'\ntR.")
    huge = _legacy_huge(d / "huge.pt")
    blob = huge.read_bytes()  # the same forged storage inside an NVIDIA-style network pickle
    (d / "huge_storage.pkl").write_bytes(b"\x80\x03ctorch.storage\n_load_from_bytes\nB" + len(blob).to_bytes(4, "little")
                                         + blob + b"\x85R.")
    torch.save(ResNet34(18), d / "ff_whole.pt")
    sd = ResNet34(18).state_dict()
    sd.pop("layer1.0.conv1.weight")
    sd["extra.weight"] = torch.zeros(1)
    torch.save(sd, d / "ff_mismatch.pt")
    return {k: str(v) for k, v in {
        "bank": d / "bank", "model": d / "model.synthface", "rend": d / "rend", "groups": d / "groups.csv",
        "notimg": d / "notimg.png", "junk": d / "junk.bin", "nanpkl": d / "nan.pkl", "forged": d / "forged.pkl", "evil": d / "evil.pkl",
        "huge": huge, "hugepkl": d / "huge_storage.pkl", "ffwhole": d / "ff_whole.pt",
        "ffmis": d / "ff_mismatch.pt", "dir": d}.items()}


def _snapshot(path: Path) -> dict:
    if not path.exists():
        return {}
    return {str(p.relative_to(path)): (p.stat().st_size, p.stat().st_mtime_ns) for p in path.rglob("*")}


def _run(args, inputs, tmp_path, env=None):
    out = tmp_path / "out"
    sub = dict(inputs, out=str(out), tmp=str(tmp_path))
    argv = [a.format(**sub) for a in args]
    r = CliRunner().invoke(main, argv, env=env)
    return r, out


def _assert_clean_failure(r, code, needle, out):
    text = r.output
    assert r.exit_code == code, text
    assert isinstance(r.exception, SystemExit), repr(r.exception)  # no exception escaped the handler
    assert "Traceback" not in text and "unexpected error" not in text, text
    assert "weights_only" not in text, text
    assert needle.lower() in text.lower(), text
    assert not out.exists(), sorted(p.name for p in out.rglob("*"))


# ------------------------------------------------------------------ options checked where parsed (exit 2)

USAGE = [
    ("images-trunc-nan", ["images", "--network", "world", "--seeds", "0", "--trunc", "nan", "--outdir", "{out}"], "--trunc"),
    ("images-trunc-inf", ["images", "--network", "world", "--seeds", "0", "--trunc", "inf", "--outdir", "{out}"], "finite"),
    ("images-seed-too-large", ["images", "--network", "world", "--seeds", "0-100000000000", "--outdir", "{out}"],
     "below 2**32"),
    ("images-seed-count", ["images", "--network", "world", "--seeds", "0-99999999", "--outdir", "{out}"], "split it"),
    ("images-seed-text", ["images", "--network", "world", "--seeds", "x", "--outdir", "{out}"], "bad seed"),
    ("images-seed-empty", ["images", "--network", "world", "--seeds", ",", "--outdir", "{out}"], "no seeds"),
    ("images-seed-backwards", ["images", "--network", "world", "--seeds", "9-3", "--outdir", "{out}"], "before the start"),
    ("images-device-tpu", ["images", "--network", "world", "--seeds", "0", "--device", "tpu", "--outdir", "{out}"], "tpu"),
    ("images-batch-0", ["images", "--network", "world", "--seeds", "0", "--batch", "0", "--outdir", "{out}"], "--batch"),
    ("images-class-negative", ["images", "--network", "world", "--seeds", "0", "--class-idx", "-1", "--outdir", "{out}"],
     "--class-idx"),
    ("convert-wrong-suffix", ["convert", "{nanpkl}", "{out}"], ".safetensors"),
    ("label-trunc-nan", ["label", "--network", "world", "--n", "4", "--trunc", "nan", "--out", "{out}"], "--trunc"),
    ("label-n-0", ["label", "--network", "world", "--n", "0", "--out", "{out}"], "--n"),
    ("label-seed-negative", ["label", "--network", "world", "--seed", "-1", "--out", "{out}"], "--seed"),
    ("label-seed-2-32", ["label", "--network", "world", "--seed", "4294967296", "--out", "{out}"], "--seed"),
    ("label-chunk-0", ["label", "--network", "world", "--chunk", "0", "--out", "{out}"], "--chunk"),
    ("label-device", ["label", "--network", "world", "--device", "gpu0", "--out", "{out}"], "gpu0"),
    ("label-device-mps", ["label", "--network", "world", "--device", "mps", "--out", "{out}"], "mps"),
    ("images-device-cuda-7", ["images", "--network", "world", "--seeds", "0", "--device", "cuda:7", "--outdir",
                              "{out}"], "cuda:7"),
    ("fit-shrinkage-nan", ["fit", "--bank", "{bank}", "--out", "{out}", "--shrinkage", "nan"], "--shrinkage"),
    ("fit-shrinkage-2", ["fit", "--bank", "{bank}", "--out", "{out}", "--shrinkage", "2"], "[0, 1]"),
    ("fit-shrinkage-text", ["fit", "--bank", "{bank}", "--out", "{out}", "--shrinkage", "lots"], "auto"),
    ("fit-attributes-twice", ["fit", "--bank", "{bank}", "--out", "{out}", "--attributes", "gender,gender"],
     "more than once"),
    ("fit-attributes-empty", ["fit", "--bank", "{bank}", "--out", "{out}", "--attributes", ","], "no attribute"),
    ("fit-confidence-nan", ["fit", "--bank", "{bank}", "--out", "{out}", "--confidence", "nan"], "--confidence"),
    ("fit-confidence-0", ["fit", "--bank", "{bank}", "--out", "{out}", "--confidence", "0"], "--confidence"),
    ("fit-min-count-1", ["fit", "--bank", "{bank}", "--out", "{out}", "--min-count", "1"], "--min-count"),
    ("sample-cells-empty", ["sample", "--model", "{model}", "--network", "world", "--cells", "", "--outdir", "{out}"],
     "no cell"),
    ("sample-cells-twice", ["sample", "--model", "{model}", "--network", "world", "--cells", "gender=male;gender=male",
                            "--outdir", "{out}"], "more than once"),
    ("sample-n-0", ["sample", "--model", "{model}", "--network", "world", "--cells", "all", "--n", "0",
                    "--outdir", "{out}"], "--n"),
    ("sample-budget", ["sample", "--model", "{model}", "--network", "world", "--cells", "all", "--budget", "0.5",
                       "--outdir", "{out}"], "--budget"),
    ("sample-accept-1.5", ["sample", "--model", "{model}", "--network", "world", "--cells", "all",
                           "--accept-confidence", "1.5", "--outdir", "{out}"], "--accept-confidence"),
    ("generate-ids-0", ["generate", "--network", "world", "--model", "{model}", "--ids-per-cell", "0",
                        "--images-per-id", "2", "--out", "{out}"], "--ids-per-cell"),
    ("generate-separation-1.5", ["generate", "--network", "world", "--model", "{model}", "--ids-per-cell", "2",
                                 "--images-per-id", "2", "--separation", "1.5", "--out", "{out}"], "--separation"),
    ("generate-fmr-5", ["generate", "--network", "world", "--model", "{model}", "--ids-per-cell", "2",
                        "--images-per-id", "2", "--separation-fmr", "5", "--out", "{out}"], "--separation-fmr"),
    ("generate-quantile-nan", ["generate", "--network", "world", "--model", "{model}", "--ids-per-cell", "2",
                               "--images-per-id", "2", "--separation-quantile", "nan", "--out", "{out}"], "finite"),
    ("generate-strength-negative", ["generate", "--network", "world", "--model", "{model}", "--ids-per-cell", "2",
                                    "--images-per-id", "2", "--strength", "-1", "--out", "{out}"], "--strength"),
    ("generate-shards-0", ["generate", "--network", "world", "--model", "{model}", "--ids-per-cell", "2",
                           "--images-per-id", "2", "--num-shards", "0", "--out", "{out}"], "--num-shards"),
    ("generate-budget", ["generate", "--network", "world", "--model", "{model}", "--ids-per-cell", "2",
                         "--images-per-id", "2", "--identity-budget", "0.5", "--out", "{out}"], "--identity-budget"),
    ("generate-encoding", ["generate", "--network", "world", "--model", "{model}", "--ids-per-cell", "2",
                           "--images-per-id", "2", "--rec-encoding", "webp", "--out", "{out}"], "--rec-encoding"),
    ("generate-two-references", ["generate", "--network", "world", "--model", "{model}", "--ids-per-cell", "2",
                                 "--images-per-id", "2", "--reference-embeddings", "{junk}", "--reference-images",
                                 "{rend}", "--out", "{out}"], "not both"),
    ("merge-audit-fmr", ["merge", "--out", "{out}", "--audit-fmr", "2"], "--audit-fmr"),
    ("merge-audit-threshold-nan", ["merge", "--out", "{out}", "--audit-threshold", "nan"], "--audit-threshold"),
    ("evaluate-genuine-negative", EVAL + ["--genuine", "-5"], "--genuine"),
    ("evaluate-folds-1", EVAL + ["--folds", "1"], "--folds"),
    ("evaluate-target-fmr-5", EVAL + ["--target-fmr", "5"], "--target-fmr"),
    ("evaluate-missing-groups", EVAL + ["--groups", "{tmp}/missing.csv"], "missing.csv"),
    ("evaluate-missing-pairs", EVAL + ["--pairs", "{tmp}/missing_pairs.csv"], "missing_pairs.csv"),
    ("evaluate-bootstrap-0", EVAL + ["--bootstrap", "0"], "--bootstrap"),
    ("world-render-identities-negative", ["world", "render", "--outdir", "{out}", "--identities", "-3"], "--identities"),
    ("world-render-size-0", ["world", "render", "--outdir", "{out}", "--identities", "2", "--size", "0"], "--size"),
    ("world-render-images-0", ["world", "render", "--outdir", "{out}", "--identities", "2", "--images", "0"],
     "--images"),
    ("world-assess-seeds", ["world", "assess", "--seeds", "5-1", "--outdir", "{out}"], "before the start"),
    ("world-assess-trunc-nan", ["world", "assess", "--trunc", "nan", "--outdir", "{out}"], "--trunc"),
    ("demo-n-0", ["demo", "--n", "0", "--outdir", "{out}"], "--n"),
    ("demo-images-per-id-0", ["demo", "--images-per-id", "0", "--outdir", "{out}"], "--images-per-id"),
    ("demo-bank-too-small", ["demo", "--bank-n", "10", "--outdir", "{out}"], "--bank-n"),
    ("train-recognition-held-out-1", ["train", "recognition", "--data", "{rend}", "--out", "{out}", "--held-out", "1"],
     "--held-out"),
    ("train-recognition-lr-nan", ["train", "recognition", "--data", "{rend}", "--out", "{out}", "--lr", "nan"], "--lr"),
    ("train-recognition-missing-data", ["train", "recognition", "--data", "{tmp}/nowhere", "--out", "{out}"],
     "nowhere"),
    ("train-attribute-region", ["train", "attribute", "--data", "{rend}", "--task", "gender", "--out", "{out}",
                                "--region", "0.9,0.1,0,1"], "--region"),
    ("train-attribute-bandwidth-inf", ["train", "attribute", "--data", "{rend}", "--task", "gender", "--out", "{out}",
                                       "--cid-bandwidth", "inf"], "positive"),
    ("train-attribute-held-out-nan", ["train", "attribute", "--data", "{rend}", "--task", "gender", "--out", "{out}",
                                      "--held-out", "nan"], "--held-out"),
    ("train-sensitivenets-lr-0", ["train", "sensitivenets", "--dataset", "{rend}", "--recognizer", "world",
                                  "--out", "{out}", "--lr", "0"], "--lr"),
    ("train-sensitivenets-sensitive-twice", ["train", "sensitivenets", "--dataset", "{rend}", "--recognizer", "world",
                                             "--out", "{out}", "--sensitive", "group,group"], "more than once"),
    ("train-san-members-0", SAN_OPTS + ["--members", "0"], "--members"),
    ("train-san-lr-inf", SAN_OPTS + ["--lr", "inf"], "--lr"),
    ("evaluate-attribute-min-images", ["evaluate-attribute", "--model", "world", "--dataset", "{rend}",
                                       "--min-images", "0", "--out", "{out}"], "--min-images"),
    ("evaluate-attribute-device", ["evaluate-attribute", "--model", "world", "--dataset", "{rend}", "--device",
                                   "tpu", "--out", "{out}"], "tpu"),
    ("capacity-candidates-1", ["capacity", "--network", "world", "--model", "{model}", "--candidates", "1",
                               "--out", "{out}"], "--candidates"),
    ("capacity-fmr-0", ["capacity", "--network", "world", "--model", "{model}", "--separation-fmr", "0",
                        "--out", "{out}"], "--separation-fmr"),
    ("leakage-folds-1", ["leakage", "--dataset", "{rend}", "--recognizer", "world", "--folds", "1", "--out", "{out}"],
     "--folds"),
    ("leakage-classifier-twice", ["leakage", "--dataset", "{rend}", "--recognizer", "world", "--classifiers",
                                  "svm,svm", "--out", "{out}"], "more than once"),
    ("leakage-classifier-unknown", ["leakage", "--dataset", "{rend}", "--recognizer", "world", "--classifiers",
                                    "xgboost", "--out", "{out}"], "xgboost"),
    ("experiment-cid-set-nan", ["experiment", "cid", "--quick", "--out", "{out}", "--set", "epochs=NaN"],
     "whole number"),
    ("experiment-pretrain-set-text", ["experiment", "pretrain", "--quick", "--out", "{out}", "--set", "seed=abc"],
     "seed"),
    ("experiment-san-set-inf", ["experiment", "san", "--quick", "--out", "{out}", "--set", "epochs=Infinity"],
     "epochs"),
    ("experiment-sensitivenets-set-list", ["experiment", "sensitivenets", "--quick", "--out", "{out}", "--set",
                                           "seed=[1,2]"], "seed"),
    ("perturb-missing-model", ["perturb", "--model", "{tmp}/M.san", "--dataset", "{rend}", "--out", "{out}"], "M.san"),
    ("privacy-missing-original", ["privacy", "--original", "{tmp}/orig", "--perturbed", "{rend}",
                                  "--gender-classifier", "world", "--recognizer", "world", "--out", "{out}"], "orig"),
]


@pytest.mark.parametrize("args,needle", [c[1:] for c in USAGE], ids=[c[0] for c in USAGE])
def test_bad_option_values_are_refused_where_parsed(inputs, tmp_path, args, needle):
    r, out = _run(args, inputs, tmp_path)
    _assert_clean_failure(r, 2, needle, out)


def test_unknown_synthface_ops_setting_is_a_usage_error(inputs, tmp_path):
    r, out = _run(["images", "--network", "world", "--seeds", "0", "--outdir", "{out}"], inputs, tmp_path,
                  env={"SYNTHFACE_OPS": "fastest"})
    _assert_clean_failure(r, 2, "SYNTHFACE_OPS", out)


# ------------------------------------------------------------------ unreadable, foreign or inconsistent inputs (exit 1)

FAILURES = [
    ("info-missing", ["info", "{tmp}/missing.pkl"], "not found"),
    ("info-not-a-network", ["info", "{notimg}"], "neither a network pickle"),
    ("images-nan-weights", ["images", "--network", "{nanpkl}", "--seeds", "0", "--outdir", "{out}"], "NaN or inf"),
    ("images-hostile-pickle", ["images", "--network", "{evil}", "--seeds", "0", "--outdir", "{out}"], "os.system"),
    ("images-forged-storage-size", ["images", "--network", "{hugepkl}", "--seeds", "0", "--outdir", "{out}"],
     "declares"),
    ("info-forged-config", ["info", "{forged}"], "channel_max = 1048576"),
    ("convert-nan-weights", ["convert", "{nanpkl}", "{out}.safetensors"], "NaN or inf"),
    ("label-fairface-whole-model", ["label", "--network", "world", "--labeller", "fairface:{ffwhole}", "--n", "4",
                                    "--out", "{out}"], "state_dict"),
    ("label-fairface-mismatch", ["label", "--network", "world", "--labeller", "fairface:{ffmis}", "--n", "4",
                                 "--out", "{out}"], "layer1.0.conv1.weight"),
    ("label-fairface-forged-size", ["label", "--network", "world", "--labeller", "fairface:{huge}", "--n", "4",
                                    "--out", "{out}"], "declares"),
    ("label-fairface-not-torch", ["label", "--network", "world", "--labeller", "fairface:{notimg}", "--n", "4",
                                  "--out", "{out}"], "not a PyTorch weights file"),
    ("fit-not-a-bank", ["fit", "--bank", "{rend}", "--out", "{out}"], "no bank.json"),
    ("sample-foreign-model", ["sample", "--model", "{junk}", "--network", "world", "--cells", "all",
                              "--outdir", "{out}"], "not a synthface latent model"),
    ("sample-unknown-cell", ["sample", "--model", "{model}", "--network", "world", "--cells", "gender=robot",
                             "--outdir", "{out}"], "robot"),
    ("evaluate-groups-wrong-columns", EVAL + ["--groups", "{junk}"], "identity,group"),
    ("evaluate-no-manifest", EVAL, "--groups"),
    ("merge-not-a-dataset", ["merge", "--out", "{out}"], "dataset"),
    ("train-recognition-backbone", ["train", "recognition", "--data", "{rend}", "--out", "{out}", "--backbone", "r7"], "r7"),
    ("experiment-set-syntax", ["experiment", "cid", "--out", "{out}", "--set", "noequals"], "KEY=VALUE"),
    ("leakage-groups-wrong-columns", ["leakage", "--dataset", "{rend}", "--recognizer", "world", "--groups", "{junk}",
                                      "--out", "{out}"], "identity,group"),
    ("privacy-not-a-dataset", ["privacy", "--original", "{rend}", "--perturbed", "{rend}", "--gender-classifier",
                               "world", "--recognizer", "world", "--out", "{out}"], "{rend}"),
    ("evaluate-attribute-foreign-model", ["evaluate-attribute", "--model", "onnx:{junk}", "--dataset", "{rend}",
                                          "--out", "{out}"], "junk.bin"),
    ("capacity-foreign-model", ["capacity", "--network", "world", "--model", "{junk}", "--out", "{out}"],
     "not a synthface latent model"),
    ("world-assess-foreign-network", ["world", "assess", "--network", "{junk}", "--outdir", "{out}"],
     "neither a network pickle"),
    ("perturb-foreign-model", ["perturb", "--model", "{junk}", "--dataset", "{rend}", "--out", "{out}"], "junk.bin"),
    ("train-san-not-a-synthface-dataset", SAN_OPTS, "manifest.jsonl"),
]


@pytest.mark.parametrize("args,needle", [c[1:] for c in FAILURES], ids=[c[0] for c in FAILURES])
def test_unreadable_or_foreign_inputs_fail_with_one_message(inputs, tmp_path, args, needle):
    r, out = _run(args, inputs, tmp_path)
    _assert_clean_failure(r, 1, needle.format(**inputs), out)
    assert not Path("/tmp/synthface_pwned").exists()


def _copy_bank(inputs, tmp_path) -> Path:
    bank = tmp_path / "bank"
    shutil.copytree(inputs["bank"], bank)
    return bank


def test_label_resumed_with_another_labeller_is_refused(inputs, tmp_path):
    bank = _copy_bank(inputs, tmp_path)
    before = _snapshot(bank)
    r = CliRunner().invoke(main, ["label", "--network", "world", "--labeller", "world-audit", "--n", "96",
                                  "--chunk", "32", "--out", str(bank)])
    assert r.exit_code == 1 and "labeller" in r.output and "Traceback" not in r.output, r.output
    assert _snapshot(bank) == before  # nothing rewritten, bank.json included


@pytest.mark.parametrize("damage,needle", [
    ("promise", "promises 500 latents but its 3 chunk(s) hold 96"),
    ("chunk", "damaged bank chunk"),
    ("json", "bank.json is damaged"),
])
def test_fit_refuses_an_incomplete_or_damaged_bank(inputs, tmp_path, damage, needle):
    bank = _copy_bank(inputs, tmp_path)
    if damage == "promise":
        meta = json.loads((bank / "bank.json").read_text())
        (bank / "bank.json").write_text(json.dumps({**meta, "n": 500}))
    elif damage == "chunk":
        p = bank / "chunk_00001.npz"
        p.write_bytes(p.read_bytes()[:100])
    else:
        (bank / "bank.json").write_text('{"version": 1, "schema": ')
    r, out = _run(["fit", "--bank", str(bank), "--out", "{out}"], inputs, tmp_path)
    _assert_clean_failure(r, 1, needle, out)


@pytest.fixture(scope="module")
def dataset(inputs, tmp_path_factory):
    """One cell, 2 identities x 2 images, explicit thresholds (no reference faces): a few seconds."""
    d = tmp_path_factory.mktemp("dataset") / "ds"
    r = CliRunner().invoke(main, ["generate", "--network", "world", "--model", inputs["model"], "--cells",
                                  "group=group1,gender=male", "--ids-per-cell", "2", "--images-per-id", "2",
                                  "--out", str(d), "--device", "cpu", "--capacity-candidates", "0",
                                  "--separation", "0.6", "--consistency", "0.3", "--batch", "16"])
    assert r.exit_code == 0, r.output
    return d


@pytest.mark.parametrize("command", ["merge", "evaluate"])
def test_a_png_that_is_not_an_image_is_named(inputs, dataset, tmp_path, command):
    ds = tmp_path / "ds"
    shutil.copytree(dataset, ds)
    bad = ds / "imagefolder" / "000001" / "001.png"
    shutil.copy(inputs["notimg"], bad)
    before = _snapshot(ds)
    if command == "merge":
        r, out = _run(["merge", "--out", str(ds)], inputs, tmp_path)
    else:
        r, out = _run(["evaluate", "--dataset", str(ds), "--recognizer", "world", "--out", "{out}"], inputs, tmp_path)
    _assert_clean_failure(r, 1, "000001/001.png", out)
    assert set(_snapshot(ds)) == set(before)  # no temporary or partial file left in the dataset


def test_evaluate_names_a_png_that_is_not_an_image(inputs, tmp_path):
    rend = tmp_path / "rend"
    shutil.copytree(inputs["rend"], rend)
    shutil.copy(inputs["notimg"], rend / "000002" / "000.png")
    r, out = _run(["evaluate", "--dataset", str(rend), "--recognizer", "world", "--groups", "{groups}",
                   "--out", "{out}"], inputs, tmp_path)
    _assert_clean_failure(r, 1, "000002/000.png", out)


# ------------------------------------------------------------------ the operating system says no (exit 1)


def _raise_in_image_save(monkeypatch, exc):
    from PIL import Image

    def fail(self, fp, *a, **k):
        raise exc
    monkeypatch.setattr(Image.Image, "save", fail)


@pytest.mark.parametrize("exc,needle", [
    (OSError(errno.ENOSPC, "No space left on device", "seed0000.png"), "no space left"),
    (OSError(errno.EDQUOT, "Disk quota exceeded", "seed0000.png"), "no space left"),
    (PermissionError(errno.EACCES, "Permission denied", "seed0000.png"), "permission denied"),
    (OSError(errno.EROFS, "Read-only file system", "seed0000.png"), "read-only"),
    (MemoryError(), "out of memory"),
], ids=["disk-full", "quota", "permission", "read-only", "memory"])
def test_os_failures_while_writing_are_one_message_and_leave_nothing(inputs, tmp_path, monkeypatch, exc, needle):
    _raise_in_image_save(monkeypatch, exc)
    r, out = _run(["images", "--network", "world", "--seeds", "0-1", "--outdir", "{out}"], inputs, tmp_path)
    assert r.exit_code == 1 and needle in r.output.lower() and "Traceback" not in r.output, r.output
    assert not any(p.is_file() for p in out.rglob("*")) if out.exists() else True  # no image, no temporary


def test_output_path_through_a_file_is_named(inputs, tmp_path):
    (tmp_path / "afile").write_text("x")
    r = CliRunner().invoke(main, ["images", "--network", "world", "--seeds", "0",
                                  "--outdir", str(tmp_path / "afile" / "sub")])
    assert r.exit_code == 1 and "afile" in r.output and "Traceback" not in r.output, r.output


def test_an_unexpected_error_is_reported_as_a_bug_with_the_details_in_a_file(inputs, tmp_path, monkeypatch):
    import synthface.generator.synthesis as synthesis

    def boom(*a, **k):
        raise ZeroDivisionError("division by zero")
    monkeypatch.setattr(synthesis, "generate_images", boom)
    r, out = _run(["images", "--network", "world", "--seeds", "0", "--outdir", "{out}"], inputs, tmp_path)
    assert r.exit_code == 1 and "bug in synthface" in r.output and "Traceback" not in r.output, r.output
    details = Path(r.output.split("details are in ")[1].split()[0])
    assert "ZeroDivisionError" in details.read_text()
    details.unlink()
    assert not out.exists()


def test_torchs_weights_only_advice_never_reaches_the_user():
    from synthface.weights import scrub_torch_advice

    text = ("Weights only load failed. In PyTorch 2.6, we changed the default value of the `weights_only` argument "
            "in `torch.load` from `False` to `True`. Re-running `torch.load` with `weights_only` set to `False` will "
            "likely succeed, but it can result in arbitrary code execution. Unsupported global: GLOBAL os.system")
    cleaned = scrub_torch_advice(text)
    assert "weights_only" not in cleaned and "False" not in cleaned and "os.system" in cleaned


def test_easydict_answers_no_private_or_dunder_lookup_from_pickle_state():
    from synthface.generator.safe_pickle import EasyDict

    d = EasyDict({"__setstate__": print, "_hidden": 1, "z_dim": 512})
    assert d.z_dim == 512
    for name in ("__setstate__", "_hidden", "__reduce_ex_missing__"):
        with pytest.raises(AttributeError):
            getattr(d, name)


def test_forged_storage_size_is_refused_before_allocation(inputs):
    from synthface.errors import SynthfaceError
    from synthface.weights import declared_storage_bytes, load_torch_file

    data = Path(inputs["huge"]).read_bytes()
    assert declared_storage_bytes(data) == 4 * 10 ** 12 and len(data) < 1000
    with pytest.raises(SynthfaceError, match="declares 4,000,000,000,000 bytes"):
        load_torch_file(inputs["huge"])
    ok = Path(inputs["dir"]) / "legacy_ok.pt"
    assert declared_storage_bytes(ok.read_bytes()) == 60
    assert torch.equal(load_torch_file(ok)["w"], torch.zeros(3, 5))


def test_the_handler_works_in_a_real_process(inputs, tmp_path):
    """The installed entry point (not CliRunner): exit code and stderr as a shell sees them."""
    import subprocess
    import sys

    out = tmp_path / "out"
    p = subprocess.run([sys.executable, "-m", "synthface.cli", "images", "--network", inputs["nanpkl"], "--seeds",
                        "0", "--outdir", str(out)], capture_output=True, text=True, timeout=120)
    assert p.returncode == 1 and "NaN or inf" in p.stderr and "Traceback" not in p.stderr, p.stderr
    assert not out.exists()


def test_a_latent_model_with_nan_is_never_written(inputs, tmp_path):
    from synthface.errors import SynthfaceError
    from synthface.latent import DemographicLatentModel

    m = DemographicLatentModel.load(inputs["model"])
    m.covs_ = m.covs_.copy()
    m.covs_[0, 0, 0, 0] = float("nan")
    with pytest.raises(SynthfaceError, match="NaN or inf in covs"):
        m.save(tmp_path / "m.synthface")
    assert not any(tmp_path.iterdir())
