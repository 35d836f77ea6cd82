"""Per-group verification and fairness metrics of one or more recognisers on a pair list."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np
from PIL import Image

from ..errors import SynthfaceError
from ..utils import log_stderr
from ..fairness import metrics as M
from ..fileio import atomic_write
from .pairs import Items

TARGETS = (1e-1, 1e-2, 1e-3, 1e-4)
MIN_PAIRS = 20  # a group with fewer genuine or impostor pairs is marked, not scored


def dataset_hash(items: Items) -> str:
    h = hashlib.sha256()
    for p in items.paths:
        st = (items.root / p).stat()
        h.update(f"{p}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:16]


def _read_rgb(path: Path) -> np.ndarray:
    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB").resize((112, 112)))
    except (OSError, ValueError, SyntaxError) as e:  # PIL's errors for damaged or foreign files
        raise SynthfaceError(f"{path} is not a readable image ({e}); replace or remove it") from None


def embeddings(embedder, items: Items, paths: Sequence[str], cache_dir: Optional[Path], batch: int = 256,
               log: Callable[[str], None] = log_stderr) -> dict[str, np.ndarray]:
    """Embeddings of the images the pairs use, cached per (model hash, dataset hash)."""
    paths = sorted(set(paths))
    missing = [p for p in paths if not (items.root / p).is_file()]
    if missing:
        raise SynthfaceError(f"{len(missing)} images of the pair list are missing under {items.root} "
                             f"(e.g. {missing[:3]}); regenerate the pairs for this dataset")
    key = f"{embedder.describe().get('sha256', 'model')}_{dataset_hash(items)}"
    cache = cache_dir / f"{key}.npz" if cache_dir else None
    if cache is not None and cache.is_file():
        with np.load(cache) as z:
            got = dict(zip(z["paths"].tolist(), z["emb"]))
        if all(p in got for p in paths):
            return got
    log(f"embedding {len(paths)} images")
    out = []
    for s in range(0, len(paths), batch):
        imgs = np.stack([_read_rgb(items.root / p) for p in paths[s:s + batch]])
        out.append(embedder.embed_aligned(imgs))
    E = np.concatenate(out)
    if not np.isfinite(E).all():
        raise SynthfaceError("the recogniser produced NaN embeddings")
    if cache is not None:
        atomic_write(cache, lambda f: np.savez(f, paths=np.array(paths), emb=E))
    return dict(zip(paths, E))


def pair_scores(emb: dict[str, np.ndarray], pairs: list[dict]) -> np.ndarray:
    dims = {v.shape for v in emb.values()}
    if len(dims) != 1:
        raise SynthfaceError(f"embeddings of mismatched shapes {sorted(dims)}")
    keys = list(emb)
    index = {k: i for i, k in enumerate(keys)}
    E = np.stack([emb[k] for k in keys])
    E = E / np.linalg.norm(E, axis=1, keepdims=True)
    a = np.fromiter((index[p["a"]] for p in pairs), int, len(pairs))
    b = np.fromiter((index[p["b"]] for p in pairs), int, len(pairs))
    return np.einsum("nd,nd->n", E[a], E[b])


def group_metrics(scores: np.ndarray, pairs: list[dict], target_fmr: float = 1e-3, alpha: float = 0.5,
                  n_boot: int = 200, seed: int = 0) -> dict:
    y = np.array([p["genuine"] for p in pairs], bool)
    g = np.array([p["group"] for p in pairs])
    folds = np.array([p["fold"] for p in pairs])
    groups = sorted(set(g.tolist()))
    res = {"groups": {}, "skipped": {}}
    scored = []
    for grp in groups:
        m = g == grp
        gen, imp = scores[m & y], scores[m & ~y]
        if len(gen) < MIN_PAIRS or len(imp) < MIN_PAIRS:
            res["skipped"][grp] = f"{len(gen)} genuine / {len(imp)} impostor pairs (< {MIN_PAIRS})"
            continue
        acc, per_fold = M.kfold_accuracy(scores[m], y[m], folds[m])
        sm, ym, fm = scores[m], y[m], folds[m]
        # resample pairs jointly (score, label and fold stay together)
        lo, hi = M.bootstrap_ci(lambda idx: M.kfold_accuracy(sm[idx], ym[idx], fm[idx])[0], [np.arange(len(sm))],
                                n_boot=n_boot, seed=seed)
        res["groups"][grp] = {
            "genuine_pairs": int(len(gen)), "impostor_pairs": int(len(imp)),
            "accuracy": acc, "accuracy_ci95": [lo, hi], "accuracy_folds": per_fold.tolist(),
            "eer": M.eer(gen, imp),
            # group-specific thresholds, only where the group has enough impostors to estimate the FMR
            "tar_at_fmr": {f"{t:g}": (M.tar_at_fmr(gen, imp, t) if len(imp) * t >= 1 else None) for t in TARGETS},
            "genuine_mean": float(gen.mean()), "impostor_mean": float(imp.mean())}
        scored.append(grp)
    if len(scored) < 2:
        raise SynthfaceError(f"fewer than two groups have {MIN_PAIRS}+ genuine and impostor pairs "
                             f"({res['skipped']}); use a larger dataset or more pairs")
    m = np.isin(g, scored)
    all_imp = scores[m & ~y]
    accs = [100 * res["groups"][k]["accuracy"] for k in scored]
    res["accuracy_mean"] = float(np.mean(accs)) / 100
    res["accuracy_std"] = M.std_accuracy(accs) / 100
    res["accuracy_gap"] = (max(accs) - min(accs)) / 100
    res["ser"] = M.ser(accs)
    res["global"] = {}
    for t in sorted({1e-1, 1e-2, target_fmr}, reverse=True):
        if len(all_imp) * t < 1:
            continue
        thr = M.threshold_at_fmr(all_imp, t)
        fmrs = [M.fmr(scores[(g == k) & ~y], thr) for k in scored]
        fnmrs = [M.fnmr(scores[(g == k) & y], thr) for k in scored]
        floor = 1.0 / max(1, min(int(((g == k) & ~y).sum()) for k in scored))
        res["global"][f"{t:g}"] = {
            "threshold": thr, "fmr": dict(zip(scored, fmrs)), "fnmr": dict(zip(scored, fnmrs)),
            "fmr_ratio_to_min": dict(zip(scored, (np.array(fmrs) / max(min(fmrs), floor)).tolist())),
            "fdr": M.fdr(fmrs, fnmrs, alpha), "inequity_rate": M.inequity_rate(fmrs, fnmrs, alpha),
            "inequity_rate_floored": M.inequity_rate(fmrs, fnmrs, alpha, floor=floor),
            "garbe": M.garbe(fmrs, fnmrs, alpha)}
    res["target_fmr"] = target_fmr
    return res
