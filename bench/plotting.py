"""matplotlib for the benchmarks' plots (the `bench` extra: `pip install -e '.[bench]'`), headless."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any


def pyplot() -> Any | None:
    """matplotlib.pyplot, or None (and a note) where it is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed (pip install -e '.[bench]'): no plot", file=sys.stderr)
        return None
    return plt


def save(fig: Any, path: Path) -> None:
    fig.tight_layout()
    fig.savefig(path, dpi=100)
