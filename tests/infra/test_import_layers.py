"""The import layers `make lint` holds (import-linter, `[tool.importlinter]` in pyproject.toml): the tree
keeps them, a wrong-way import breaks them, and the graph has no package loop between rooms."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bench.import_graph import PACKAGES, measure
from infra.config.settings import REPO_ROOT

LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"


def lint_imports(root: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache"],
        cwd=root,
        env={"PYTHONPATH": str(root), "PATH": str(Path(sys.executable).parent)},
        capture_output=True,
        text=True,
        timeout=120,
    )


def copy_of_the_tree(tmp_path: Path) -> Path:
    for package in PACKAGES:
        shutil.copytree(REPO_ROOT / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO_ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    return tmp_path


def test_the_tree_keeps_its_layers() -> None:
    run = lint_imports(REPO_ROOT)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "0 broken" in run.stdout


@pytest.mark.parametrize(
    ("module", "wrong_import", "named"),
    [
        # The API reaching for a CLI module (as api/routes/turns.py once did for replay).
        ("api/routes/health.py", "import infra.cli.replay", "api is not allowed to import infra.cli"),
        # The database layer reaching up into the steps.
        ("db/usage.py", "import activities.chat.transcript", "db is not allowed to import activities"),
        # Pure logic reaching for what a worker registers.
        (
            "activities/logic/prompt.py",
            "import activities.chat.turn_steps",
            "activities.logic is not allowed",
        ),
    ],
)
def test_a_wrong_way_import_breaks_a_contract(
    tmp_path: Path, module: str, wrong_import: str, named: str
) -> None:
    root = copy_of_the_tree(tmp_path)
    target = root / module
    target.write_text(target.read_text() + f"\n{wrong_import}  # noqa\n")
    run = lint_imports(root)
    assert run.returncode != 0
    assert named in run.stdout, run.stdout


def test_no_package_loop_between_rooms() -> None:
    rooms = measure(REPO_ROOT)["rooms"]
    assert isinstance(rooms, dict)
    assert rooms["loops"] == [] and rooms["arrows_up"] == 0, rooms
