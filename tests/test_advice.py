"""Advice works as printed: offline, follow what each failing command says to do until it succeeds.

A command that fails offline names a way out (``pass --detector none``, ``--propagation pose``,
``posekit weights download NAME``). These tests run the real CLI with an empty cache and no reachable
network, take the advice from the printed line, run it, and expect progress: a different failure, or
success. Placeholders (``PATH``) are filled with a real file of that kind.
"""
from __future__ import annotations

import re
import shlex

import pytest
import torch

from posekit.cli import main
from posekit.data import COCO_SAMPLE_DIR, VIDEO_SAMPLE_CLIP
from posekit.models.pose_resnet import pose_resnet
from posekit.models.weights import save_checkpoint

PHOTO = sorted(COCO_SAMPLE_DIR.glob("*.jpg"))[0]
# "pass --detector none", "(--propagation pose)", "use --init none": a flag and, unless it is a placeholder
# in capitals (PATH, FILE), its value.
FLAG = re.compile(r"(?:pass|use|with|\() ?(--[a-z][a-z-]*)(?: ([a-z0-9_.-]+|[A-Z]+))?")
COMMAND = re.compile(r"`?(posekit [a-z-]+(?: [a-z0-9_.-]+)*)`?")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    return save_checkpoint(pose_resnet(18), tmp_path_factory.mktemp("weights") / "mine.pth")


def _run(capsys, argv: list[str]) -> tuple[int, str]:
    code = main(argv)
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def _advised_flags(line: str, placeholders: dict[str, str]) -> list[list[str]]:
    """The options a failure line advises, each as argv words; a placeholder value filled in, or the
    option skipped when the test has no file for it."""
    advised = []
    for flag, value in FLAG.findall(line):
        if value.isupper():
            if flag not in placeholders:
                continue
            value = placeholders[flag]
        advised.append([flag, value] if value else [flag])
    return advised


def _follow(capsys, argv: list[str], placeholders: dict[str, str], steps: int = 4) -> list[str]:
    """Run ``argv``; while it fails, add the first advised option not given yet and run again.

    Returns the options added, in order. Fails when a failure advises nothing new (advice that
    leads nowhere) or when advice is not taken by the command (an argparse usage error).
    """
    added: list[str] = []
    for _ in range(steps):
        code, printed = _run(capsys, argv + added)
        assert "Traceback" not in printed and "usage:" not in printed, printed
        if code == 0:
            return added
        [error] = [line for line in printed.splitlines() if ": error: " in line]
        new = [flag for flag in _advised_flags(error, placeholders) if flag[0] not in argv + added]
        assert new, f"{error!r} advises nothing that was not done already"
        added += new[0]
    raise AssertionError(f"still failing after following {added}")


def test_predict_offline_follows_its_advice_to_a_result(offline, capsys, checkpoint, tmp_path):
    added = _follow(capsys, ["predict", str(PHOTO), "--out", str(tmp_path / "out")], {"--weights": str(checkpoint)})
    assert added == ["--weights", str(checkpoint), "--detector", "none"]
    assert (tmp_path / "out" / f"{PHOTO.stem}_pose.jpg").is_file()


def test_track_offline_follows_its_advice_to_a_video(offline, capsys, tmp_path):
    out = tmp_path / "tracked.mp4"
    added = _follow(capsys, ["track", str(VIDEO_SAMPLE_CLIP), "--max-frames", "2", "--no-flip", "--out", str(out)], {})
    assert added[:2] == ["--detector", "none"]  # the detector first: it is needed before any flow
    assert out.is_file() and out.stat().st_size > 0


def test_weights_download_named_by_an_untrained_note_is_a_command_that_exists(offline, capsys, tmp_path):
    """The note of an untrained run names a download command: it runs, and offline fails only for the network."""
    code, printed = _run(capsys, ["demo", "--out", str(tmp_path / "demo")])
    assert code == 0
    commands = set(COMMAND.findall(printed))
    downloads = [c for c in commands if c.startswith("posekit weights download ")]
    assert downloads, printed
    for command in downloads:
        code, answer = _run(capsys, shlex.split(command)[1:])
        [line] = answer.strip().splitlines()
        assert code == 1 and line.startswith("posekit weights: error: could not download ") and "connection refused" in line
        assert "--weights" not in line  # `posekit weights download` takes no weights file: no advice to pass one


def test_eval_advises_an_option_it_takes(offline, capsys, tmp_path):
    code, printed = _run(capsys, ["eval", "--coco-root", str(tmp_path / "coco"), "--weights", "random"])
    [error] = [line for line in printed.splitlines() if ": error: " in line]
    assert code == 1 and "--download" in error
    code, printed = _run(capsys, ["eval", "--coco-root", str(tmp_path / "coco"), "--weights", "random", "--download"])
    assert code == 1 and "usage:" not in printed and "connection refused" in printed  # taken; only the network fails
