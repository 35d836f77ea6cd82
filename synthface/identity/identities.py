"""Distinct identities per demographic cell, and varied images of each.

Identities: candidate j of a cell is drawn from the latent model with randomness from
(seed, cell, j) alone, generated, re-labelled (kept only if confidently in the cell) and
embedded. Candidates are visited in a fixed order (j-major, cells interleaved) and accepted
greedily when their cosine similarity to every identity accepted so far, in any cell, is below
the separation threshold (and below the leakage threshold to a gallery, if one is given).
Batching only changes how many candidates are evaluated at once, never the result.

Variations: image a of identity i comes from (seed, i, a): the identity's w plus an offset along
nuisance directions of W (principal components of W after the demographic projection is removed),
scaled by `strength`; the fine layers (from `mix_from` on) style-mixed with a prior sample; random
noise. A variation is kept only if it is still confidently in the cell and its embedding keeps
cosine >= the consistency threshold to the identity's reference image; else it is redrawn.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Mapping, Optional, Sequence

import numpy as np

from ..errors import SynthfaceError
from ..generator.synthesis import broadcast_ws, map_seeds, prior_latents, synthesize
from ..latent.cells import label_cells, matches, spec_name
from ..utils import keyed_rng as _rng
from ..utils import log_stderr, name_key, progress_bar


def nuisance_basis(model, G, k: int = 8, n: int = 4000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Top-k principal directions of prior W with the demographic projection removed, and their
    standard deviations."""
    seeds = _rng(seed, 0xBA5E).integers(0, 2**32 - 1, n).tolist()
    W = prior_latents(G, seeds, model.truncation_psi_).astype(np.float64)
    R = W - model.project(W) @ model.K_.T
    R -= R.mean(0)
    _, s, Vt = np.linalg.svd(R, full_matrices=False)
    return Vt[:k].astype(np.float32), (s[:k] / np.sqrt(n - 1)).astype(np.float32)


@dataclass
class IdentitySet:
    cells: list[str]            # cell names, in order
    cell: np.ndarray            # [I] index into cells
    candidate: np.ndarray       # [I] candidate index j within its cell
    prior_seed: np.ndarray      # [I]
    w: np.ndarray               # [I, w_dim]
    embedding: np.ndarray       # [I, D] of the reference image
    max_similarity: np.ndarray  # [I] to the identities accepted before it
    leakage_similarity: np.ndarray  # [I] max to the leakage gallery (nan without one)
    probs: dict                 # attribute -> [I, classes] (verifier)
    stats: dict

    def arrays(self) -> dict:
        out = {k: getattr(self, k) for k in ("cell", "candidate", "prior_seed", "w", "embedding", "max_similarity",
                                             "leakage_similarity")}
        out.update({f"p.{a}": v for a, v in self.probs.items()})
        out["cells"] = np.array(self.cells)
        return out

    @classmethod
    def from_arrays(cls, z: Mapping, stats: dict) -> "IdentitySet":
        probs = {k[2:]: np.asarray(z[k]) for k in z if k.startswith("p.")}
        return cls(cells=[str(c) for c in z["cells"]], cell=z["cell"], candidate=z["candidate"],
                   prior_seed=z["prior_seed"], w=z["w"], embedding=z["embedding"],
                   max_similarity=z["max_similarity"], leakage_similarity=z["leakage_similarity"], probs=probs,
                   stats=stats)


class _Acceptance:
    """The greedy accept/reject state of identity selection: accepted identities per cell, their
    embeddings (for the separation test) and the per-cell counts for the report."""

    BLOCK = 8192  # accepted identities compared per matrix product: bounds the temporary memory

    def __init__(self, names: list[str], n_per_cell: int, separation: float, leakage, leakage_threshold):
        self.names, self.n, self.separation = names, n_per_cell, separation
        self.leakage, self.leakage_threshold = leakage, leakage_threshold
        self.accepted: list[list[dict]] = [[] for _ in names]
        # Accepted embeddings live in one buffer allocated for the whole set (at most n per cell), so
        # accepting never copies what is already there: time per candidate stays flat as the set grows.
        self._buffer = np.zeros((0, 0), np.float32)
        self.count = 0
        self.stats = {n: {"candidates": 0, "rejected_label": 0, "rejected_separation": 0, "rejected_leakage": 0}
                      for n in names}

    def full(self, c: int) -> bool:
        return len(self.accepted[c]) >= self.n

    @property
    def embeddings(self) -> np.ndarray:
        return self._buffer[:self.count]

    def max_similarity(self, emb: np.ndarray) -> np.ndarray:
        """Each row's largest cosine similarity to the accepted identities (-1 when there are none),
        computed in blocks of accepted identities."""
        best = np.full(len(emb), -1.0, np.float32)
        for s in range(0, self.count, self.BLOCK):
            np.maximum(best, (emb @ self._buffer[s:min(s + self.BLOCK, self.count)].T).max(1), out=best)
        return best

    def _append(self, rows: np.ndarray) -> None:
        if self._buffer.shape[1] == 0:
            self._buffer = np.zeros((self.n * len(self.names), rows.shape[1]), np.float32)
        self._buffer[self.count:self.count + len(rows)] = rows
        self.count += len(rows)

    def visit(self, order, pseeds, W, ok, emb, probs, attributes) -> int:
        """Visit one batch of candidates in order; returns how many were accepted."""
        has_emb = emb.shape[1] > 0
        prev = self.max_similarity(emb) if has_emb else np.full(len(order), -1.0)
        leak = (emb @ self.leakage.T).max(1) if self.leakage is not None and has_emb else np.full(len(order), np.nan)
        new_rows: list[int] = []
        for k, (c, j) in enumerate(order):
            if self.full(c):
                continue
            st = self.stats[self.names[c]]
            st["candidates"] += 1
            if not ok[k]:
                st["rejected_label"] += 1
                continue
            if self.leakage is not None and leak[k] >= self.leakage_threshold:
                st["rejected_leakage"] += 1
                continue
            # similarity to identities accepted earlier in this batch, then to all earlier batches
            within = float((emb[new_rows] @ emb[k]).max()) if new_rows else -1.0
            m = max(float(prev[k]), within)
            if m >= self.separation:
                st["rejected_separation"] += 1
                continue
            new_rows.append(k)
            self.accepted[c].append({"candidate": j, "prior_seed": pseeds[k], "w": W[k], "embedding": emb[k],
                                     "max_similarity": m, "leakage_similarity": float(leak[k]),
                                     "probs": {a: probs[a][k] for a in attributes}})
        if new_rows:
            self._append(emb[new_rows])
        return len(new_rows)


def _visiting_order(active: list[int], next_j: list[int], per: int, limit: int) -> list[tuple[int, int]]:
    """(cell, candidate j) pairs of the next batch: j-major, cells interleaved, so the visiting
    order (and therefore the result) does not depend on the batch size."""
    order = []
    for j in range(per):
        for c in active:
            if next_j[c] + j < limit:
                order.append((c, next_j[c] + j))
    return order


def _draw_candidates(model, G, specs, names, order, seed: int, truncation: float, batch_size: int,
                     anchors: Optional[Mapping[str, np.ndarray]] = None):
    """Latents and images of the candidates in `order`; candidate j of a cell depends on
    (seed, cell, j) alone. A cell in `anchors` draws mixes of two of its anchor latents
    (latent.anchors) instead of the latent model's samples."""
    from ..latent.anchors import anchor_mix
    pseeds, S, mixed = [], [], {}
    for k, (c, j) in enumerate(order):
        rng = _rng(seed, name_key(names[c]), j)
        pseeds.append(int(rng.integers(0, 2**32 - 1)))
        if anchors and names[c] in anchors:
            mixed[k] = anchor_mix(anchors[names[c]], rng)
            S.append(None)
            continue
        s, _ = model.sample_projection(specs[c], 1, rng, truncation)
        S.append(s[0])
    W = np.zeros((len(order), G.w_dim), np.float32)
    rest = [k for k in range(len(order)) if k not in mixed]
    if rest:
        W0 = prior_latents(G, [pseeds[k] for k in rest], model.truncation_psi_)
        W[rest] = model.lift(np.array([S[k] for k in rest]), W0).astype(np.float32)
    for k, w in mixed.items():
        W[k] = w
    return pseeds, W, synthesize(G, W, model.noise_mode_, batch_size)


def _screen(model, verifier, embedder, specs, order, imgs, threshold):
    """Label the candidates (ok: confidently in their cell) and embed the ones that passed."""
    probs = verifier.predict_proba(imgs)
    idx, conf = label_cells(probs, model.attributes_, threshold)
    ok = np.zeros(len(order), bool)
    for c in set(c for c, _ in order):
        rows = np.array([k for k, (cc, _) in enumerate(order) if cc == c])
        ok[rows] = matches(idx[rows], conf[rows], specs[c], model.schema_, model.attributes_)
    emb = np.zeros((len(order), 0), np.float32)
    if ok.any():
        e_ok = embedder.embed(imgs[ok])
        emb = np.zeros((len(order), e_ok.shape[1]), np.float32)
        emb[ok] = e_ok
    return ok, emb, probs


def select_identities(model, G, verifier, embedder, specs: Sequence[Mapping[str, str]], n_per_cell: int,
                      separation: float, seed: int = 0, leakage: Optional[np.ndarray] = None,
                      leakage_threshold: Optional[float] = None, accept_confidence: Optional[float] = None,
                      truncation: float = 1.0, budget: float = 50.0, batch_size: int = 64, progress: bool = True,
                      log: Callable[[str], None] = log_stderr,
                      anchors: Optional[Mapping[str, np.ndarray]] = None) -> IdentitySet:
    """n_per_cell mutually distinct identities in each cell (see the module docstring). `anchors`
    ({cell name: anchor w [M, w_dim]}, latent.anchors): those cells' candidates are mixes of two anchors;
    pass the anchor faces' embeddings in `leakage` so that no identity matches an anchor person."""
    threshold = model.confidence if accept_confidence is None else accept_confidence
    names = [spec_name(s) for s in specs]
    if len(set(names)) != len(names):
        raise SynthfaceError("the same cell is requested twice")
    for s in specs:
        model.matching_cells(s)
    if leakage is not None:
        leakage = np.asarray(leakage, np.float32)
        leakage = leakage / np.linalg.norm(leakage, axis=1, keepdims=True)
        leakage_threshold = separation if leakage_threshold is None else leakage_threshold
    limit = int(np.ceil(budget * n_per_cell))
    next_j = [0] * len(specs)
    state = _Acceptance(names, n_per_cell, separation, leakage, leakage_threshold)
    bar = progress_bar(n_per_cell * len(specs), "identities", unit="id", enabled=progress)
    try:
        while True:
            active = [c for c in range(len(specs)) if not state.full(c) and next_j[c] < limit]
            if not active:
                break
            per = max(1, batch_size // len(active))
            order = _visiting_order(active, next_j, per, limit)
            for c in active:
                next_j[c] = min(limit, next_j[c] + per)
            pseeds, W, imgs = _draw_candidates(model, G, specs, names, order, seed, truncation, batch_size, anchors)
            ok, emb, probs = _screen(model, verifier, embedder, specs, order, imgs, threshold)
            bar.update(state.visit(order, pseeds, W, ok, emb, probs, model.attributes_))
    finally:
        bar.close()
    short = [f"{names[c]} ({len(state.accepted[c])})" for c in range(len(specs)) if not state.full(c)]
    if short:
        raise SynthfaceError(f"could not find {n_per_cell} distinct identities within {limit} candidates for: "
                             f"{'; '.join(short)}; raise --identity-budget, lower --separation or ask for fewer "
                             "identities" + ("; anchored cells draw between their anchors: give more anchor faces "
                                             "of them (`synthface anchors`)" if anchors else ""))
    for st in state.stats.values():
        st["acceptance_rate"] = n_per_cell / st["candidates"]
    return _identity_set(names, state.accepted, state.stats, model.attributes_)


def _identity_set(names, accepted, stats, attributes) -> IdentitySet:
    rows = [(c, r) for c in range(len(names)) for r in accepted[c]]
    return IdentitySet(
        cells=names, cell=np.array([c for c, _ in rows], np.int64),
        candidate=np.array([r["candidate"] for _, r in rows], np.int64),
        prior_seed=np.array([r["prior_seed"] for _, r in rows], np.int64),
        w=np.stack([r["w"] for _, r in rows]).astype(np.float32),
        embedding=np.stack([r["embedding"] for _, r in rows]).astype(np.float32),
        max_similarity=np.array([r["max_similarity"] for _, r in rows], np.float32),
        leakage_similarity=np.array([r["leakage_similarity"] for _, r in rows], np.float32),
        probs={a: np.stack([r["probs"][a] for _, r in rows]).astype(np.float32) for a in attributes},
        stats=stats)


# Attempts are spent in stages of STAGE_ATTEMPTS per wanted image, each with a smaller step (SHRINK
# times the last), the last one (which takes all remaining attempts) also without style mixing, so an
# identity whose recogniser rejects large changes still gets its images, only less varied; the
# record keeps each image's step. The schedule does not depend on the budget, so raising
# --variation-budget on a rerun keeps what was written.
STAGES = 4
STAGE_ATTEMPTS = 5
SHRINK = 0.5


def variation_stage(attempt: int, k: int) -> int:
    """Stage (0 = full strength) of attempt number `attempt` of an identity wanting k images."""
    return min(STAGES - 1, attempt // (STAGE_ATTEMPTS * max(1, k)))


def make_variations(model, G, verifier, embedder, spec: Mapping[str, str], w_id: np.ndarray, ref_embedding,
                    identity_index: int, k: int, seed: int, basis: np.ndarray, scales: np.ndarray,
                    strength: float = 0.5, mix_from: Optional[int] = None, consistency: float = 0.5,
                    accept_confidence: Optional[float] = None, budget: int = 8, batch_size: int = 32,
                    directions=None, refiner=None) -> dict:
    """k accepted variation images of one identity, with their w, noise seeds, scores and labels.
    `directions` (identity.directions.NuisanceDirections, prepared for the model) replaces the PCA
    basis with labelled nuisance directions; `refiner` (identity.refine.Refiner) then moves each
    full-strength attempt's layers below mix_from toward its target by gradient steps through G."""
    threshold = model.confidence if accept_confidence is None else accept_confidence
    mix_from = G.num_ws * 6 // 10 if mix_from is None else mix_from
    if not 0 <= mix_from <= G.num_ws:
        raise SynthfaceError(f"mix_from must be in 0..{G.num_ws}")
    w_id = np.asarray(w_id, np.float32)
    refining = refiner is not None and directions is not None
    got: list[dict] = []
    attempt = 0
    while len(got) < k and attempt < budget * k:
        m = min(max(k - len(got), 1) + 2, budget * k - attempt)
        atts = list(range(attempt, attempt + m))
        attempt += m
        ws, noise, mix_seeds, stages, targets = [], [], [], [], []
        for a in atts:
            rng = _rng(seed, 0x7661, identity_index, a)
            mix_seeds.append(int(rng.integers(0, 2**32 - 1)))
            noise.append(int(rng.integers(0, 2**63 - 1)))
            stages.append(variation_stage(a, k))
            step = strength * SHRINK ** stages[-1]
            if directions is not None:
                offset, t = directions.offset_and_target(w_id.astype(np.float64), rng, step)
                targets.append(t)
            else:
                offset = (step * rng.standard_normal(len(scales)) * scales) @ basis
            ws.append(w_id + offset)
        ws = broadcast_ws(G, np.array(ws, np.float32))
        if mix_from < G.num_ws:
            w_mix = map_seeds(G, mix_seeds, model.truncation_psi_).cpu().numpy()
            for r, st in enumerate(stages):
                if st < STAGES - 1:
                    ws[r, mix_from:] = w_mix[r]
        if refining:
            full = [r for r, st in enumerate(stages) if st == 0]  # the fallback stages stay small, linear steps
            if full:
                ws[full] = refiner.refine(G, ws[full], np.array(targets)[full], ref_embedding, mix_from)
        imgs = synthesize(G, ws, "random", batch_size, noise_seeds=noise)
        probs = verifier.predict_proba(imgs)
        idx, conf = label_cells(probs, model.attributes_, threshold)
        ok = matches(idx, conf, spec, model.schema_, model.attributes_)
        e = embedder.embed(imgs)
        cons = e @ np.asarray(ref_embedding, np.float32)
        for r, a in enumerate(atts):
            if len(got) < k and ok[r] and cons[r] >= consistency:
                got.append({"attempt": a, "image": imgs[r], "ws": ws[r], "noise_seed": noise[r],
                            "mix_seed": mix_seeds[r], "consistency": float(cons[r]), "embedding": e[r],
                            "strength": float(strength * SHRINK ** stages[r]),
                            "refined": refining and stages[r] == 0,
                            "mixed": bool(mix_from < G.num_ws and stages[r] < STAGES - 1),
                            "probs": {x: probs[x][r] for x in model.attributes_}})
    return {"variations": got, "attempts": attempt}
