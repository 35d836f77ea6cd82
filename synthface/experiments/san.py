"""The SAN experiment (issue 17, item 4): do Semi-Adversarial Networks trained on synthface's balanced
synthetic identities hide gender from classifiers they never saw, on faces they never saw, while an unseen
matcher still matches them?

Data (demo world, seed 0):
    train  a synthface balanced identity dataset from the demo generator (the demo's pipeline:
           experiments.pretrain_data.build_balanced), written as a dataset with gender labels
    test   balanced renderer people (TEST_FIRST+, a range no model, generator or other experiment uses),
           never used in training
    aux    (default auxiliaries) balanced renderer people from AUX_FIRST+, disjoint from the test people and
           from every model, generator and other experiment: the "real faces" the auxiliaries learn gender on
Auxiliary (seen) networks: gender classifiers trained here with `synthface train attribute`'s trainer (residual
networks by default, aux_backbone), differing as
the ensemble paper's do (seed; augmentation; over-sampling of one group): by default on the renderer people
above (aux_source="renderer", the strong auxiliaries: the paper's are trained on real faces too), or on the
synthetic train set (aux_source="synthetic", the weak ones of the first runs), or given specs
(aux_classifiers); the world recogniser as the matcher. Judges never seen in training: the audit attribute classifier
(world-audit), the world attribute classifier (ONNX), insightface's genderage model of the demo pack (the same
network as the world attribute classifier, run through the genderage labeller), a fresh logistic regression
on the audit recogniser's embeddings (sklearn:world-audit); the audit recogniser as the unseen matcher (the
world recogniser, seen in training, is reported as an optimistic reference).

Conditions: the single SAN with the same prototype (a control: reconstruction alone), with the opposite
prototype (the privacy output), and the ensemble's released output (synthface.methods.san_ensemble's rule).
Done when (spec §6): every unseen classifier's error on the opposite-prototype output is >= 20 points above its
error on the originals, while the unseen matcher's TMR at FMR 1e-3 drops by <= 10 points.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from ..errors import SynthfaceError
from ..fileio import atomic_write, cache_key, file_sha256, write_json_atomic

TEST_FIRST = 5_000_000
AUX_FIRST = 7_000_000   # renderer people the default auxiliary classifiers learn on (up to 7,600,000)
AUX_SOURCES = ("renderer", "synthetic")


@dataclass
class SANExperimentConfig:
    world_seed: int = 0
    render_size: int = 64
    ids_per_cell: int = 50            # training identities per cell (synthface balanced dataset)
    images_per_id: int = 8
    bank_n: int = 8000
    variation_budget: int = 60
    variation_strength: float = 0.5
    refine_steps: int = 0             # the training set's variations refined through G (identity.refine; issue 25)
    test_ids_per_cell: int = 50       # renderer people per cell for judging
    test_images: int = 5
    size: int = 112                   # the SAN's side (synthface crops are 112)
    rgb: bool = True                  # RGB model: the judges see colour faces (a grey output alone confuses them)
    enc_channels: list = field(default_factory=lambda: [8, 12])
    dec_channels: list = field(default_factory=lambda: [256, 128])
    skip_input: bool = False          # residual skip: output added to the input's logit (methods.san; False = official)
    pretrain_epochs: int = 1
    epochs: int = 20
    matcher_start: int = 5
    gender_weight: float = 1.0
    rec_weight: float = 1.0
    matcher_weight: float = 8.0
    # gender term on the matcher's descriptors (methods.san; 0 = as published): its logistic probe is learnt on
    # the auxiliaries' faces (the renderer people by default), so the fresh judges stay unseen
    embedding_weight: float = 0.0
    # whose descriptors that term reads: "aux" a recogniser trained here on the auxiliaries' renderer people
    # (the world recogniser holds gender only weakly: a linear probe reads it at ~0.69 on renderer people, the
    # unseen audit recogniser at ~0.86), "matcher" the SAN's matcher, or any matcher spec
    embedding_matcher: str = "aux"
    matcher_target: str = "mean"      # "each": every output's descriptor held to the original's (methods.san)
    aux_recognizer_epochs: int = 12
    lr: float = 2e-4
    batch: int = 8
    matcher: str = "world-recognizer"
    members: int = 3                  # ensemble size; member 0 is the single SAN
    rule: str = "confound"
    aux_classifiers: list = field(default_factory=list)  # specs to use instead of training CNNs here
    aux_source: str = "renderer"      # what the CNNs trained here learn on: renderer people or the synthetic set
    aux_ids_per_cell: int = 150       # renderer people per cell for the auxiliaries (aux_source="renderer")
    aux_images: int = 4
    aux_epochs: int = 10
    aux_size: int = 64
    # the auxiliaries' network: the world's residual kind (its SAN transfers to unseen classifiers ten times as far
    # as against the SmallCNN, "small": docs/experiments.md) or any other train-attribute backbone
    aux_backbone: str = "world-recognizer"
    oversample_group: str = "group1"  # the third auxiliary classifier sees this group's faces 3 times
    seed: int = 0
    threads: int = 1


QUICK = {"ids_per_cell": 10, "images_per_id": 5, "bank_n": 2000, "test_ids_per_cell": 20, "test_images": 4,
         "size": 64, "dec_channels": [64, 32], "epochs": 6, "matcher_start": 2, "lr": 1e-3, "aux_epochs": 5,
         "aux_ids_per_cell": 30}


def make_config(quick: bool = False, overrides: Optional[dict] = None) -> SANExperimentConfig:
    known = {f.name for f in fields(SANExperimentConfig)}
    values = {**(QUICK if quick else {}), **(overrides or {})}
    bad = sorted(set(values) - known)
    if bad:
        raise SynthfaceError(f"unknown setting(s) {', '.join(bad)}; the SAN experiment has {', '.join(sorted(known))}")
    cfg = SANExperimentConfig(**values)
    if cfg.aux_source not in AUX_SOURCES:
        raise SynthfaceError(f"aux_source {cfg.aux_source!r}: choose {' or '.join(AUX_SOURCES)}")
    from ..nets import ARCHS
    backbones = ("small",) + tuple(a for a in ARCHS if a != "world-attributes")  # the ones train attribute builds
    if cfg.aux_backbone not in backbones:
        raise SynthfaceError(f"aux_backbone {cfg.aux_backbone!r}: choose one of {', '.join(backbones)}")
    if not 1 <= cfg.aux_ids_per_cell <= 100_000:
        raise SynthfaceError(f"aux_ids_per_cell must be 1..100000 (one cell's identity range), "
                             f"got {cfg.aux_ids_per_cell}")
    return cfg


def _pretrain_cfg(cfg: SANExperimentConfig):
    """The pretrain builder's settings for set b alone (build_balanced writes ids_per_cell per cell)."""
    from .pretrain_data import PretrainConfig
    return PretrainConfig(world_seed=cfg.world_seed, render_size=cfg.render_size, ids_per_cell=cfg.ids_per_cell,
                          images_per_id=cfg.images_per_id, bank_n=cfg.bank_n, variation_budget=cfg.variation_budget,
                          variation_strength=cfg.variation_strength, refine_steps=cfg.refine_steps, seed=cfg.seed)


def _write_dataset(rows: list[dict], path: Path) -> Path:
    atomic_write(path / "manifest.jsonl", lambda f: f.write("".join(json.dumps(r) + "\n" for r in rows).encode()))
    return path


def build_train(cfg: SANExperimentConfig, balanced: Path, path: Path, log: Callable) -> Path:
    """The balanced set as a dataset folder: imagefolder/<identity>/<k>.png, manifest with cell and gender."""
    from .pretrain_data import _done, _finish, _fresh
    key = {"stage": "san-train", **json.loads((balanced / ".done.json").read_text())}
    if _done(path, key):
        return path
    tmp = _fresh(path)
    rows = []
    for r in json.loads((balanced / "rows.json").read_text()):
        rel = f"imagefolder/{r['identity']}/{Path(r['path']).name}"
        (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(balanced / r["path"], tmp / rel)
        rows.append({"path": rel, "identity": r["identity"], "cell": r["cell"], "group": r["cell"].split("/")[0],
                     "gender": r["cell"].split("/")[1]})
    _write_dataset(rows, tmp)
    log(f"train set: {len(rows)} images of {len({r['identity'] for r in rows})} synthface identities")
    return _finish(tmp, path, key)


def build_test(cfg: SANExperimentConfig, path: Path, log: Callable) -> Path:
    """Balanced renderer people from TEST_FIRST, as ArcFace crops in a dataset folder."""
    from .pretrain_data import build_renderer_set
    key = {"stage": "san-test", "first": TEST_FIRST, **{k: getattr(cfg, k) for k in (
        "world_seed", "render_size", "test_ids_per_cell", "test_images")}}
    return build_renderer_set(path, key, cfg.world_seed, TEST_FIRST, cfg.test_ids_per_cell, cfg.test_images,
                              cfg.render_size, log, "test set", gender_column=True)


def build_aux_set(cfg: SANExperimentConfig, path: Path, log: Callable) -> Path:
    """Balanced renderer people from AUX_FIRST (disjoint from the test people) for the auxiliary classifiers."""
    from .pretrain_data import build_renderer_set
    key = {"stage": "san-aux", "first": AUX_FIRST, **{k: getattr(cfg, k) for k in (
        "world_seed", "render_size", "aux_ids_per_cell", "aux_images")}}
    return build_renderer_set(path, key, cfg.world_seed, AUX_FIRST, cfg.aux_ids_per_cell, cfg.aux_images,
                              cfg.render_size, log, "auxiliary classifiers' renderer set", gender_column=True)


class _Oversampled:
    """A training view with one group's items repeated (the ensemble paper's over-sampling)."""

    def __init__(self, view, items):
        self.view, self.items = view, list(items)

    def __len__(self):
        return len(self.items)

    def set_epoch(self, epoch):
        self.view.set_epoch(epoch)

    def __getitem__(self, i):
        return self.view[self.items[i]]


def _oversampler(group: str) -> Callable:
    def weigh(view):
        grp = [str(r.get("group") or str(r.get("cell", "")).split("/")[0]) for r in view.base.rows_]
        items = [i for i, g in enumerate(grp) for _ in range(3 if g == group else 1)]
        return _Oversampled(view, items), {"scheme": f"oversample {group} x3"}
    return weigh


def _aux_config(cfg: SANExperimentConfig, data: Path, run: Path, k: int):
    from ..train.attribute import AttributeConfig
    return AttributeConfig(data=str(data), out=str(run), task="gender", backbone=cfg.aux_backbone, size=cfg.aux_size,
                           epochs=cfg.aux_epochs, batch=32, held_out=0.1, augment=k != 1, seed=cfg.seed + k,
                           device="cpu")


def train_aux(cfg: SANExperimentConfig, data: Path, runs: Path, log: Callable) -> list[dict]:
    """Auxiliary gender classifiers trained on `data` (the renderer aux set or the synthetic train set, per
    aux_source): k=0 seed 0 with augmentation, k=1 seed 1 without, k=2 seed 2 with `oversample_group` three
    times; cycled when there are more members. Each is kept in runs/aux-<source><k> with its settings and
    reused only when they match."""
    from ..train.attribute import train_attribute
    if cfg.aux_classifiers:
        return [{"spec": str(s), "variant": "given", "val_accuracy": None} for s in cfg.aux_classifiers]
    out = []
    for k in range(max(1, min(cfg.members, 3))):
        run = runs / f"aux-{cfg.aux_source}{k}"
        variant = ["seed 0, flips", "seed 1, no augmentation", f"seed 2, {cfg.oversample_group} x3"][k]
        acfg = _aux_config(cfg, data, run, k)
        settings = cache_key({**asdict(acfg), "oversample": cfg.oversample_group if k == 2 else None}, runs.parent)
        side = run / "aux_settings.json"
        if not ((run / "results.json").is_file() and side.is_file() and json.loads(side.read_text()) == settings):
            shutil.rmtree(run, ignore_errors=True)
            train_attribute(acfg, weigh=_oversampler(cfg.oversample_group) if k == 2 else None, log=lambda m: None)
            write_json_atomic(side, settings)
        res = json.loads((run / "results.json").read_text())
        log(f"auxiliary gender classifier {k} ({cfg.aux_source} faces, {variant}): held-out accuracy "
            f"{res['val_accuracy']:.3f}")
        out.append({"spec": str(run), "variant": variant, "source": cfg.aux_source,
                    "val_accuracy": res["val_accuracy"]})
    return out


def _san_params(cfg: SANExperimentConfig, seed: int, aux_spec: str) -> dict:
    return dict(size=cfg.size, rgb=cfg.rgb, layout="arcface", enc_channels=list(cfg.enc_channels),
                dec_channels=list(cfg.dec_channels), skip_input=cfg.skip_input, gender_classifier=aux_spec,
                matcher=cfg.matcher,
                pretrain_epochs=cfg.pretrain_epochs, epochs=cfg.epochs, matcher_start=cfg.matcher_start,
                gender_weight=cfg.gender_weight, rec_weight=cfg.rec_weight, matcher_weight=cfg.matcher_weight,
                embedding_weight=cfg.embedding_weight, matcher_target=cfg.matcher_target, lr=cfg.lr,
                batch_size=cfg.batch, augment=True, seed=seed, device="cpu")


def aux_recognizer(cfg: SANExperimentConfig, data: Path, runs: Path, log: Callable) -> Optional[str]:
    """The embedding term's recogniser as a matcher spec: with embedding_matcher "aux", one trained here on
    the auxiliaries' people (the pretrain experiment's recipe: world-recognizer backbone, 128-d ArcFace, strong
    augmentation), kept in runs/aux-recognizer and reused when its settings match; None for the SAN's matcher."""
    if cfg.embedding_weight <= 0 or cfg.embedding_matcher == "matcher":
        return None
    if cfg.embedding_matcher != "aux":
        return cfg.embedding_matcher
    from ..train.recognition import RecognitionConfig, train_recognition
    from .pretrain_data import PretrainConfig
    run = runs / "aux-recognizer"
    pc = PretrainConfig()  # the pretrain experiment's recipe, one place
    rc = RecognitionConfig(data=str(data), out=str(run), backbone=pc.backbone, loss=pc.loss, margin=pc.margin,
                           scale=pc.scale, embedding_dim=pc.embedding_dim, epochs=cfg.aux_recognizer_epochs,
                           batch=pc.batch, lr=pc.lr, weight_decay=pc.weight_decay, held_out=pc.held_out,
                           augment=pc.augment, seed=cfg.seed, device="cpu")
    side, key = run / "aux_settings.json", cache_key(asdict(rc), runs.parent)
    if not ((run / "backbone.safetensors").is_file() and side.is_file()
            and json.loads(side.read_text()) == key):
        shutil.rmtree(run, ignore_errors=True)
        res = train_recognition(rc, log=lambda m: None, progress=False)
        write_json_atomic(side, key)
        log(f"auxiliary recogniser for the embedding term: held-out verification accuracy "
            f"{res['val_accuracy']:.3f}")
    return f"torch:{run / 'backbone.safetensors'}"


def embedding_probe(cfg: SANExperimentConfig, data: Path, runs: Path, log: Callable) -> Optional[dict]:
    """The gender probe of the embedding term (embedding_weight > 0): a logistic regression on the matcher's
    descriptors of the auxiliaries' faces, with its accuracy on a fifth of their people held out; kept in
    runs/embedding_probe.json and reused when its settings match. None when the term is off."""
    if cfg.embedding_weight <= 0:
        return None
    from sklearn.linear_model import LogisticRegression

    from ..methods.san import descriptors, fit_embedding_probe
    from ..methods.san_aux import load_matcher
    from ..methods.san_privacy import face_table, read_images
    spec = aux_recognizer(cfg, data, runs, log) or cfg.matcher
    settings = {"data": str(data), "matcher": spec, "size": cfg.size, "rgb": cfg.rgb, "seed": cfg.seed}
    if spec.startswith("torch:") and Path(spec[6:]).is_file():  # a retrained recogniser is a new probe
        settings["weights_sha256"] = file_sha256(Path(spec[6:]))
    settings = cache_key(settings, runs.parent)
    path = runs / "embedding_probe.json"
    if path.is_file() and json.loads(path.read_text())["settings"] == settings:
        return {**json.loads(path.read_text()), "matcher": spec}  # the spec as it is here, if the folder moved
    t = face_table(data)
    images, codes = read_images(t["root"], t["paths"], cfg.size), np.asarray(t["gender"])
    mat = load_matcher(spec, "arcface")
    held = np.isin(t["identity"], np.unique(t["identity"])[::5])  # every fifth person
    D = descriptors(mat, images, cfg.rgb)
    acc = float(LogisticRegression(C=1.0, max_iter=2000).fit(D[~held], codes[~held]).score(D[held], codes[held]))
    coef, intercept = fit_embedding_probe(mat, images, codes, cfg.rgb, cfg.seed)
    probe = {"settings": settings, "coef": coef.tolist(), "intercept": intercept, "held_out_accuracy": acc,
             "images": len(images), "matcher": spec}
    write_json_atomic(path, probe)
    log(f"embedding gender probe on {spec}'s descriptors of {len(images)} auxiliary faces: held-out "
        f"accuracy {acc:.3f}")
    return probe


def train_sans(cfg: SANExperimentConfig, train: Path, aux: list[dict], runs: Path, log: Callable,
               probe: Optional[dict] = None):
    """(single SAN, ensemble): member i trains against aux[i % len(aux)] with seed + i; member 0 is the single
    SAN. Each member is kept as runs/member{i}.san with its settings, and reused when they match. probe: the
    embedding term's (embedding_probe), given to every member."""
    from ..methods.san import SemiAdversarialNet
    from ..methods.san_ensemble import SANEnsemble
    from ..methods.san_privacy import face_table, read_images
    t = face_table(train)
    images = read_images(t["root"], t["paths"], cfg.size)
    members, seconds = [], []
    for i in range(cfg.members):
        params = _san_params(cfg, cfg.seed + i, aux[i % len(aux)]["spec"])
        side_settings = cache_key({**params, **({"probe": probe["settings"]} if probe else {})}, runs.parent)
        path, side = runs / f"member{i}.san", runs / f"member{i}.json"
        if path.is_file() and side.is_file() and json.loads(side.read_text()) == side_settings:
            m = SemiAdversarialNet.load(path)
        else:
            log(f"training SAN member {i} against auxiliary classifier {i % len(aux)} ({len(images)} faces, "
                f"{cfg.size}px)")
            m = SemiAdversarialNet(**params).fit(
                images, t["gender"], log=lambda s: None,
                embedding_probe=(np.asarray(probe["coef"], np.float32), probe["intercept"]) if probe else None,
                embedding_matcher=probe["matcher"] if probe else None)
            m.save(path)
            write_json_atomic(side, side_settings)
        last = [h for h in m.history_ if h["stage"] == "san"][-1]
        log(f"member {i}: {m.fit_seconds_:.0f}s; last epoch gender CE same {last['gender_same']:.3f} opposite "
            f"{last['gender_opposite']:.3f}, L1 {last['rec']:.4f}, match {last['match']:.4f}")
        members.append(m)
        seconds.append(m.fit_seconds_)
    ens = SANEnsemble(cfg.members, base=_san_params(cfg, cfg.seed, aux[0]["spec"]),
                      classifiers=[a["spec"] for a in aux], rule=cfg.rule, seed=cfg.seed)
    ens.members_ = members
    ens.save(runs / "ensemble.san")
    members[0].save(runs / "single.san")
    return members[0], ens, seconds


def judges() -> tuple[list[str], list[str]]:
    from ..assets import asset
    return (["world-audit", "world", f"genderage:{asset('pack')}", "sklearn:world-audit"], ["world-audit", "world"])


def evaluate_conditions(cfg: SANExperimentConfig, test: Path, single, ens, aux: list[dict], out: Path,
                        log: Callable) -> dict:
    """Perturb the test set under each condition and judge it (synthface.methods.san_privacy)."""
    from ..methods.san_privacy import evaluate_privacy, perturb_dataset, write_privacy_report
    classifiers, recognisers = judges()
    aux_specs = [a["spec"] for a in aux if a["spec"] not in classifiers]
    conditions = {"single_same": (single, "same"), "single_opposite": (single, "opposite"),
                  "ensemble": (ens, "opposite")}
    res = {}
    for name, (model, proto) in conditions.items():
        t0 = time.perf_counter()
        pert = out / "perturbed" / name
        shutil.rmtree(pert, ignore_errors=True)
        perturb_dataset(model, test, pert, proto)
        r = evaluate_privacy(test, pert, classifiers + aux_specs, recognisers, seed=cfg.seed)
        write_privacy_report(r, out / "privacy" / name)
        r["seconds"] = time.perf_counter() - t0
        res[name] = r
        log(f"{name}: " + "; ".join(f"{_short(k, aux)} error {100 * v['error_original']:.1f} -> "
                                    f"{100 * v['error_perturbed']:.1f} %" for k, v in r["classifiers"].items())
            + "; " + "; ".join(f"{k} TMR@1e-3 {_pct(v['original']['tmr@0.001'])} -> "
                               f"{_pct(v['perturbed']['tmr@0.001'])} %" for k, v in r["matchers"].items()))
    return res


# judges that are the same network as an auxiliary classifier (the world's ONNX labeller, the pack's genderage
# model and the torch world-attributes / world-genderage nets are one network; world-audit is the audit net)
_SAME_NET = {"world-attributes": ("world", "genderage:"), "world-genderage": ("world", "genderage:"),
             "world-audit-attributes": ("world-audit",)}


def seen(spec: str, aux: list[dict]) -> bool:
    for a in aux:
        if spec == a["spec"] or any(spec == p or (p.endswith(":") and spec.startswith(p))
                                    for p in _SAME_NET.get(a["spec"], ())):
            return True
    return False


def _short(spec: str, aux: list[dict]) -> str:
    for k, a in enumerate(aux):
        if spec == a["spec"]:
            return f"aux{k} (seen)" if a["variant"] != "given" else f"{spec} (seen)"
    name = "genderage (pack)" if spec.startswith("genderage:") else spec
    return name + (" (seen)" if seen(spec, aux) else "")


def _pct(v) -> str:
    return "-" if v is None else f"{100 * v:.1f}"


def verdict(res: dict, aux: list[dict], condition: str = "single_opposite") -> dict:
    """The done-when check on one condition: unseen classifiers' error increase >= 20 points, unseen matcher
    (world-audit) TMR@1e-3 drop <= 10 points."""
    r = res[condition]
    inc = {k: v["error_increase"] for k, v in r["classifiers"].items() if not seen(k, aux)}
    m = r["matchers"]["world-audit"]
    o, p = m["original"]["tmr@0.001"], m["perturbed"]["tmr@0.001"]
    drop = None if o is None or p is None else o - p
    # Error rates are counts over the test images, so a difference that is exactly 20 points can come out as
    # 0.19999999999999998 in floating point; compare with a tolerance far below one image's share.
    eps = 1e-9
    privacy = min(inc.values()) >= 0.20 - eps
    utility = drop is not None and drop <= 0.10 + eps
    return {"condition": condition, "error_increase": inc, "min_error_increase": min(inc.values()),
            "tmr_drop": drop, "privacy_met": privacy, "utility_met": utility, "met": privacy and utility}


def plot(res: dict, aux: list[dict]) -> bytes:
    import io

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    conds = list(res)
    specs = list(res[conds[0]]["classifiers"])
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(12, 4.2), gridspec_kw={"width_ratios": [3, 1.4]})
    w = 0.8 / len(conds)
    for j, c in enumerate(conds):
        a1.bar(np.arange(len(specs)) + j * w, [100 * res[c]["classifiers"][s]["error_perturbed"] for s in specs], w,
               label=c)
    a1.plot(np.arange(len(specs)) + 0.4 - w / 2, [100 * res[conds[0]]["classifiers"][s]["error_original"]
                                                  for s in specs], "k_", ms=28, mew=2, label="originals")
    a1.set_xticks(np.arange(len(specs)) + 0.4 - w / 2, [_short(s, aux).replace("sklearn:", "logreg on\n")
                                                        for s in specs], fontsize=8)
    a1.axhline(50, color="grey", ls=":", lw=1)
    a1.set_ylabel("gender classification error (%)")
    a1.legend(fontsize=8)
    mats = list(res[conds[0]]["matchers"])
    for j, c in enumerate(conds):
        a2.bar(np.arange(len(mats)) + j * w, [100 * (res[c]["matchers"][m]["perturbed"]["tmr@0.001"] or 0)
                                              for m in mats], w, label=c)
    a2.plot(np.arange(len(mats)) + 0.4 - w / 2, [100 * (res[conds[0]]["matchers"][m]["original"]["tmr@0.001"] or 0)
                                                 for m in mats], "k_", ms=28, mew=2)
    a2.set_xticks(np.arange(len(mats)) + 0.4 - w / 2, [m + (" (seen)" if m == "world" else "") for m in mats])
    a2.set_ylabel("TMR at FMR 1e-3 (%), original gallery")
    a2.set_ylim(0, 105)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return buf.getvalue()


def _aux_line(k: int, a: dict, cfg: dict) -> str:
    if a["val_accuracy"] is None:
        return f"aux{k}: {a['spec']}"
    src = a.get("source", "synthetic")
    on = (f"{6 * cfg['aux_ids_per_cell']} renderer people x {cfg['aux_images']} images (identities {AUX_FIRST:,}+, "
          f"disjoint from the test people)" if src == "renderer" else "the synthetic train set")
    net = {"small": "small CNN", "world-recognizer": "residual network (world-recognizer)"}.get(
        cfg.get("aux_backbone", "small"), cfg.get("aux_backbone"))
    return f"aux{k}: {net} trained on {on}, {a['variant']}, held-out accuracy {100 * a['val_accuracy']:.1f} %"


def _embedding_line(cfg: dict, info: dict) -> str:
    if not cfg.get("embedding_weight"):
        return "Embedding-space gender term: off (as published).\n"
    p = info.get("embedding_probe", {})
    return (f"Embedding-space gender term (synthface's addition), weight {cfg['embedding_weight']:g}: a logistic "
            f"probe on {p.get('matcher', cfg['matcher'])}'s descriptors of the {p.get('images', '?')} auxiliary "
            f"faces (held-out accuracy {100 * p.get('held_out_accuracy', float('nan')):.1f} %); the judges' logistic regression is "
            "a fresh one on another recogniser's embeddings.\n")


def report_markdown(res: dict) -> str:
    cfg, info, aux = res["config"], res["info"], res["aux"]
    v = res["verdict"]
    md = ["# SAN experiment: gender privacy on unseen classifiers\n",
          f"Command: `{res['command']}`; {info['seconds']:.0f} s on {info['machine']}.\n",
          f"Train: {info['train_images']} images of a synthface balanced identity dataset ({cfg['ids_per_cell']} "
          f"identities x {cfg['images_per_id']} per group x gender cell, demo generator"
          + (f", variations refined by {cfg['refine_steps']} steps through it" if cfg.get("refine_steps") else "")
          + f"). Test: {info['test_images']} "
          f"images of {6 * cfg['test_ids_per_cell']} balanced renderer people never used in training.\n",
          f"SAN: {cfg['size']}px, {'RGB' if cfg['rgb'] else 'grey'}, encoder {cfg['enc_channels']}, decoder "
          f"{cfg['dec_channels']}" + (", residual input skip" if cfg.get("skip_input") else "")
          + f" ({info['san_parameters']:,} parameters); {cfg['pretrain_epochs']} reconstruction "
          f"epoch(s), then {cfg['epochs']} epochs of the official objective with the matcher term (weight "
          f"{cfg['matcher_weight']:g}) from epoch {cfg['matcher_start'] + 1}; Adam lr {cfg['lr']:g}, batch "
          f"{cfg['batch']}; matcher {cfg['matcher']}. Training time per member: "
          + ", ".join(f"{s:.0f} s" for s in info["member_seconds"]) + ".\n",
          "Auxiliary (seen) gender classifiers: "
          + "; ".join(_aux_line(k, a, cfg) for k, a in enumerate(aux))
          + f". Ensemble: {cfg['members']} members, release rule "
          f"`{cfg['rule']}` (synthface.methods.san_ensemble).\n",
          _embedding_line(cfg, info),
          "## Done-when check (single SAN, opposite prototype)\n",
          f"Smallest error increase of an unseen gender classifier: **{100 * v['min_error_increase']:+.1f} points** "
          f"(target >= +20: {'met' if v['privacy_met'] else 'NOT met'}); unseen matcher (world-audit) TMR at FMR "
          f"1e-3 drop: **{_pct(v['tmr_drop'])} points** (target <= 10: {'met' if v['utility_met'] else 'NOT met'})."
          f" Ensemble: {100 * res['verdict_ensemble']['min_error_increase']:+.1f} points, TMR drop "
          f"{_pct(res['verdict_ensemble']['tmr_drop'])} points.\n",
          "![gender error and matching per condition](san.png)\n",
          "## Gender classifiers (error %, originals -> perturbed; AUC of P(male))\n",
          "| classifier | " + " | ".join(res["conditions"]) + " |", "|---|" + "---|" * len(res["conditions"])]
    first = res["conditions"][res["conditions_order"][0]]
    for spec in first["classifiers"]:
        cells = []
        for c in res["conditions_order"]:
            b = res["conditions"][c]["classifiers"][spec]
            cells.append(f"{_pct(b['error_original'])} -> {_pct(b['error_perturbed'])} (AUC "
                         f"{b['auc_original']:.2f} -> {b['auc_perturbed']:.2f})")
        md.append(f"| {_short(spec, aux)} | " + " | ".join(cells) + " |")
    md += ["", "## Matchers (TMR %, probes against the original gallery)\n",
           "| matcher | FMR | " + " | ".join(res["conditions_order"]) + " |",
           "|---|---|" + "---|" * len(res["conditions_order"])]
    for m in first["matchers"]:
        for t in ("0.001", "0.01"):
            md.append(f"| {m}{' (seen)' if m == 'world' else ''} | {t} | " + " | ".join(
                f"{_pct(res['conditions'][c]['matchers'][m]['original'][f'tmr@{t}'])} -> "
                f"{_pct(res['conditions'][c]['matchers'][m]['perturbed'][f'tmr@{t}'])}"
                for c in res["conditions_order"]) + " |")
    md += ["", "Per-cell figures: `privacy/<condition>/report.md` (and `results.json`).\n",
           "## Examples\n", "Single SAN: rows original / same / opposite / neutral prototype.\n",
           "![single SAN examples](examples_single.png)\n",
           "Ensemble: rows original / each member's opposite output / the released one.\n",
           "![ensemble examples](examples_ensemble.png)\n"]
    return "\n".join(md)


# long: the experiment's stages in order (data, auxiliary classifiers, SANs, perturbation and judging, report),
# each reused when a previous run into the same folder finished it with the same settings.
def run(out, quick: bool = False, overrides: Optional[dict] = None, log: Callable = print) -> dict:
    import torch

    from ..methods.san import SANAutoencoder
    from .pretrain_data import build_balanced
    cfg = make_config(quick, overrides)
    if cfg.threads:
        torch.set_num_threads(int(cfg.threads))
    out = Path(out)
    data, runs = out / "data", out / "runs"
    runs.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    from ..assets import generator_path
    from ..generator import load_generator
    build_balanced(_pretrain_cfg(cfg), load_generator(generator_path(), device="cpu"), data / "balanced", log)
    train = build_train(cfg, data / "balanced", data / "train", log)
    test = build_test(cfg, data / "test", log)
    aux_data = build_aux_set(cfg, data / "aux", log) if cfg.aux_source == "renderer" and not cfg.aux_classifiers \
        else train
    t_data = time.perf_counter() - t0
    aux = train_aux(cfg, aux_data, runs, log)
    probe = embedding_probe(cfg, aux_data, runs, log)
    single, ens, member_seconds = train_sans(cfg, train, aux, runs, log, probe)
    t_train = time.perf_counter() - t0 - t_data
    conds = evaluate_conditions(cfg, test, single, ens, aux, out, log)
    from ..methods.san_privacy import contact_sheet, face_table, read_images
    t = face_table(test)
    first = read_images(t["root"], t["paths"][:200])
    contact_sheet(single, first, t["gender"][:200], out / "examples_single.png")
    contact_sheet(ens, first, t["gender"][:200], out / "examples_ensemble.png")
    net = SANAutoencoder(cfg.rgb, cfg.enc_channels, cfg.dec_channels, cfg.skip_input)
    info = {"seconds": time.perf_counter() - t0, "data_seconds": t_data, "train_seconds": t_train,
            "member_seconds": member_seconds, "train_images": sum(1 for _ in open(train / "manifest.jsonl")),
            "test_images": len(t["paths"]), "san_parameters": sum(p.numel() for p in net.parameters()),
            "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores (load average at the end "
                       f"{os.getloadavg()[0]:.1f}), torch {torch.__version__} with {torch.get_num_threads()} thread(s)"}
    command = "synthface experiment san --out " + str(out) + (" --quick" if quick else "") + "".join(
        f" --set {k}={json.dumps(v)}" for k, v in (overrides or {}).items())
    if probe:
        info["embedding_probe"] = {k: probe[k] for k in ("held_out_accuracy", "images", "matcher")}
    res = {"experiment": "san", "command": command, "config": asdict(cfg), "info": info, "aux": aux,
           "conditions": conds, "conditions_order": list(conds), "verdict": verdict(conds, aux),
           "verdict_ensemble": verdict(conds, aux, "ensemble")}
    atomic_write(out / "san.png", lambda f: f.write(plot(conds, aux)))
    md = report_markdown(res)
    from ..evaluation.report import to_html
    page = to_html(md, out).replace("<title>synthface evaluation</title>", "<title>SAN experiment</title>")
    atomic_write(out / "report.md", lambda f: f.write(md.encode()))
    atomic_write(out / "report.html", lambda f: f.write(page.encode()))
    write_json_atomic(out / "results.json", res)
    res["summary"] = {"out": str(out), "seconds": round(info["seconds"], 1), "verdict": res["verdict"],
                      "verdict_ensemble": res["verdict_ensemble"]}
    log(f"wrote {out}/report.md, report.html and results.json in {info['seconds']:.0f}s")
    return res
