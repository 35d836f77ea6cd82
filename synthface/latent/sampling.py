"""Cell sampling with verification, the prior baselines, and the audit of the result.

Every random draw derives from (seed, cell name, round), so a cell's samples do not depend on
which other cells are requested or in what order.
"""

from __future__ import annotations

from typing import Callable, Mapping, Optional, Sequence

import numpy as np

from ..errors import SynthfaceError
from ..generator.synthesis import generator_hash, prior_latents, synthesize
from ..utils import keyed_rng, log_stderr, name_key
from .cells import label_cells, matches, spec_name


def _stream(seed: int, name: str, round_: int) -> np.random.Generator:
    return keyed_rng(seed, name_key(name), round_)


def check_generator(model, G) -> None:
    if model.generator_hash_ and model.generator_hash_ not in (generator_hash(G), getattr(G, "tuned_from", "")):
        raise SynthfaceError(f"the latent model was fitted on a bank from a different generator (hash "
                             f"{model.generator_hash_}, this network {generator_hash(G)}); use the network the bank "
                             "was labelled with, or label a new bank and refit")


def check_labeller(model, labeller, role: str = "labeller") -> None:
    for a in model.attributes_:
        if a not in labeller.schema:
            raise SynthfaceError(f"the {role} does not produce attribute {a!r} (it produces "
                                 f"{', '.join(labeller.schema)}); pass a labeller/--schema that does")
        if list(labeller.schema[a]) != list(model.schema_[a]):
            raise SynthfaceError(f"the {role}'s classes for {a!r} {labeller.schema[a]} differ from the model's "
                                 f"{model.schema_[a]}; map them with --schema")


def sample_cell(model, G, spec: Mapping[str, str], n: int, labeller=None, seed: int = 0, truncation: float = 1.0,
                budget: float = 4.0, batch_size: int = 64, accept_confidence: Optional[float] = None,
                max_round: Optional[int] = None) -> dict:
    """n latents (and images) of one cell. With a labeller, each draw is generated, re-labelled and
    kept only if in the cell with probability >= accept_confidence (default: the model's fitting
    threshold) for every attribute the cell names; rejects are redrawn until n are accepted or
    budget x n have been generated. Returns w, prior seeds, images, labels and the counts."""
    threshold = model.confidence if accept_confidence is None else accept_confidence
    name = spec_name(spec)
    model.matching_cells(spec)  # clear error for unknown or unfitted cells before any work
    acc_w, acc_seeds, acc_img, acc_probs = [], [], [], []
    generated = accepted = raw_hits = 0
    first_round_precision = None
    round_ = 0
    limit = int(np.ceil(budget * n))
    while accepted < n and generated < limit and (max_round is None or round_ < max_round):
        rate = accepted / generated if generated else 1.0
        want = n - accepted if round_ == 0 else int(np.ceil((n - accepted) / max(rate, 0.05) * 1.1))
        m = max(1, min(want, limit - generated))
        rng = _stream(seed, name, round_)
        pseeds = rng.integers(0, 2**32 - 1, m, dtype=np.int64)
        W0 = prior_latents(G, pseeds.tolist(), model.truncation_psi_)
        S, _ = model.sample_projection(spec, m, rng, truncation)
        W = model.lift(S, W0).astype(np.float32)
        imgs = synthesize(G, W, model.noise_mode_, batch_size)
        generated += m
        if labeller is None:
            ok = np.ones(m, bool)
            probs = {}
        else:
            probs = labeller.predict_proba(imgs)
            idx, conf = label_cells(probs, model.attributes_, threshold)
            ok = matches(idx, conf, spec, model.schema_, model.attributes_)
            if first_round_precision is None:
                first_round_precision = float(ok.mean())
        raw_hits += int(ok.sum())
        take = np.flatnonzero(ok)[:n - accepted]
        acc_w.append(W[take])
        acc_seeds.append(pseeds[take])
        acc_img.append(imgs[take])
        acc_probs.append({a: np.asarray(p)[take] for a, p in probs.items()})
        accepted += len(take)
        round_ += 1
    res = {"cell": name, "spec": dict(spec), "requested": n, "accepted": accepted, "generated": generated,
           "acceptance_rate": raw_hits / generated if generated else 0.0,
           "verified_precision_before_rejection": first_round_precision,
           "accepted_per_generated": accepted / generated if generated else 0.0,
           "w": np.concatenate(acc_w), "prior_seeds": np.concatenate(acc_seeds), "images": np.concatenate(acc_img)}
    if labeller is not None:
        res["probs"] = {a: np.concatenate([p[a] for p in acc_probs]) for a in model.attributes_}
    return res


def sample_cells(model, G, specs: Sequence[Mapping[str, str]], n: int, labeller=None, seed: int = 0,
                 truncation: float = 1.0, budget: float = 4.0, batch_size: int = 64,
                 accept_confidence: Optional[float] = None,
                 log: Callable[[str], None] = log_stderr) -> list[dict]:
    check_generator(model, G)
    if labeller is not None:
        check_labeller(model, labeller, "verifying labeller")
    out = []
    for spec in specs:
        r = sample_cell(model, G, spec, n, labeller, seed, truncation, budget, batch_size, accept_confidence)
        short = "" if r["accepted"] == n else f"  (SHORT: budget {budget} x n spent)"
        log(f"{r['cell']}: {r['accepted']}/{n} accepted from {r['generated']} generated "
            f"(acceptance {100 * r['acceptance_rate']:.1f}%){short}")
        out.append(r)
    return out


def uniform_baseline(G, labeller, model, n: int, seed: int = 0, batch_size: int = 64) -> dict:
    """Plain prior samples (the generator's own distribution), labelled: what uniform sampling
    gives, and what rejection sampling from the prior would accept per generated image."""
    rng = _stream(seed, "uniform-baseline", 0)
    pseeds = rng.integers(0, 2**32 - 1, n, dtype=np.int64)
    W = prior_latents(G, pseeds.tolist(), model.truncation_psi_)
    imgs = synthesize(G, W, model.noise_mode_, batch_size)
    return {"n": n, "prior_seeds": pseeds, "images": imgs, "probs": labeller.predict_proba(imgs)}


def cell_frequencies(probs: Mapping[str, np.ndarray], model, confidence: Optional[float] = None) -> dict:
    """Fraction of images per full cell: by argmax label, and confidently (every attribute >= confidence)."""
    conf_t = model.confidence if confidence is None else confidence
    idx, conf = label_cells(probs, model.attributes_, conf_t)
    n = len(idx)
    out = {}
    for cell in model.cells_:
        spec = dict(zip(model.attributes_, cell))
        hit = np.ones(n, bool)
        for j, a in enumerate(model.attributes_):
            hit &= idx[:, j] == model.schema_[a].index(spec[a])
        out[spec_name(spec)] = {"argmax": float(hit.mean()) if n else 0.0,
                                "confident": float((hit & conf.all(1)).mean()) if n else 0.0}
    return out


def audit_precision(probs: Mapping[str, np.ndarray], spec: Mapping[str, str], model) -> float:
    """Fraction of images whose (argmax) label agrees with every attribute the cell names."""
    n = len(next(iter(probs.values())))
    hit = np.ones(n, bool)
    for a, c in spec.items():
        hit &= np.asarray(probs[a]).argmax(1) == model.schema_[a].index(c)
    return float(hit.mean()) if n else 0.0
