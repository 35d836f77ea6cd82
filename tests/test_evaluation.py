"""Evaluation: pair protocol, per-group metrics against direct computation, robustness, the report."""

import base64
import io
import json
import re
import shutil
import subprocess

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from synthface.cli import main
from synthface.errors import SynthfaceError
from synthface.evaluation import group_metrics, make_pairs, pair_scores
from synthface.evaluation.pairs import Items
from synthface.world import World, take


def fake_items(n_groups=2, ids=8, imgs=4):
    paths, ident, group = [], [], []
    for g in range(n_groups):
        for i in range(ids):
            for k in range(imgs):
                paths.append(f"g{g}/{i}/{k}.png")
                ident.append(g * ids + i)
                group.append(f"g{g}")
    return Items(None, paths, np.array(ident), group)


def test_pairs_are_balanced_identity_disjoint_within_group_and_seeded():
    items = fake_items()
    pairs = make_pairs(items, genuine=40, impostor=40, folds=4, seed=1)
    assert pairs == make_pairs(items, genuine=40, impostor=40, folds=4, seed=1)
    ident = dict(zip(items.paths, items.identity))
    grp = dict(zip(items.paths, items.group))
    fold_of_id = {}
    for p in pairs:
        a, b = ident[p["a"]], ident[p["b"]]
        assert (a == b) == bool(p["genuine"]) and grp[p["a"]] == grp[p["b"]] == p["group"]
        for i in (a, b):
            assert fold_of_id.setdefault(i, p["fold"]) == p["fold"]  # an identity lives in one fold
    for g in ("g0", "g1"):
        assert sum(p["genuine"] for p in pairs if p["group"] == g) == 40
        assert sum(1 - p["genuine"] for p in pairs if p["group"] == g) == 40
    keys = [(p["a"], p["b"]) for p in pairs]
    assert len(set(keys)) == len(keys)


def test_group_metrics_agree_with_direct_computation():
    rng = np.random.default_rng(0)
    pairs, scores = [], []
    for g, (mg, mi) in {"a": (0.7, 0.1), "b": (0.5, 0.2)}.items():
        for fold in range(5):
            for gen, m in ((1, mg), (0, mi)):
                for _ in range(60):
                    pairs.append({"group": g, "genuine": gen, "fold": fold})
                    scores.append(rng.normal(m, 0.12))
    s = np.array(scores)
    r = group_metrics(s, pairs, target_fmr=1e-2, n_boot=50)
    y = np.array([p["genuine"] for p in pairs], bool)
    g = np.array([p["group"] for p in pairs])
    gl = r["global"]["0.01"]
    t = gl["threshold"]
    assert np.mean(s[~y] >= t) <= 0.01
    for grp in "ab":
        assert gl["fmr"][grp] == np.mean(s[(g == grp) & ~y] >= t)
        assert gl["fnmr"][grp] == np.mean(s[(g == grp) & y] < t)
    a, b = gl["fmr"], gl["fnmr"]
    assert gl["fdr"] == pytest.approx(1 - 0.5 * abs(a["a"] - a["b"]) - 0.5 * abs(b["a"] - b["b"]))
    assert r["groups"]["a"]["accuracy"] > r["groups"]["b"]["accuracy"]  # a separates better
    lo, hi = r["groups"]["b"]["accuracy_ci95"]
    assert lo <= r["groups"]["b"]["accuracy"] <= hi
    assert r["accuracy_std"] == pytest.approx(np.std([r["groups"][k]["accuracy"] for k in "ab"], ddof=1))


def test_small_groups_are_marked_and_bad_embeddings_refused():
    pairs = [{"group": "a", "genuine": k % 2, "fold": k % 3} for k in range(200)]
    pairs += [{"group": "b", "genuine": k % 2, "fold": 0} for k in range(10)]
    pairs += [{"group": "c", "genuine": k % 2, "fold": k % 3} for k in range(200)]
    s = np.random.default_rng(0).normal(size=len(pairs)) + np.array([p["genuine"] for p in pairs])
    r = group_metrics(s, pairs, n_boot=10)
    assert "b" in r["skipped"] and set(r["groups"]) == {"a", "c"}
    with pytest.raises(SynthfaceError, match="mismatched shapes"):
        pair_scores({"x": np.ones(4), "y": np.ones(5)}, [{"a": "x", "b": "y"}])
    with pytest.raises(SynthfaceError, match="fewer than two groups"):
        group_metrics(s[:200], pairs[:200], n_boot=10)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """A plain ImageFolder of aligned renderer crops, two groups, with a groups CSV."""
    from synthface.dataset.writer import crop112
    root = tmp_path_factory.mktemp("if")
    w = World(seed=0)
    rows = []
    for g in range(2):
        ident = w.identities(range(930000 + 100 * g, 930000 + 100 * g + 12), group=2 * g, gender=g)
        imgs = crop112(w.render(take(ident, np.repeat(np.arange(12), 4)), np.tile(np.arange(4), 12), size=64))
        for i in range(12):
            name = f"{g}{i:04d}"
            (root / "imgs" / name).mkdir(parents=True)
            for k in range(4):
                Image.fromarray(imgs[4 * i + k]).save(root / "imgs" / name / f"{k}.png")
            rows.append(f"{name},{'g' + str(g)}")
    (root / "groups.csv").write_text("identity,group\n" + "\n".join(rows) + "\n")
    return root


def test_evaluate_cli_on_an_imagefolder_writes_a_self_contained_report(folder, tmp_path):
    out = tmp_path / "rep"
    args = ["evaluate", "--dataset", str(folder / "imgs"), "--groups", str(folder / "groups.csv"), "--recognizer",
            "world", "--recognizer", "world-audit", "--out", str(out), "--genuine", "60", "--impostor", "60",
            "--folds", "5", "--bootstrap", "20"]
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 0, r.output
    m = json.loads((out / "metrics.json").read_text())
    assert set(m["recognisers"]) == {"world", "world-audit"}
    assert all(set(v["groups"]) == {"g0", "g1"} for v in m["recognisers"].values())
    assert m["recognisers"]["world"]["accuracy_mean"] > 0.9  # renderer faces, held-out identities
    html = (out / "report.html").read_text()
    srcs = re.findall(r'<img[^>]*src="([^"]+)"', html)
    assert len(srcs) == 8 and all(s.startswith("data:image/png;base64,") for s in srcs)
    for s in srcs:
        Image.open(io.BytesIO(base64.b64decode(s.split(",", 1)[1]))).verify()
    assert "http" not in html and html.count("<table>") >= 5
    # the saved pair list reproduces the metrics
    r = CliRunner().invoke(main, args[:-8] + ["--out", str(tmp_path / "rep2"), "--pairs", str(out / "pairs.csv"),
                                               "--bootstrap", "20"])
    assert r.exit_code == 0, r.output
    m2 = json.loads((tmp_path / "rep2" / "metrics.json").read_text())
    assert m2["recognisers"]["world"]["groups"] == m["recognisers"]["world"]["groups"]
    # errors the user can act on
    (folder / "bad.csv").write_text("identity,group\n00000,g0\n")
    r = CliRunner().invoke(main, args[:3] + ["--groups", str(folder / "bad.csv"), "--out", str(tmp_path / "x"),
                                              "--recognizer", "world"])
    assert r.exit_code != 0 and "has no group for identities" in r.output


@pytest.mark.skipif(shutil.which("chromium") is None, reason="needs a headless chromium")
def test_report_renders_in_a_real_browser(folder, tmp_path):
    out = tmp_path / "rep"
    r = CliRunner().invoke(main, ["evaluate", "--dataset", str(folder / "imgs"), "--groups", str(folder / "groups.csv"),
                                  "--recognizer", "world", "--out", str(out), "--folds", "5", "--bootstrap", "10"])
    assert r.exit_code == 0, r.output
    shot = tmp_path / "shot.png"
    subprocess.run(["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                    "--window-size=1100,2600", f"--screenshot={shot}", (out / "report.html").as_uri()],
                   capture_output=True, timeout=120, check=True)
    px = np.asarray(Image.open(shot).convert("RGB"), np.float32)
    # the plots are there: many coloured pixels far below the first screen of tables
    lower = px[900:]
    colourful = (lower.max(2) - lower.min(2)) > 60
    assert colourful.mean() > 0.005
