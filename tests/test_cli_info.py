"""The command line's skeleton: help lists every subcommand, info reports the environment."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from posekit import cli


def test_help_lists_every_subcommand(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for name in cli._COMMANDS:
        assert name in out


def test_no_command_prints_help_and_fails(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main([]) == 2
    assert "COMMAND" in capsys.readouterr().out


def test_info_reports_versions_and_cache(tmp_path, monkeypatch, capsys) -> None:
    import torch

    monkeypatch.setenv("POSEKIT_HOME", str(tmp_path))
    assert cli.main(["info"]) == 0
    out = capsys.readouterr().out
    assert torch.__version__ in out
    assert str(tmp_path) in out
    assert "none" in out  # an empty cache holds no weights


def test_console_script_is_installed() -> None:
    # The `posekit` entry point from pyproject must sit beside the interpreter and run main().
    script = Path(sys.executable).parent / "posekit"
    result = subprocess.run([str(script), "--help"], capture_output=True, text=True)
    assert result.returncode == 0 and "usage: posekit" in result.stdout


def test_version_agrees_with_pyproject(capsys: pytest.CaptureFixture[str], tmp_path, monkeypatch) -> None:
    import re

    import posekit

    pyproject = (Path(__file__).resolve().parent.parent / "pyproject.toml").read_text()
    expected = re.search(r'^version = "([^"]+)"', pyproject, re.MULTILINE).group(1)
    assert posekit.__version__ == expected
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.strip() == f"posekit {expected}"
    monkeypatch.setenv("POSEKIT_HOME", str(tmp_path))
    assert cli.main(["info"]) == 0
    assert re.search(rf"^posekit +{re.escape(expected)}$", capsys.readouterr().out, re.MULTILINE)


def test_package_metadata_carries_version_and_license(tmp_path) -> None:
    # What `pip install` of the repository records: this release's version and the MIT LICENSE file.
    import re

    root = Path(__file__).resolve().parent.parent
    made = subprocess.run(
        [sys.executable, "-c", "import sys; from setuptools import build_meta; "
         "print(build_meta.prepare_metadata_for_build_wheel(sys.argv[1]))", str(tmp_path)],
        cwd=root, capture_output=True, text=True, check=True,
    ).stdout.split()[-1]
    metadata = (tmp_path / made / "METADATA").read_text()
    pyproject = (root / "pyproject.toml").read_text()
    version = re.search(r'^version = "([^"]+)"', pyproject, re.MULTILINE).group(1)
    assert f"Version: {version}" in metadata
    assert "License-Expression: MIT" in metadata and "License-File: LICENSE" in metadata
    license_text = (tmp_path / made / "licenses" / "LICENSE").read_text()
    assert license_text.startswith("MIT License") and "2026 posekit contributors" in license_text
