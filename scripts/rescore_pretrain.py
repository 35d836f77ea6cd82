#!/usr/bin/env python
"""Score finished `synthface experiment pretrain` networks on benchmark people drawn afresh: renderer people of
another identity range (default BENCH_FIRST + 50,000 in every cell's range, never used by any experiment), built
and scored exactly as the experiment's own benchmark (balanced pairs, bootstrap CIs, paired differences to (a)).
It checks that a setting chosen among several seen on the experiment's benchmark holds on people it never saw.

    python scripts/rescore_pretrain.py runs/pretrain-refine-strong runs/pretrain-refine-strong-2x \
        --out runs/pretrain-fresh-bench

Each RUN's `runs/<set>/backbone.safetensors` is scored; a set found in several runs is taken from the first.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from synthface.experiments.pretrain import SETS, evaluate, make_config, summary_row  # noqa: E402
from synthface.experiments.pretrain_data import BENCH_FIRST, build_renderer_set  # noqa: E402
from synthface.fileio import write_json_atomic  # noqa: E402


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--bench-first", type=int, default=BENCH_FIRST + 50_000)
    a = ap.parse_args(argv)
    t0 = time.time()
    cfg = make_config(overrides=json.loads((a.runs[0] / "results.json").read_text())["config"])
    nets = {}
    for run in a.runs:
        for k, (folder, _) in SETS.items():
            if k not in nets and (run / "runs" / folder / "backbone.safetensors").is_file():
                nets[k] = run / "runs" / folder
    key = {"stage": "benchmark", "first": a.bench_first, **{k: getattr(cfg, k) for k in (
        "world_seed", "render_size", "bench_ids_per_cell", "bench_images")}}
    bench = build_renderer_set(a.out / "benchmark", key, cfg.world_seed, a.bench_first, cfg.bench_ids_per_cell,
                               cfg.bench_images, cfg.render_size, print, "fresh benchmark")
    rep, diffs = evaluate(cfg, bench, nets, a.out / "evaluation", print)
    rows = [summary_row(name, r) for name, r in rep["recognisers"].items()]
    out = {"runs": [str(r) for r in a.runs], "bench_first": a.bench_first, "sets": {k: str(v) for k, v in nets.items()},
           "table": rows, "paired_differences": diffs, "seconds": round(time.time() - t0, 1)}
    write_json_atomic(a.out / "results.json", out)
    for r in rows:
        d = diffs.get(r["recogniser"], {}).get("accuracy_mean")
        print(f"{r['recogniser']:<18} accuracy {100 * r['accuracy_mean']:.2f} %  worst cell "
              f"{100 * r['worst_cell_accuracy']:.2f} %  STD {100 * r['accuracy_std']:.2f}"
              + (f"  minus (a) {100 * d[0]:+.2f} [{100 * d[1]:+.2f}, {100 * d[2]:+.2f}]" if d else ""))
    return out


if __name__ == "__main__":
    main()
