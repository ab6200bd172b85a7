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
