"""Check synthface's structure: no import cycle (between packages, and between modules), no lower
layer importing a higher one, no function over 80 lines and no module over 600 lines. Every import
counts, including the ones deferred inside functions (they still couple the modules). Exit status 1
and one line per violation when the code breaks the rules.

    python scripts/check_imports.py            # prints the layer table and any violations
    python scripts/check_imports.py --json     # the package graph as JSON

A "package" is a first-level subpackage of synthface (synthface/latent/...) or a first-level module
(synthface/fileio.py). The layers, lowest first, are the single source of truth that
docs/architecture.md describes; a new package must be added here. Module cycles are checked on
every file: a package's __init__.py counts as its own module, so a submodule importing its own
package's names (`from ..latent import x` inside synthface/latent/) is a cycle.
"""

from __future__ import annotations

import argparse
import ast
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

LAYERS: list[tuple[str, ...]] = [
    # 0: no synthface imports beyond each other (errors, file writing, small helpers, asset paths)
    ("errors", "fileio", "locks", "utils", "assets", "align", "weights"),
    # 1: networks: the StyleGAN2 generator and face-model definitions
    ("generator", "nets"),
    # 2: what the pipeline builds on networks: latent model, labellers, recognisers, metrics
    ("latent", "labelling", "identity", "fairness"),
    # 3: datasets, evaluation, training, methods, and the demo world built from all of them
    ("dataset", "evaluation", "train", "methods", "world"),
    # 4: entry points, and the package's public names (synthface/__init__.py re-exports from below)
    ("cli", "demo", "experiments", "__main__", "__init__"),
]


def layer_of(package: str) -> int:
    for i, names in enumerate(LAYERS):
        if package in names:
            return i
    raise KeyError(package)


def package_of(module: str) -> str:
    """'synthface.latent.bank' -> 'latent'; 'synthface' -> '__init__'."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def module_name(path: Path, root: Path = ROOT) -> str:
    rel = path.relative_to(root).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def imports_of(path: Path, root: Path = ROOT) -> set[str]:
    """Absolute names of the synthface modules `path` imports (relative imports resolved)."""
    mod = module_name(path, root)
    is_pkg = path.name == "__init__.py"
    base = mod.split(".") if is_pkg else mod.split(".")[:-1]
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name.split(".")[0] == "synthface")
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                anchor = base[:len(base) - (node.level - 1)] if node.level > 1 else base
                target = ".".join(anchor + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] != "synthface":
                continue
            if target == "synthface" or (node.module is None):
                # `from . import x` / `from synthface import x`: x may be a subpackage
                out.update(f"{target}.{a.name}" for a in node.names)
            else:
                out.add(target)
    return out


def package_graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for path in sorted((ROOT / "synthface").rglob("*.py")):
        src = package_of(module_name(path))
        graph.setdefault(src, set())
        for target in imports_of(path):
            dst = package_of(target)
            if (ROOT / "synthface" / dst).exists() or (ROOT / "synthface" / f"{dst}.py").exists():
                if dst != src:
                    graph[src].add(dst)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one package (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


MAX_FUNCTION_LINES = 80
MAX_MODULE_LINES = 600
# Functions over the limit that another branch is splitting: "path:qualified name" -> why it is here.
# An entry no longer over the limit is reported too, so the list cannot go stale.
PENDING_SPLITS: dict[str, str] = {}


def module_graph(root: Path = ROOT) -> dict[str, set[str]]:
    """Every synthface module -> the synthface modules it imports (an imported name that is not a
    module, e.g. `from synthface.latent import build_bank`, counts as its package's __init__)."""
    paths = {module_name(p, root): p for p in sorted((root / "synthface").rglob("*.py"))}
    graph: dict[str, set[str]] = {}
    for mod, path in paths.items():
        graph[mod] = set()
        for target in imports_of(path, root):
            while target not in paths and "." in target:
                target = target.rsplit(".", 1)[0]
            if target in paths and target != mod:
                graph[mod].add(target)
    return graph


def _functions(tree: ast.AST, prefix: str = ""):
    """(qualified name, node) of every function, methods and nested functions included."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            yield prefix + node.name, node
            yield from _functions(node, prefix + node.name + ".")
        elif isinstance(node, ast.ClassDef):
            yield from _functions(node, prefix + node.name + ".")
        else:
            yield from _functions(node, prefix)


def size_violations(max_function: int = MAX_FUNCTION_LINES, max_module: int = MAX_MODULE_LINES,
                    pending: dict[str, str] = PENDING_SPLITS, root: Path = ROOT) -> list[str]:
    problems, seen = [], set()
    for path in sorted((root / "synthface").rglob("*.py")):
        rel = path.relative_to(root).as_posix()
        text = path.read_text()
        n = len(text.splitlines())
        if n > max_module:
            problems.append(f"{rel}: {n} lines (at most {max_module}): split the module")
        for name, node in _functions(ast.parse(text, rel)):
            length = node.end_lineno - node.lineno + 1
            if length > max_function:
                key = f"{rel}:{name}"
                if key in pending:
                    seen.add(key)
                    continue
                problems.append(f"{key} (line {node.lineno}): {length} lines (at most {max_function}): "
                                "split it into named steps")
    for key in sorted(set(pending) - seen):
        problems.append(f"{key} is in PENDING_SPLITS but no longer over {max_function} lines: remove the entry")
    return problems


def violations(graph: dict[str, set[str]]) -> list[str]:
    problems = []
    for src in sorted(graph):
        try:
            ls = layer_of(src)
        except KeyError:
            problems.append(f"synthface.{src} is in no layer: add it to LAYERS in scripts/check_imports.py")
            continue
        for dst in sorted(graph[src]):
            try:
                ld = layer_of(dst)
            except KeyError:
                continue  # reported as its own line
            if ld > ls:
                problems.append(f"synthface.{src} (layer {ls}) imports synthface.{dst} (layer {ld}): "
                                "lower layers must not import higher ones")
    for comp in cycles(graph):
        problems.append("import cycle between packages: " + " <-> ".join(comp))
    return problems


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    graph = package_graph()
    problems = violations(graph)
    problems += ["import cycle between modules: " + " <-> ".join(c) for c in cycles(module_graph())]
    problems += size_violations()
    if args.json:
        print(json.dumps({k: sorted(v) for k, v in sorted(graph.items())}, indent=2))
    else:
        for i, names in enumerate(LAYERS):
            present = [n for n in names if n in graph]
            print(f"layer {i}: {', '.join(present)}")
        for p in problems:
            print(p)
        print("structure OK" if not problems else f"{len(problems)} problem(s)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
