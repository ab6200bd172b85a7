"""posekit bench: the result's structure, and that what it times computes the right thing.

Wall-clock times are never asserted (the machine is shared); the keypoints, FLOP counts and the
bookkeeping between the numbers are.
"""
from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch
from torch import nn

from benchmarks.reference import reference_keypoints, time_reference
from posekit.bench import (
    K80_SECONDS,
    BenchResult,
    StageTimes,
    count_flops,
    run_benchmark,
    sample_people,
    time_stages,
)
from posekit.cli import main
from posekit.core.spec import InputSpec
from posekit.core.topdown import STAGES
from posekit.models.pose_resnet import pose_resnet
from posekit.models.runtime import inference_forward

INPUT = (64, 96)  # (width, height): small, multiples of 32
SPEC = InputSpec(input_size=INPUT)


@pytest.fixture(scope="module")
def result() -> BenchResult:
    return run_benchmark(
        batches=(5, 3), depth=18, input_size=INPUT, repeats=2, max_batch=2, memory_people=(3, 5, 8)
    )


@pytest.fixture(scope="module")
def model() -> nn.Module:
    torch.manual_seed(0)
    return pose_resnet(depth=18).eval()


def test_result_structure_and_bookkeeping(result):
    assert [b.people for b in result.batches] == [5, 3]
    assert result.backend == "onnxruntime" and result.threads == torch.get_num_threads()
    assert "random weights" in result.notes[0]
    for batch in result.batches:
        assert len(batch.warm) == 2 and isinstance(batch.cold, StageTimes)
        for stage in ("crop", "normalise", "forward", "flip_back", "decode"):
            values = [getattr(run, stage) for run in batch.warm]
            assert min(values) <= getattr(batch.median, stage) <= max(values)
        assert batch.median.forward > 0 and batch.median.flip_back > 0
        assert batch.total_min <= batch.median.total <= batch.total_max
        assert batch.ms_per_person == pytest.approx(1000 * batch.median.total / batch.people)
        assert batch.network_flops == result.model_flops * batch.people * 2  # flip: two forwards
        assert batch.flops_fraction == pytest.approx(batch.network_flops / batch.median.forward / result.matmul_flops)
        assert batch.k80_seconds is None  # the K80 reference row has figures for 200 and 100 only
    assert list(result.memory_peaks) == [3, 5, 8]
    assert all(isinstance(peak, int) and peak >= 0 for peak in result.memory_peaks.values())


def test_result_saves_as_json(result, tmp_path):
    path = result.save_json(tmp_path / "bench.json")
    data = json.loads(path.read_text())
    assert [p.name for p in tmp_path.iterdir()] == ["bench.json"]
    assert data["batches"][0]["median"]["forward"] == result.batches[0].median.forward
    assert data["memory_peaks"] == {str(k): v for k, v in result.memory_peaks.items()}


def _conv_flops_by_hand(model: nn.Module, input_size: tuple[int, int]) -> int:
    """2 x multiply-adds of every conv and deconv, from the shapes each one sees."""
    total = 0

    def count(module, inputs, output):
        nonlocal total
        kernel = module.kernel_size[0] * module.kernel_size[1] // module.groups
        if isinstance(module, nn.ConvTranspose2d):  # every input pixel scatters a kernel per output channel
            total += 2 * inputs[0][0].numel() * module.out_channels * kernel
        else:  # every output pixel gathers a kernel per input channel
            total += 2 * output[0].numel() * module.in_channels * kernel

    hooks = [m.register_forward_hook(count) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))]
    with torch.no_grad():
        model(torch.zeros(1, 3, input_size[1], input_size[0]))
    for hook in hooks:
        hook.remove()
    return total


def test_counted_flops_are_the_convolutions(model):
    assert count_flops(model, INPUT) == _conv_flops_by_hand(model, INPUT)
    assert count_flops(model, INPUT) > 1e8


def test_sample_people_repeats_the_people_of_the_busiest_image_evenly():
    batch = sample_people(30)
    assert batch.image.shape == (429, 640, 3) and batch.boxes.shape == (30, 4)  # 000000196141.jpg, 5 people
    _, counts = np.unique(batch.boxes, axis=0, return_counts=True)
    assert len(counts) == 5 and counts.max() - counts.min() <= 1


@pytest.mark.parametrize("flip", [False, True])
def test_the_timed_core_matches_the_paper_style_reference(model, flip):
    batch = sample_people(14)
    forward = inference_forward(model, "torch", input_size=INPUT)
    ours, times = time_stages(forward, SPEC, batch, flip=flip, max_batch=5)
    reference = reference_keypoints(model, SPEC, batch, flip=flip, max_batch=5)
    assert ours.shape == reference.shape == (14, 17, 3)
    assert np.ptp(reference[..., 0]) > 50  # keypoints spread over the image, not all in one place
    assert np.abs(ours[..., :2] - reference[..., :2]).max() < 1e-3
    # Scores: the crops may differ by one grey level here and there (see crop_batch).
    np.testing.assert_allclose(ours[..., 2], reference[..., 2], rtol=5e-3)
    assert (times.flip_back > 0) == flip


def test_reference_runs_a_given_forward_and_is_timed_per_stage(model):
    batch = sample_people(3)
    plain = inference_forward(model, "torch", "fp32", channels_last=False, input_size=INPUT)
    calls = []

    def network(inputs):
        calls.append(len(inputs))
        return plain(inputs)

    cold, warm = time_reference(network, SPEC, batch, flip=True, max_batch=2, repeats=2)
    # Per run: chunks of 2 and 1 people, each through the network twice (crops, then mirrored crops).
    assert calls == [2, 2, 1, 1] * 3
    assert len(warm) == 2 and all(getattr(run, stage) > 0 for run in (cold, *warm) for stage in STAGES)
    through_forward = reference_keypoints(plain, SPEC, batch, max_batch=2)
    eager = reference_keypoints(model, SPEC, batch, max_batch=2)
    assert np.abs(through_forward[..., :2] - eager[..., :2]).max() < 1e-3


def test_stage_times_median_is_per_stage():
    runs = [StageTimes(1, 5, 9, 0, 2), StageTimes(3, 4, 7, 0, 8), StageTimes(2, 6, 8, 0, 1)]
    assert StageTimes.median(runs) == StageTimes(2, 5, 8, 0, 2)


def test_chunked_core_equals_one_big_batch(model):
    batch = sample_people(9)
    forward = inference_forward(model, "torch", channels_last=False, input_size=INPUT)
    chunked, _ = time_stages(forward, SPEC, batch, max_batch=2)
    whole, _ = time_stages(forward, SPEC, batch, max_batch=9)
    np.testing.assert_allclose(chunked, whole, rtol=1e-5, atol=1e-4)


def test_cli_prints_the_table_and_writes_json(tmp_path, capsys):
    out = tmp_path / "bench.json"
    code = main(["bench", "--batches", "3", "--depth", "18", "--input", "96x64", "--repeats", "1",
                 "--max-batch", "2", "--memory-people", "3", "--json", str(out)])
    printed = capsys.readouterr().out
    assert code == 0
    assert "random weights" in printed
    # The K80 figure is a labelled reference row, never this run's, and nothing speaks of the project's history.
    assert re.search(r"^reference row: Colab K80 GPU, another machine \(s\)\s+n/a$", printed, re.MULTILINE)
    assert "seed figure" not in printed and "seed's" not in printed
    assert "benchmarks/reference.py" in printed
    data = json.loads(out.read_text())
    assert data["input_size"] == [64, 96] and data["precision"] == "fp32"


def test_cli_help_speaks_of_the_product_not_its_history(capsys):
    with pytest.raises(SystemExit):
        main(["bench", "--help"])
    help_text = capsys.readouterr().out
    assert "default: 200 100, the sizes of the K80 reference row" in " ".join(help_text.split())
    assert "seed" not in help_text.lower()


def test_cli_rejects_an_input_size_the_network_cannot_take(capsys):
    assert main(["bench", "--batches", "2", "--depth", "18", "--input", "250x190"]) == 1
    assert "multiples of 32" in capsys.readouterr().err


def test_stage_times_feed_plot_timing(result):
    import matplotlib

    matplotlib.use("Agg")
    from posekit.viz import plot_timing

    stages = result.batches[0].median.as_dict()
    assert list(stages) == ["crop", "normalise", "forward", "flip back", "decode"]
    assert sum(stages.values()) == pytest.approx(result.batches[0].median.total)
    figure = plot_timing(stages, reference={f"K80 batch {people}": s for people, s in K80_SECONDS.items()})
    assert len(figure.axes[0].patches) == len(stages) + 2  # this run's bars + the two K80 bars


def test_matmul_probe_restores_the_tf32_setting():
    from posekit.bench import matmul_flops

    before = torch.backends.cuda.matmul.allow_tf32
    assert matmul_flops("cpu", size=64) > 0
    assert torch.backends.cuda.matmul.allow_tf32 == before


def test_cli_reports_each_stage_and_measures_memory_only_on_request(tmp_path, capsys, monkeypatch):
    import posekit.bench

    swept = []
    monkeypatch.setattr(posekit.bench, "sample_people", lambda people: swept.append(people) or sample_people(people))
    args = ["bench", "--batches", "3", "--depth", "18", "--input", "96x64", "--repeats", "1", "--max-batch", "2",
            "--backend", "torch"]
    assert main(args) == 0
    captured = capsys.readouterr()
    assert swept == [3]  # the timed batch only: no memory sweep unless asked
    progress = [line for line in captured.err.splitlines() if line.startswith("posekit bench: ")]
    assert progress[-2:] == ["posekit bench: 3 people: cold run", "posekit bench: 3 people: warm run 1 of 1"]
    assert "peak memory in chunks" not in captured.out and "peak memory (MB)" in captured.out
    assert main([*args, "--memory-people", "5"]) == 0
    captured = capsys.readouterr()
    assert swept == [3, 3, 5] and "posekit bench: peak memory of 5 people" in captured.err
    assert "peak memory in chunks of 2 (RSS above start): 5 people" in captured.out
