"""Click parameter types shared by every command: an option's value is checked where it is parsed, so a
bad one stops the command with exit code 2 and a message naming the option, before anything is read
or written.

    FINITE, FiniteFloat(lo, hi)   real numbers only (nan / inf refused), optionally in a range
    PROBABILITY, FMR, FRACTION    0..1, a false-match rate in (0, 1), a fraction in (0, 1)
    POSITIVE_INT, NONNEG_INT      counts
    CommaList(...)                "a,b,c": at least one item, no duplicates, optionally from a set
    CELLS                         a non-empty cell selection ('all' or 'a=b,c=d;...')
    DEVICE                        auto, cpu, cuda, cuda:N, mps
    SEEDS                         "0-7,12": checked (count, range) before the list is built
    SEED, SIMILARITY              one seed below 2**32, a cosine similarity in [-1, 1]
"""

from __future__ import annotations

import math
import re
from typing import Optional, Sequence

import click

MAX_SEEDS = 10_000_000  # a seed list beyond this is a typo, and expanding it would exhaust memory
SEED_LIMIT = 2 ** 32  # numpy RandomState's limit


class FiniteFloat(click.FloatRange):
    """A float that must be finite (click's FloatRange lets nan through every bound: nan < x is False)."""

    name = "number"

    def convert(self, value, param, ctx):
        if isinstance(value, str):
            try:
                number = float(value)
            except ValueError:
                self.fail(f"{value!r} is not a number; give a number{self._hint()}", param, ctx)
        else:
            number = value
        if isinstance(number, (int, float)) and not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number; give a real number{self._hint()}", param, ctx)
        return super().convert(value, param, ctx)

    def _hint(self) -> str:
        if self.min is None and self.max is None:
            return ""
        return f" in the range {self._describe_range()}"

    def _describe_range(self) -> str:
        # click would print an unbounded range as 'x<=None' in --help
        if self.min is None and self.max is None:
            return ""
        return super()._describe_range()


FINITE = FiniteFloat()
PROBABILITY = FiniteFloat(0.0, 1.0)
FRACTION = FiniteFloat(0.0, 1.0, min_open=True, max_open=True)
FMR = FiniteFloat(0.0, 1.0, min_open=True, max_open=True)
POSITIVE = FiniteFloat(0.0, min_open=True)
NONNEGATIVE = FiniteFloat(0.0)
POSITIVE_INT = click.IntRange(min=1)
NONNEG_INT = click.IntRange(min=0)
SEED = click.IntRange(0, SEED_LIMIT - 1)
SIMILARITY = FiniteFloat(-1.0, 1.0)  # cosine similarities


class CommaList(click.ParamType):
    """'a,b,c' -> ('a', 'b', 'c'): blanks around items ignored, at least `min_items`, no item twice, and
    (with `choices`) only known items."""

    name = "list"

    def __init__(self, choices: Optional[Sequence[str]] = None, min_items: int = 1, item: str = "item"):
        self.choices = tuple(choices) if choices else None
        self.min_items = min_items
        self.item = item

    def convert(self, value, param, ctx):
        if isinstance(value, (list, tuple)):
            items = [str(v).strip() for v in value]
        else:
            items = [v.strip() for v in str(value).split(",")]
        items = [v for v in items if v]
        if len(items) < self.min_items:
            self.fail(f"{value!r} names no {self.item}; give at least {self.min_items}, separated by commas", param,
                      ctx)
        twice = sorted({v for v in items if items.count(v) > 1})
        if twice:
            self.fail(f"{', '.join(twice)} listed more than once in {value!r}; give each {self.item} once", param, ctx)
        if self.choices:
            unknown = [v for v in items if v not in self.choices]
            if unknown:
                self.fail(f"unknown {self.item} {', '.join(map(repr, unknown))}; choose from "
                          f"{', '.join(self.choices)}", param, ctx)
        return tuple(items)


class CellSelection(click.ParamType):
    """--cells: 'all', 'all:ATTR,...' or cells separated by ';' — never empty (an empty one would select nothing)."""

    name = "cells"

    def convert(self, value, param, ctx):
        text = str(value).strip()
        parts = [p.strip() for p in text.split(";") if p.strip()]
        if not parts:
            self.fail("no cell given; use 'all' or cells separated by ';', e.g. "
                      "'gender=female,group=group1;gender=male,group=group1'", param, ctx)
        twice = sorted({p for p in parts if parts.count(p) > 1})
        if twice:
            self.fail(f"cell {', '.join(twice)} listed more than once; give each cell once", param, ctx)
        return text


CELLS = CellSelection()
CELLS_HELP = ("'all' (every full cell), 'all:ATTR,...' (every combination of those attributes, each balanced over "
              "the others, e.g. all:group,gender) or cells separated by ';'")


class Device(click.ParamType):
    """auto, cpu, cuda, cuda:N or mps, and present on this machine (a missing GPU is a usage error, not a
    silent fallback to the CPU in one command and a failure in the next)."""

    name = "device"
    PATTERN = re.compile(r"auto|cpu|mps|cuda(:\d+)?")

    def convert(self, value, param, ctx):
        text = str(value).strip().lower()
        if not self.PATTERN.fullmatch(text):
            self.fail(f"{value!r} is not a device synthface can use; give auto, cpu, cuda or cuda:N", param, ctx)
        if text.startswith("cuda"):
            import torch

            count = torch.cuda.device_count() if torch.cuda.is_available() else 0
            index = int(text.partition(":")[2] or 0)
            if count == 0:
                self.fail(f"{text}: no CUDA device is available on this machine; use cpu or auto", param, ctx)
            if index >= count:
                self.fail(f"{text}: this machine has {count} CUDA device(s), cuda:0 to cuda:{count - 1}", param, ctx)
        if text == "mps":
            import torch

            if not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
                self.fail("mps: this PyTorch has no Apple-GPU (MPS) support here; use cpu or auto", param, ctx)
        return text


DEVICE = Device()


class SeedList(click.ParamType):
    """'0-7,12' -> [0, ..., 7, 12], checked before it is expanded: an absurd range (10^11 seeds) is refused
    instead of exhausting memory."""

    name = "seeds"

    def __init__(self, max_count: int = MAX_SEEDS):
        self.max_count = max_count

    def convert(self, value, param, ctx):
        if isinstance(value, list):
            return value
        count = 0
        for part in (p.strip() for p in str(value).split(",")):
            if not part:
                continue
            m = re.fullmatch(r"(\d+)\s*-\s*(\d+)", part)
            if m:
                lo, hi = int(m.group(1)), int(m.group(2))
            elif part.isdigit():
                lo = hi = int(part)
            else:
                self.fail(f"bad seed {part!r}: use non-negative integers and ranges, e.g. 0-7,12", param, ctx)
            if hi < lo:
                self.fail(f"bad seed range {part!r}: the end is before the start", param, ctx)
            if hi >= SEED_LIMIT:
                self.fail(f"seed {hi} in {part!r} is too large; seeds must be below 2**32 = {SEED_LIMIT}", param, ctx)
            count += hi - lo + 1
        if count == 0:
            self.fail("no seeds given; use e.g. 0-7,12", param, ctx)
        if count > self.max_count:
            self.fail(f"{value!r} names {count:,} seeds, more than the {self.max_count:,} one run takes; split it "
                      "into several runs with smaller ranges", param, ctx)
        from ..generator.synthesis import parse_seeds

        return parse_seeds(str(value))


SEEDS = SeedList()


__all__ = ["FiniteFloat", "FINITE", "PROBABILITY", "FRACTION", "FMR", "POSITIVE", "NONNEGATIVE", "POSITIVE_INT",
           "NONNEG_INT", "SEED", "SIMILARITY", "CommaList", "CELLS", "DEVICE", "SEEDS", "MAX_SEEDS"]


LABELLER_HELP = ("Attribute labeller (repeatable): world, world-audit, world-age (world plus age classes), "
                 "onnx:PATH (JSON sidecar beside it), "
                 "genderage:PACK_DIR_OR_ONNX, fairface:PT, fairface4:PT; SPEC#ATTR,... keeps only those attributes "
                 "of one labeller (when two produce the same one).")
SCHEMA_HELP = ("Rename attributes / map label sets: a preset (fairface6, fairface4), a JSON file or inline JSON "
               '{"ethnicity": {"from": "race", "classes": {"East Asian": "asian", ...}}}.')
EMBEDDER_HELP = ("Recogniser: world, world-audit, onnx:PATH, insightface:PACK_DIR, torchscript:PATH, arcface:PATH "
                 "(arcface_torch model.pt), torch:PATH (synthface backbone.safetensors).")


PRECISION_HELP = ("synthesis arithmetic on CPU: fp32, or bf16 (faster on CPUs with bf16 units, about 1e-1 largest "
                  "pixel error on a [-1, 1] scale; a bank or dataset keeps the precision it was begun with)")


def load_network(network: str, device: str, precision: str = "fp32"):
    """Load --network ('world': the demo world's generator) on --device; returns (G, torch device)."""
    from ..generator import load_generator, resolve_device
    from .errors import run_api

    dev = run_api(resolve_device, device)
    return run_api(load_generator, network, device=dev, precision=precision), dev
