"""The pretrain experiment (issue 14 item 6): its plumbing at toy size, with stand-ins for the
generator-made sets (b) and (c) so the run stays well under a minute; and the pieces with rules
of their own (quotas, set d's make-up, prior identity selection, configuration errors)."""

import json

import numpy as np
import pytest
import torch

from synthface.errors import SynthfaceError
from synthface.experiments import EXPERIMENTS, get
from synthface.experiments import pretrain as P


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def test_registered():
    assert "pretrain" in EXPERIMENTS
    assert get("pretrain") is P.run


def test_quotas():
    assert P.quotas(10, [1, 1, 1]) == [4, 3, 3]
    # groups 25/15/60 x genders 35/65 over 100 people: 8.75, 16.25, 5.25, 9.75, 21, 39 by largest remainder
    assert P.biased_quotas(100) == [9, 16, 5, 10, 21, 39]
    for n in (6, 17, 180, 1000):
        assert sum(P.biased_quotas(n)) == n


def test_config_errors():
    with pytest.raises(SynthfaceError, match="even"):
        P.make_config(overrides={"ids_per_cell": 5})
    with pytest.raises(SynthfaceError, match="no setting 'epoch'"):
        P.make_config(overrides={"epoch": 3})
    with pytest.raises(SynthfaceError, match="sets"):
        P.make_config(overrides={"sets": ["a", "x"]})
    with pytest.raises(SynthfaceError, match="choose none, basic"):
        P.make_config(overrides={"augment": "heavy"})
    with pytest.raises(SynthfaceError, match="refines labelled variations"):
        P.make_config(overrides={"refine_steps": 5, "variations": "pca"})
    assert P.make_config(overrides={"refine_steps": 5, "augment": "strong"}).refine_steps == 5
    quick = P.make_config(quick=True)
    assert quick.ids_per_cell < P.PretrainConfig().ids_per_cell and quick.epochs <= P.PretrainConfig().epochs


def test_prior_identities_are_distinct_and_seeded():
    from synthface.assets import generator_path
    from synthface.generator import load_generator
    from synthface.identity import load_embedder

    G, emb = load_generator(generator_path(), device="cpu"), load_embedder("world")
    sep = 0.3  # strict, so some candidates are rejected
    seeds, W, imgs, E, visited = P.select_prior_identities(G, emb, 4, sep, seed=0, psi=1.0, noise_mode="const",
                                                           batch=16)
    assert len(seeds) == 4 and imgs.shape == (4, 64, 64, 3) and W.shape == (4, G.w_dim)
    sims = E @ E.T
    assert (sims[np.triu_indices(4, 1)] < sep).all()
    again = P.select_prior_identities(G, emb, 4, sep, seed=0, psi=1.0, noise_mode="const", batch=5)
    np.testing.assert_array_equal(seeds, again[0])  # independent of the batch size
    with pytest.raises(SynthfaceError, match="distinct prior identities"):
        P.select_prior_identities(G, emb, 3, -1.0, seed=0, psi=1.0, noise_mode="const", batch=4, budget=1)


def _stand_in(first, key):
    """A fake generator-made set: balanced renderer people written like the real stages write theirs."""
    def build(cfg, *args):
        from synthface.world import BALANCED, World
        path = args[-2]
        if P._done(path, {"fake": key}):
            return path
        tmp = P._fresh(path)
        names = P.cell_names()
        rows = []
        for c, i, crops in P.render_people(World(seed=1, distribution=BALANCED), first,
                                           [cfg.ids_per_cell] * 6, cfg.images_per_id, 64):
            for k, im in enumerate(crops):
                P._save_png(im, tmp / f"{i}/{k}.png")
                rows.append({"path": f"{i}/{k}.png", "identity": f"{key}{i}", "cell": names[c],
                             "cell_audit": names[c], "rank": i})
        (tmp / "rows.json").write_text(json.dumps(rows))
        return P._finish(tmp, path, {"fake": key})
    return build


def test_plumbing_toy_run(tmp_path, monkeypatch):
    monkeypatch.setattr(P, "build_balanced", lambda cfg, G, path, log, scale=1, reuse_larger=False: _stand_in(5_000_000, "bal")(cfg, path, None))
    monkeypatch.setattr(P, "build_prior", lambda cfg, G, b, path, log: _stand_in(6_000_000, "prior")(cfg, path, None))
    over = {"ids_per_cell": 2, "images_per_id": 3, "bench_ids_per_cell": 4, "bench_images": 4, "epochs": 1,
            "batch": 16, "n_boot": 10, "embedding_dim": 16, "sets": ["a", "b", "c", "d"]}
    res = P.run(tmp_path, overrides=over, log=lambda m: None)
    for f in ("report.md", "report.html", "results.json", "accuracy.png"):
        assert (tmp_path / f).is_file()
    assert "data:image/png;base64," in (tmp_path / "report.html").read_text()
    saved = json.loads((tmp_path / "results.json").read_text())
    assert [r["recogniser"] for r in saved["table"]] == ["world", "a_real", "b_balanced", "c_prior", "d_mixed"]
    assert [r["label"] for r in saved["table"]][1:] == ["(a) real", "(b) balanced", "(c) prior", "(d) mixed"]
    # the same number of identities and images in every set; d is half a, half b
    tr = saved["training"]
    assert {(t["identities"], t["images"]) for t in tr.values()} == {(12, 36)}
    d = (tmp_path / "data" / "d_mixed.csv").read_text().splitlines()[1:]
    assert sum(",real" in line for line in d) == sum(",bal" in line for line in d) == 18
    assert tr["a"]["composition"] == {c: q / 12 for c, q in zip(P.cell_names(), P.biased_quotas(12))}
    assert all(abs(v - 1 / 6) < 1e-9 for v in tr["b"]["composition"].values())
    # benchmark people are used for nothing else
    bench = {json.loads(line)["identity"] for line in (tmp_path / "data" / "benchmark" / "manifest.jsonl").open()}
    real_csv = (tmp_path / "data" / "a_real.csv").read_text().splitlines()[1:]
    train_ids = {int(line.split(",")[1][4:]) for line in real_csv}
    assert len(bench) == 24 and not bench & train_ids
    # the world recogniser reads the benchmark as it should; one-epoch toy nets are far below it
    acc = {r["recogniser"]: r["accuracy_mean"] for r in saved["table"]}
    assert acc["world"] > 0.85 and all(acc[k] < acc["world"] for k in acc if k != "world")
    diffs = saved["paired_differences"]
    assert set(diffs) == {"world", "b_balanced", "c_prior", "d_mixed"}
    lo_hi = diffs["world"]["accuracy_mean"]
    assert lo_hi[1] <= lo_hi[0] <= lo_hi[2] and lo_hi[0] == pytest.approx(acc["world"] - acc["a_real"], abs=1e-9)
    assert res["summary"]["accuracy_mean"]["world"] == round(acc["world"], 4)
    # a second run into the same folder reuses every stage, says so, and scores the same
    again = P.run(tmp_path, overrides=over, log=lambda m: None)
    assert {"data/benchmark", "data/real", "runs/a_real", "runs/d_mixed"} <= set(again["info"]["reused"])
    assert [r["accuracy_mean"] for r in again["table"]] == [r["accuracy_mean"] for r in saved["table"]]
    assert "reused from an earlier run" in (tmp_path / "report.md").read_text()


def test_reduced_variation_sets_render_the_same_people_with_less_pose_and_expression(tmp_path):
    """a50 and a0 hold a's identities and image numbers, rendered with the renderer's pose / expression /
    light variation scaled down: same backgrounds, a still face at strength 0, and only real sets trained."""
    from PIL import Image

    over = {"ids_per_cell": 2, "images_per_id": 3, "bench_ids_per_cell": 4, "bench_images": 4, "epochs": 1,
            "batch": 16, "n_boot": 10, "embedding_dim": 16, "sets": ["a", "a50", "a0"]}
    saved = P.run(tmp_path, overrides=over, log=lambda m: None)
    assert [r["label"] for r in saved["table"]][1:] == ["(a) real", "(a50) real half variation",
                                                      "(a0) real no variation"]
    data = tmp_path / "data"
    assert not (data / "balanced").exists()  # no generator needed for renderer-only sets
    rows = {k: json.loads((data / f / "rows.json").read_text()) for k, f in
            (("a", "real"), ("a50", "real_s50"), ("a0", "real_s0"))}
    assert [(r["identity"], r["path"]) for r in rows["a0"]] == [(r["identity"], r["path"]) for r in rows["a"]]

    def images(folder, ident):
        return np.stack([np.asarray(Image.open(data / folder / r["path"]), np.float32)
                         for r in rows["a"] if r["identity"] == ident])

    spread = {k: [] for k in rows}
    for ident in sorted({r["identity"] for r in rows["a"]}):
        for k, f in (("a", "real"), ("a50", "real_s50"), ("a0", "real_s0")):
            im = images(f, ident)
            spread[k].append(np.abs(im[:, 40:80, 30:82] - im[:1, 40:80, 30:82]).mean())  # the face's centre
    assert np.mean(spread["a0"]) < np.mean(spread["a50"]) < np.mean(spread["a"])


def test_a_larger_balanced_set_serves_a_smaller_request_only_with_the_same_settings(tmp_path):
    from synthface.experiments import pretrain_data as D

    key = {"stage": "balanced", "ids_per_cell_written": 50, "ids_per_cell": 50, "seed": 0}
    assert not D._holds_more(tmp_path, key)
    (tmp_path / ".done.json").write_text(json.dumps({**key, "ids_per_cell_written": 250}))
    assert D._holds_more(tmp_path, key) and not D._done(tmp_path, key)
    assert not D._holds_more(tmp_path, {**key, "ids_per_cell_written": 300})   # holds fewer than asked
    assert not D._holds_more(tmp_path, {**key, "seed": 1})                     # other settings


def test_scale_sets_take_the_first_identities_of_each_cell(tmp_path):
    """b2/b5 are the first 2x/5x identities per cell of the balanced selection; e1/e2/e5 add all of a."""
    names = P.cell_names()
    for sub, prefix, n_per_cell in (("real", "real", 4), ("balanced", "bal", 10)):
        rows = [{"path": f"{c}-{i}.png", "identity": f"{prefix}{100 * c + i}", "cell": names[c]}
                for c in range(6) for i in range(n_per_cell)]
        (tmp_path / sub).mkdir()
        (tmp_path / sub / "rows.json").write_text(json.dumps(rows))
    assert [P.set_label(k, P.SETS[k][0]) for k in ("a", "b2", "e5")] == ["(a) real", "(b2) balanced 2x",
                                                                          "(e5) real + b5"]
    cfg = P.PretrainConfig(ids_per_cell=2, sets=("a", "b", "b2", "b5", "d", "e1", "e2", "e5"))
    sets = P.training_sets(cfg, tmp_path)
    ids = {k: {r["identity"] for r in v} for k, v in sets.items()}
    assert [len(ids[k]) for k in ("a", "b", "b2", "b5")] == [24, 12, 24, 60]
    assert ids["b"] < ids["b2"] < ids["b5"]
    # the first identities of each cell, in selection order (bal{100c + i}, i < n)
    assert ids["b2"] == {f"bal{100 * c + i}" for c in range(6) for i in range(4)}
    for k, b in (("e1", "b"), ("e2", "b2"), ("e5", "b5")):
        assert ids[k] == ids["a"] | ids[b] and len(sets[k]) == len(sets["a"]) + len(sets[b])
    assert len(ids["d"]) == 12 and sum(i.startswith("bal") for i in ids["d"]) == 6


def test_only_the_pretrain_experiment_asks_for_more_balanced_identities(tmp_path, monkeypatch):
    """Experiments that borrow set (b) (SensitiveNets, SAN, the CID identity set) get ids_per_cell per
    cell by default; pretrain.run asks build_balanced for the scale of its largest set (b5: 5x)."""
    import inspect

    from synthface.experiments import pretrain_data as D

    assert inspect.signature(D.build_balanced).parameters["scale"].default == 1
    asked = []

    def stop(cfg, G, path, log, scale=1, reuse_larger=False):
        asked.append(scale)
        raise StopIteration

    monkeypatch.setattr(P, "build_benchmark", lambda cfg, path, log: path)
    monkeypatch.setattr(P, "build_real", lambda cfg, path, log, strength=1.0: path)
    monkeypatch.setattr(P, "build_balanced", stop)
    for sets, scale in ((["a", "b", "d"], 1), (["b", "b2"], 2), (["a", "b5", "e5"], 5), (None, 5)):
        with pytest.raises(StopIteration):
            P.run(tmp_path, overrides={"ids_per_cell": 4, **({"sets": sets} if sets else {})}, log=lambda m: None)
        assert asked[-1] == scale, sets
