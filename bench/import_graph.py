"""The import graph of turnflow's packages in numbers: modules per folder, package loops, arrows that
point up. `python -m bench.import_graph [--json]` from the repository root (any checkout: run it on an
old commit's worktree to compare).

- A *room* is a folder of modules: `infra/config`, `activities/chat`, `api/routes`, or a top-level
  package for the modules directly in it (`api`, `db`).
- A *loop* is a set of packages (top-level, or rooms) each reachable from every other (a strongly
  connected component of the package graph with more than one member).
- An *arrow pointing up* is a module import that, between two packages importing each other, goes the
  lighter way (fewer imports): the direction a layering would forbid. With no loops there are none;
  `make lint` (import-linter, `.importlinter`) then holds the direction the layers say.

Built with grimp, the graph library import-linter uses, counting every import (function-level and
`TYPE_CHECKING` ones too).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter, defaultdict
from pathlib import Path

import grimp

PACKAGES = ("workflows", "activities", "api", "workers", "db", "infra")


def room_of(module: str, packages: set[str]) -> str:
    """The deepest package holding the module, below a top-level package at most two deep."""
    parts = module.split(".")
    for depth in (2, 1):
        candidate = ".".join(parts[:depth])
        if candidate in packages and (candidate != module or depth == 1):
            return candidate
    return parts[0]


def strongly_connected(nodes: set[str], edges: dict[str, set[str]]) -> list[set[str]]:
    """Tarjan's algorithm; only components with more than one node."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[set[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.add(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(component)

    for node in sorted(nodes):
        if node not in index:
            visit(node)
    return found


def package_graph(
    imports: list[tuple[str, str]], group: dict[str, str]
) -> tuple[dict[str, set[str]], Counter[tuple[str, str]]]:
    arrows: Counter[tuple[str, str]] = Counter()
    for importer, imported in imports:
        a, b = group[importer], group[imported]
        if a != b:
            arrows[(a, b)] += 1
    edges: dict[str, set[str]] = defaultdict(set)
    for a, b in arrows:
        edges[a].add(b)
    return edges, arrows


def upward(arrows: Counter[tuple[str, str]]) -> dict[str, int]:
    """For each pair of packages importing each other, the lighter direction's imports."""
    out: dict[str, int] = {}
    for (a, b), n in arrows.items():
        back = arrows.get((b, a), 0)
        if back and (n, a) < (back, b):
            out[f"{a} -> {b}"] = n
    return out


def measure(root: Path) -> dict[str, object]:
    sys.path.insert(0, str(root))
    graph = grimp.build_graph(*PACKAGES, cache_dir=None)
    modules = {m for m in graph.modules if m.split(".")[0] in PACKAGES}
    packages = {m for m in modules if (root / m.replace(".", "/") / "__init__.py").exists()}
    imports = [(m, i) for m in modules for i in graph.find_modules_directly_imported_by(m) if i in modules]
    rooms = {m: room_of(m, packages) for m in modules}
    tops = {m: m.split(".")[0] for m in modules}
    # Modules per folder, not counting __init__.py.
    per_room = Counter(rooms[m] for m in modules if m not in packages)
    report: dict[str, object] = {
        "modules": len(modules - packages),
        "modules_per_folder": dict(sorted(per_room.items())),
    }
    for level, group in (("top_level", tops), ("rooms", rooms)):
        edges, arrows = package_graph(imports, group)
        loops = strongly_connected(set(group.values()), edges)
        up = upward(arrows)
        report[level] = {
            "loops": [sorted(c) for c in loops],
            "two_way_pairs": len(up),
            "arrows_up": sum(up.values()),
            "arrows_up_by_pair": up,
        }
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("root", nargs="?", default=".", type=Path, help="the checkout to measure")
    parser.add_argument("--json", action="store_true", help="print JSON only")
    args = parser.parse_args()
    report = measure(args.root.resolve())
    if args.json:
        print(json.dumps(report, indent=2))
        return
    print(f"modules: {report['modules']}")
    for room, n in report["modules_per_folder"].items():  # type: ignore[attr-defined]
        print(f"  {room:<24} {n}")
    for level in ("top_level", "rooms"):
        r = report[level]
        assert isinstance(r, dict)
        print(
            f"{level}: {len(r['loops'])} loops ({r['two_way_pairs']} pairs importing each other),"
            f" {r['arrows_up']} arrows pointing up"
        )
        for loop in r["loops"]:
            print("  loop: " + " ⇄ ".join(loop))
        for pair, n in r["arrows_up_by_pair"].items():
            print(f"  up: {pair} ({n})")


if __name__ == "__main__":
    main()
