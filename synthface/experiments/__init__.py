"""Experiments: scripted studies that build data, train and evaluate models, and write a report
(report.md, report.html with embedded plots, results.json) into one folder.

Each experiment is a module with `run(out, quick=False, overrides=None, log=...) -> dict`, listed in
EXPERIMENTS by name with a one-line description; `synthface experiment NAME --out DIR [--quick]`
runs it. Modules are imported only when run, so listing them costs nothing.
"""

from __future__ import annotations

import importlib
from typing import Callable

from ..errors import SynthfaceError

# name -> (module under synthface.experiments, one-line description)
EXPERIMENTS: dict[str, tuple[str, str]] = {
    "cid": ("cid", "CID bias-injection sweep: ERM, CID and the identity oracle on smile with a few people "
                   "dominating the positives (issue 16)"),
    "pretrain": ("pretrain", "recognisers trained on biased real, balanced synthetic, prior synthetic and mixed faces, "
                             "scored on a balanced renderer benchmark (issue 14)"),
    "san": ("san", "Semi-Adversarial Networks trained on balanced synthetic identities, judged by unseen gender "
                   "classifiers and matcher on renderer faces (issue 17)"),
    "sensitivenets": ("sensitivenets", "SensitiveNets trained on balanced synthetic identities, leakage of gender and "
                                       "group and verification before/after on renderer people (issue 15)"),
}


def get(name: str) -> Callable:
    """The run function of a registered experiment."""
    if name not in EXPERIMENTS:
        raise SynthfaceError(f"unknown experiment {name!r}; choose one of {', '.join(sorted(EXPERIMENTS))}")
    module = importlib.import_module(f"{__name__}.{EXPERIMENTS[name][0]}")
    return module.run


def parse_overrides(items) -> dict:
    """KEY=VALUE strings -> {key: value}, values read as JSON when they parse (numbers, lists,
    true/false), else kept as text."""
    import json

    out = {}
    for item in items or ():
        key, sep, value = str(item).partition("=")
        if not sep or not key.strip():
            raise SynthfaceError(f"--set {item!r}: write KEY=VALUE, e.g. --set seeds=[0,1,2]")
        try:
            out[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            out[key.strip()] = value
    return out


__all__ = ["EXPERIMENTS", "get", "parse_overrides"]
