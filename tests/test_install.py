"""Reproducible installs: the constraints file pins what pyproject asks for, and `make venv`, `.ci/run`
and environment.yml install with it (a fake interpreter records what pip would have been asked)."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parent.parent
CONSTRAINTS = ROOT / "requirements" / "constraints.txt"


def pins(path: Path) -> dict[str, Version]:
    lines = [line for line in path.read_text().splitlines() if line and not line.startswith("#")]
    found = {}
    for line in lines:
        match = re.fullmatch(r"([A-Za-z0-9_.-]+)==([^\s;+]+)", line)
        assert match, f"{path}: {line!r} is not an exact NAME==VERSION pin without a local label"
        found[canonicalize_name(match.group(1))] = Version(match.group(2))
    return found


def test_constraints_pin_every_dependency_within_pyproject() -> None:
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pinned = pins(CONSTRAINTS)
    assert "posekit" not in pinned  # the package under test is installed from the tree, never pinned
    for text in [*project["dependencies"], *project["optional-dependencies"]["dev"]]:
        requirement = Requirement(text)
        if canonicalize_name(requirement.name) == "setuptools":  # pip freeze leaves the build tools out
            continue
        version = pinned.get(canonicalize_name(requirement.name))
        assert version is not None, f"{requirement.name} has no pin in {CONSTRAINTS.name} (run make lock)"
        assert requirement.specifier.contains(version, prereleases=True), f"{requirement.name}=={version} violates {text!r}"


def test_environment_yml_installs_with_the_constraints() -> None:
    environment = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip_section = next(item["pip"] for item in environment["dependencies"] if isinstance(item, dict))
    assert pip_section == ["-c requirements/constraints.txt", "-e .[dev]"]
    # conda writes the pip section into a file beside environment.yml: the -c path resolves from there.
    assert (ROOT / pip_section[0].split()[1]).is_file()


@pytest.fixture
def fake_venv(tmp_path: Path) -> tuple[Path, Path]:
    """A venv whose python logs its arguments and exits with the status in the file ``status``."""
    bin_dir = tmp_path / "venv" / "bin"
    bin_dir.mkdir(parents=True)
    log = tmp_path / "calls.log"
    python = bin_dir / "python"
    python.write_text(f'#!/bin/sh\necho "$@" >> {log}\nexit $(cat {tmp_path / "status"})\n')
    python.chmod(0o755)
    (tmp_path / "status").write_text("0")
    return tmp_path / "venv", log


def make(*args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(["make", "-s", "-C", str(ROOT), *args], capture_output=True, text=True,
                          env={**os.environ, **env})


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_make_venv_installs_with_constraints_and_reinstalls_when_they_change(fake_venv, tmp_path) -> None:
    venv, log = fake_venv
    constraints = tmp_path / "constraints.txt"
    constraints.write_text("numpy==2.0.0\n")
    options = (f"VENV={venv}", f"CONSTRAINTS={constraints}")
    assert make("venv", *options).returncode == 0
    assert f"-c {constraints} -e .[dev]" in log.read_text()
    assert make("venv", *options).returncode == 0
    assert len(log.read_text().splitlines()) == 1  # nothing changed: the stamp spares a reinstall
    constraints.write_text("numpy==2.0.1\n")
    assert make("venv", *options).returncode == 0
    assert len(log.read_text().splitlines()) == 2  # the stamp holds the constraints' hash


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_failed_install_fails_make_and_ci_loudly(fake_venv, tmp_path) -> None:
    venv, log = fake_venv
    (tmp_path / "status").write_text("1")
    result = make("venv", f"VENV={venv}")
    assert result.returncode != 0 and f"make: error: installing posekit into {venv} failed" in result.stderr
    assert not (venv / ".posekit-installed").exists()  # the next run tries again
    ci = subprocess.run(["bash", str(ROOT / ".ci" / "run")], capture_output=True, text=True,
                        env={**os.environ, "POSEKIT_CI_VENV": str(venv)})
    assert ci.returncode != 0
    assert ci.stderr.strip().splitlines()[-1] == f".ci/run: error: the install into {venv} failed; no test was run"
    assert "-m pytest" not in log.read_text()  # no test ran on a half-installed venv


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_make_lock_pins_the_venv_without_posekit(fake_venv, tmp_path) -> None:
    venv, log = fake_venv
    freeze = tmp_path / "freeze"
    freeze.write_text("numpy==2.4.6\nposekit==0.3.0\ntorch==2.14.1+cu130\n")
    (venv / "bin" / "python").write_text(f'#!/bin/sh\ncase "$*" in -V) echo "Python 3.11.7";; *) cat {freeze};; esac\n')
    lock = tmp_path / "out" / "constraints.txt"
    lock.parent.mkdir()
    result = make("lock", f"VENV={venv}", f"CONSTRAINTS={lock}")
    assert result.returncode == 0, result.stderr
    assert pins(lock) == {"numpy": Version("2.4.6"), "torch": Version("2.14.1")}
    assert "make test-latest && make lock" in lock.read_text()


def test_finetune_run_folder_is_git_ignored() -> None:
    # Run All with the default OUT (relative to notebooks/) leaves checkpoints nothing may commit by mistake.
    cell = json.loads((ROOT / "notebooks" / "06_finetune.ipynb").read_text())["cells"][1]["source"]
    cell = "".join(cell)
    out = re.search(r'^OUT = "([^"]+)"', cell, re.MULTILINE).group(1)
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    for name in ("last.pth", "best.pth", "log.csv"):
        ignored = subprocess.run(["git", "check-ignore", "-q", f"notebooks/{out}/run/{name}"], cwd=ROOT)
        assert ignored.returncode == 0, f"notebooks/{out}/run/{name} is not git-ignored"
