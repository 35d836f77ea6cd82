"""The embedding methods and the leakage probe on a dataset: every image's embedding by a recogniser
(optionally through a fitted method), the attribute labels its cell names carry, and the report of
`synthface leakage`."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np

from ..errors import SynthfaceError
from ..fileio import atomic_write, write_json_atomic
from ..utils import log_stderr


def attributes_from_cells(cells) -> dict[str, np.ndarray]:
    """Cell names to one label array per attribute: "group=group1,gender=female" gives {"group": ...,
    "gender": ...}; a plain name (an ImageFolder's --groups CSV) is the attribute "group"."""
    parsed = []
    for c in cells:
        c = str(c)
        if "=" in c:
            parsed.append(dict(part.split("=", 1) for part in c.split(",") if part))
        else:
            parsed.append({"group": c})
    names = list(dict.fromkeys(k for p in parsed for k in p))
    missing = [n for n in names if any(n not in p for p in parsed)]
    if missing:
        raise SynthfaceError(f"the dataset's cells do not all name {', '.join(missing)}; pass --sensitive with "
                             f"attributes every cell has")
    return {n: np.array([p[n] for p in parsed]) for n in names}


def dataset_embeddings(dataset, recognizer: str, device: str = "cpu", cache_dir=None, groups_csv=None,
                       method_path=None, log: Callable[[str], None] = log_stderr):
    """(X, identity, attributes) of every image of a dataset, embedded by a recogniser (optionally followed by
    a fitted method), cached as `synthface evaluate` caches them."""
    from ..evaluation import embeddings, load_items
    from ..identity import load_embedder

    items = load_items(dataset, groups_csv)
    emb = load_embedder(recognizer, device)
    if method_path:
        from .projected import ProjectedEmbedder, load_method
        emb = ProjectedEmbedder(emb, load_method(method_path), method_path)
    E = embeddings(emb, items, items.paths, Path(cache_dir) if cache_dir else None, log=log)
    X = np.stack([E[p] for p in items.paths])
    return X, np.asarray(items.identity), attributes_from_cells(items.group)


def select_attributes(attrs: dict, sensitive) -> dict:
    """The attributes named in `sensitive` (a comma-separated string or a list; all when empty)."""
    if not sensitive:
        return attrs
    names = [s.strip() for s in (sensitive.split(",") if isinstance(sensitive, str) else sensitive) if s.strip()]
    unknown = [n for n in names if n not in attrs]
    if unknown:
        raise SynthfaceError(f"unknown sensitive attribute(s) {', '.join(unknown)}; the dataset has "
                             f"{', '.join(attrs)}")
    return {n: attrs[n] for n in names}


def run_leakage(dataset, recognizer: str, out, method_path: Optional[str] = None, sensitive=None, groups_csv=None,
                classifiers: Sequence[str] = ("svm", "mlp", "rf"), folds: int = 5, n_boot: int = 1000, seed: int = 0,
                device: str = "cpu", log: Callable[[str], None] = log_stderr) -> tuple[dict, str]:
    """`synthface leakage`: the leakage probe on the raw embeddings (and, with a method, on its
    projected ones); writes out/report.json and out/report.md and returns (report, its Markdown)."""
    from ..evaluation.leakage import leakage, leakage_markdown

    out = Path(out)
    clfs = tuple(classifiers)
    runs = [("raw", None)] + ([("projected", method_path)] if method_path else [])
    report = {"dataset": str(dataset), "recognizer": recognizer, "method": method_path, "results": {}}
    md = [f"# Attribute leakage\n\nDataset `{dataset}`, recogniser `{recognizer}`"
          + (f", method `{method_path}`" if method_path else "") + ".\n"]
    for name, mp in runs:
        X, ident, attrs = dataset_embeddings(dataset, recognizer, device, out / "cache", groups_csv, mp, log=log)
        log(f"{name}: {len(X)} embeddings of {len(np.unique(ident))} identities; probing {', '.join(clfs)}")
        res = leakage(X, select_attributes(attrs, sensitive), groups=ident, classifiers=clfs, folds=folds, seed=seed,
                      n_boot=n_boot)
        report["results"][name] = res
        md.append(leakage_markdown(res, "raw embeddings" if name == "raw" else "after the method"))
    write_json_atomic(out / "report.json", report)
    text = "\n".join(md)
    atomic_write(out / "report.md", lambda f: f.write(text.encode()))
    return report, text
