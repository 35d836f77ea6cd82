"""`synthface evaluate`: pairs, embeddings, metrics and plots for one or more recognisers, written
as report.md, a self-contained report.html (images inlined), metrics.json and PNG plots."""

from __future__ import annotations

import base64
import html
import re
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np
from PIL import Image

from ..errors import SynthfaceError
from ..utils import log_stderr
from ..fairness import metrics as M
from ..fileio import atomic_write, image_grid, save_image_atomic, write_json_atomic
from .evaluate import embeddings, group_metrics, pair_scores
from .pairs import load_items, load_pairs, make_pairs, save_pairs


def _plt():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def _save(fig, path: Path) -> str:
    import io
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    _plt().close(fig)
    atomic_write(path, lambda f: f.write(buf.getvalue()))
    return path.name


def plots(name: str, scores, pairs, res, out: Path) -> dict:
    plt = _plt()
    y = np.array([p["genuine"] for p in pairs], bool)
    g = np.array([p["group"] for p in pairs])
    groups = list(res["groups"])
    files = {}
    fig, ax = plt.subplots(figsize=(6, 4.5))
    for grp in groups:
        far, tar, _ = M.roc(scores[(g == grp) & y], scores[(g == grp) & ~y])
        keep = far > 0
        ax.plot(far[keep], tar[keep], label=f"{grp} (acc {100 * res['groups'][grp]['accuracy']:.1f}%)")
    ax.set_xscale("log")
    ax.set(xlabel="false match rate", ylabel="true accept rate", title=f"ROC per group: {name}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    files["roc"] = _save(fig, out / f"roc_{name}.png")
    thr = np.linspace(scores.min(), scores.max(), 200)
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 4))
    for grp in groups:
        gen, imp = np.sort(scores[(g == grp) & y]), np.sort(scores[(g == grp) & ~y])
        a1.plot(thr, 1 - np.searchsorted(imp, thr, "left") / len(imp), label=grp)
        a2.plot(thr, np.searchsorted(gen, thr, "left") / len(gen), label=grp)
    key = f"{res['target_fmr']:g}"
    for a, title in [(a1, "FMR"), (a2, "FNMR")]:
        if key in res["global"]:
            a.axvline(res["global"][key]["threshold"], color="k", ls="--", lw=0.8,
                      label=f"global threshold (FMR {key})")
        a.set(xlabel="threshold (cosine)", ylabel=title, title=f"{title} vs threshold per group")
        a.set_yscale("log")
        a.grid(alpha=0.3)
    a1.legend(fontsize=7)
    files["rates"] = _save(fig, out / f"rates_{name}.png")
    fig, ax = plt.subplots(figsize=(7, 4))
    for k, grp in enumerate(groups):
        c = f"C{k}"
        ax.hist(scores[(g == grp) & y], bins=40, histtype="step", color=c, label=f"{grp} genuine", density=True)
        ax.hist(scores[(g == grp) & ~y], bins=40, histtype="step", color=c, ls="--", density=True)
    ax.set(xlabel="cosine similarity", ylabel="density", title="scores per group (solid genuine, dashed impostor)")
    ax.legend(fontsize=7)
    files["scores"] = _save(fig, out / f"scores_{name}.png")
    return files


def hardest_sheet(name, scores, pairs, groups, root: Path, out: Path, per_group: int = 3) -> str:
    """Per group: the highest-scoring impostor pairs and the lowest-scoring genuine pairs, side by side."""
    y = np.array([p["genuine"] for p in pairs], bool)
    g = np.array([p["group"] for p in pairs])
    tiles = []
    for grp in groups:
        imp = np.flatnonzero((g == grp) & ~y)
        gen = np.flatnonzero((g == grp) & y)
        pick = list(imp[np.argsort(-scores[imp])][:per_group]) + list(gen[np.argsort(scores[gen])][:per_group])
        for i in pick:
            for key in ("a", "b"):
                tiles.append(np.asarray(Image.open(root / pairs[i][key]).convert("RGB").resize((112, 112))))
        tiles += [np.full((112, 112, 3), 255, np.uint8)] * (4 * per_group - 2 * len(pick))
    save_image_atomic(image_grid(tiles, cols=4 * per_group), out / f"hardest_{name}.png")
    return f"hardest_{name}.png"


def _name(spec: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(spec.split(":", 1)[-1]).stem if ":" in spec else spec)


def run_evaluation(dataset, recognisers: Sequence[tuple[str, object]], out, groups_csv: Optional[str] = None,
                   pairs_path: Optional[str] = None, genuine: int = 3000, impostor: int = 3000, folds: int = 10,
                   seed: int = 0, target_fmr: float = 1e-3, cross_group: bool = False, n_boot: int = 200,
                   log: Callable[[str], None] = log_stderr) -> dict:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    items = load_items(dataset, groups_csv)
    if pairs_path:
        pairs = load_pairs(pairs_path)
    else:
        pairs = make_pairs(items, genuine, impostor, folds, seed, cross_group)
        save_pairs(pairs, out / "pairs.csv")
    if not pairs:
        raise SynthfaceError("no pairs could be formed (each group needs identities with 2+ images)")
    log(f"{len(pairs)} pairs ({sum(p['genuine'] for p in pairs)} genuine) over "
        f"{len(set(p['group'] for p in pairs))} groups")
    report = {"dataset": str(dataset), "pairs": len(pairs), "folds": folds, "seed": seed, "recognisers": {}}
    files = {}
    for spec, emb in recognisers:
        name = _name(spec)
        E = embeddings(emb, items, [p["a"] for p in pairs] + [p["b"] for p in pairs], out / "cache", log=log)
        s = pair_scores(E, pairs)
        res = group_metrics(s, pairs, target_fmr, n_boot=n_boot, seed=seed)
        res["recogniser"] = {"spec": spec, **emb.describe()}
        report["recognisers"][name] = res
        f = plots(name, s, pairs, res, out)
        f["hardest"] = hardest_sheet(name, s, pairs, list(res["groups"]), items.root, out)
        files[name] = f
    write_json_atomic(out / "metrics.json", report)
    md = markdown(report, files)
    atomic_write(out / "report.md", lambda f: f.write(md.encode()))
    atomic_write(out / "report.html", lambda f: f.write(to_html(md, out).encode()))
    return report


def _p(v, d=2):
    return "-" if v is None or (isinstance(v, float) and np.isnan(v)) else f"{100 * v:.{d}f}"


def markdown(rep: dict, files: dict) -> str:
    L = ["# Face verification per demographic group", "",
         f"Dataset `{rep['dataset']}`: {rep['pairs']} pairs, {rep['folds']}-fold cross-validation (identity-disjoint "
         "folds, impostors within the group), seed " + str(rep["seed"]) + ".", "",
         "## Summary", "",
         "| recogniser | mean accuracy % | STD | SER | FDR | IR | GARBE | at global FMR |", "|---|---|---|---|---|---|---|---|"]
    for name, r in rep["recognisers"].items():
        key = f"{r['target_fmr']:g}" if f"{r['target_fmr']:g}" in r["global"] else list(r["global"])[-1]
        gl = r["global"][key]
        irv = gl["inequity_rate"] if not np.isnan(gl["inequity_rate"]) else gl["inequity_rate_floored"]
        L.append(f"| {name} | {100 * r['accuracy_mean']:.2f} | {100 * r['accuracy_std']:.2f} | {r['ser']:.3f} | "
                 f"{gl['fdr']:.4f} | {irv:.3f}{'' if not np.isnan(gl['inequity_rate']) else ' (floored)'} | "
                 f"{gl['garbe']:.4f} | {key} |")
    for name, r in rep["recognisers"].items():
        f = files[name]
        L += ["", f"## {name}", "", f"`{r['recogniser']['spec']}`", "",
              "| group | accuracy % (95% CI) | EER % | TAR@1e-1 | TAR@1e-2 | TAR@1e-3 | TAR@1e-4 | genuine / impostor pairs |",
              "|---|---|---|---|---|---|---|---|"]
        for grp, m in r["groups"].items():
            t = m["tar_at_fmr"]
            L.append(f"| {grp} | {100 * m['accuracy']:.2f} ({100 * m['accuracy_ci95'][0]:.2f}-"
                     f"{100 * m['accuracy_ci95'][1]:.2f}) | {100 * m['eer']:.2f} | {_p(t['0.1'])} | {_p(t['0.01'])} | "
                     f"{_p(t['0.001'])} | {_p(t['0.0001'])} | {m['genuine_pairs']} / {m['impostor_pairs']} |")
        for grp, why in r["skipped"].items():
            L.append(f"| {grp} | not scored: {why} | | | | | | |")
        keys = list(r["global"])
        L += ["", "At one global threshold per target FMR (set on all impostors of the scored groups), FMR / FNMR in %:",
              "", "| group | " + " | ".join(f"FMR {k} (t={r['global'][k]['threshold']:.3f})" for k in keys) + " |",
              "|---|" + "---|" * len(keys)]
        for grp in r["groups"]:
            L.append(f"| {grp} | " + " | ".join(f"{100 * r['global'][k]['fmr'][grp]:.3f} / "
                                                 f"{100 * r['global'][k]['fnmr'][grp]:.2f}" for k in keys) + " |")

        def ir(gl):
            v, fl = gl["inequity_rate"], gl["inequity_rate_floored"]
            return f"{v:.3f}" if not np.isnan(v) else f"undefined (a rate is 0; {fl:.3f} with a 1/pairs floor)"
        L += ["| FDR | " + " | ".join(f"{r['global'][k]['fdr']:.4f}" for k in keys) + " |",
              "| Inequity Rate | " + " | ".join(ir(r["global"][k]) for k in keys) + " |",
              "| GARBE | " + " | ".join(f"{r['global'][k]['garbe']:.4f}" for k in keys) + " |"]
        L += ["", f"![ROC per group]({f['roc']})", "", f"![FMR and FNMR vs threshold]({f['rates']})", "",
              f"![score distributions]({f['scores']})", "",
              "Hardest pairs per group (one row per group: the three highest-scoring impostor pairs, then the "
              "three lowest-scoring genuine pairs):", "", f"![hardest pairs]({f['hardest']})"]
    return "\n".join(L) + "\n"


def to_html(md: str, out: Path) -> str:
    """A small Markdown subset (headings, tables, images, paragraphs) to self-contained HTML."""
    body, table = [], []

    def inline(t):
        t = html.escape(t)
        t = re.sub(r"`([^`]+)`", r"<code>\1</code>", t)
        return t

    def flush():
        if table:
            rows = [r for r in table if not re.fullmatch(r"\|(\s*-+\s*\|)+", r)]
            cells = [[c.strip() for c in r.strip("|").split("|")] for r in rows]
            h = "".join(f"<th>{inline(c)}</th>" for c in cells[0])
            b = "".join("<tr>" + "".join(f"<td>{inline(c)}</td>" for c in r) + "</tr>" for r in cells[1:])
            body.append(f"<table><thead><tr>{h}</tr></thead><tbody>{b}</tbody></table>")
            table.clear()
    for line in md.splitlines():
        if line.startswith("|"):
            table.append(line)
            continue
        flush()
        m = re.fullmatch(r"!\[([^\]]*)\]\(([^)]+)\)", line.strip())
        if m:
            data = base64.b64encode((out / m.group(2)).read_bytes()).decode()
            body.append(f'<figure><img alt="{html.escape(m.group(1))}" src="data:image/png;base64,{data}">'
                        f"<figcaption>{html.escape(m.group(1))}</figcaption></figure>")
        elif line.startswith("#"):
            n = len(line) - len(line.lstrip("#"))
            body.append(f"<h{n}>{inline(line[n:].strip())}</h{n}>")
        elif line.strip():
            body.append(f"<p>{inline(line)}</p>")
    flush()
    style = ("body{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em}"
             "table{border-collapse:collapse;margin:1em 0;font-size:13px}td,th{border:1px solid #ccc;padding:3px 6px}"
             "th{background:#f0f0f0}img{max-width:100%}figure{margin:1em 0}figcaption{font-size:12px;color:#555}")
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>synthface evaluation</title>"
            f"<style>{style}</style></head><body>{''.join(body)}</body></html>")
