"""Verification pairs per demographic group (RFW-style): balanced genuine / impostor pairs,
impostors within the group by default, identity-disjoint folds, deterministic from a seed.

Sources: a synthface dataset (its manifest.jsonl) or any ImageFolder tree of aligned 112x112 crops
(one folder per identity) with a CSV of `identity,group`.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from ..errors import SynthfaceError
from ..fileio import atomic_write

IMAGE_EXT = (".png", ".jpg", ".jpeg", ".bmp", ".webp")


@dataclass
class Items:
    root: Path
    paths: list[str]        # relative to root
    identity: np.ndarray    # [N] int
    group: list[str]        # [N]


def load_items(dataset, groups_csv: Optional[str] = None) -> Items:
    root = Path(dataset)
    if not root.is_dir():
        raise SynthfaceError(f"dataset {root} is not a directory")
    if (root / "manifest.jsonl").is_file() and groups_csv is None:
        rows = [json.loads(line) for line in (root / "manifest.jsonl").read_text().splitlines() if line.strip()]
        return Items(root, [r["path"] for r in rows], np.array([r["identity"] for r in rows]),
                     [r["cell"] for r in rows])
    folder = root / "imagefolder" if (root / "imagefolder").is_dir() else root
    if groups_csv is None:
        raise SynthfaceError(f"{root} has no manifest.jsonl: pass --groups CSV with columns identity,group "
                             "(identity = the folder name)")
    with open(groups_csv, newline="") as f:
        reader = csv.DictReader(f)
        if not reader.fieldnames or not {"identity", "group"} <= set(reader.fieldnames):
            raise SynthfaceError(f"{groups_csv} needs the columns identity,group")
        gmap = {r["identity"]: r["group"] for r in reader}
    ids = sorted(p.name for p in folder.iterdir() if p.is_dir())
    missing = [i for i in ids if i not in gmap]
    if missing:
        raise SynthfaceError(f"{groups_csv} has no group for identities {missing[:5]} ({len(missing)} in all)")
    paths, ident, group = [], [], []
    for k, name in enumerate(ids):
        for p in sorted((folder / name).iterdir()):
            if p.suffix.lower() in IMAGE_EXT:
                paths.append(str(p.relative_to(root)))
                ident.append(k)
                group.append(gmap[name])
    if not paths:
        raise SynthfaceError(f"no images under {folder}")
    return Items(root, paths, np.array(ident), group)


def make_pairs(items: Items, genuine: int = 3000, impostor: int = 3000, folds: int = 10, seed: int = 0,
               cross_group: bool = False) -> list[dict]:
    """Per group: up to `genuine` same-identity pairs and `impostor` different-identity pairs, the
    identities split into `folds` disjoint folds and each pair inside one fold. Groups that cannot
    supply a pair kind get fewer pairs (reported by the evaluation, never padded with duplicates)."""
    rng = np.random.default_rng(seed)
    out = []
    groups = sorted(set(items.group))
    by_id: dict[int, list[int]] = {}
    for i, ident in enumerate(items.identity):
        by_id.setdefault(int(ident), []).append(i)
    id_group = {}
    for ident, rows in by_id.items():
        gs = {items.group[r] for r in rows}
        if len(gs) != 1:
            raise SynthfaceError(f"identity {ident} has images in several groups: {sorted(gs)}")
        id_group[ident] = gs.pop()
    for g in groups:
        ids = np.array(sorted(i for i, gg in id_group.items() if gg == g))
        ids = ids[rng.permutation(len(ids))]
        # at least two identities per fold, so every fold has impostors (small groups get fewer folds)
        n_folds = max(1, min(folds, len(ids) // 2))
        fold_of = {int(i): k % n_folds for k, i in enumerate(ids)}
        pool_imp = ids if not cross_group else np.array(sorted(id_group))
        # genuine: every same-identity pair, sampled without replacement
        gen = [(a, b) for i in ids for x, a in enumerate(by_id[int(i)]) for b in by_id[int(i)][x + 1:]]
        take = rng.permutation(len(gen))[:genuine]
        for t in take:
            a, b = gen[t]
            out.append({"a": items.paths[a], "b": items.paths[b], "genuine": 1, "group": g,
                        "fold": fold_of[int(items.identity[a])]})
        # impostors: different identities of the same fold, sampled without repeats
        seen, tries = set(), 0
        n_imp = 0
        while n_imp < impostor and tries < 20 * impostor and len(ids) > 1:
            tries += 1
            i = int(ids[rng.integers(len(ids))])
            f = fold_of[i]
            cands = [j for j in pool_imp if int(j) != i and (fold_of.get(int(j), f) == f or cross_group)]
            if not cands:
                continue
            j = int(cands[rng.integers(len(cands))])
            a = by_id[i][rng.integers(len(by_id[i]))]
            b = by_id[j][rng.integers(len(by_id[j]))]
            key = (min(a, b), max(a, b))
            if key in seen:
                continue
            seen.add(key)
            out.append({"a": items.paths[a], "b": items.paths[b], "genuine": 0, "group": g, "fold": f})
            n_imp += 1
    return out


def save_pairs(pairs: list[dict], path) -> Path:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["a", "b", "genuine", "group", "fold"])
    for p in pairs:
        w.writerow([p["a"], p["b"], p["genuine"], p["group"], p["fold"]])
    return atomic_write(path, lambda f: f.write(buf.getvalue().encode()))


def load_pairs(path) -> list[dict]:
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows or not {"a", "b", "genuine", "group", "fold"} <= set(rows[0]):
        raise SynthfaceError(f"{path} is not a pair list (columns a,b,genuine,group,fold)")
    return [{"a": r["a"], "b": r["b"], "genuine": int(r["genuine"]), "group": r["group"], "fold": int(r["fold"])}
            for r in rows]
