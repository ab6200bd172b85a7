"""The tutorial notebooks: committed clean (no outputs, one parameters cell, a Colab badge), and each
runs headless, offline, on the bundled sample with small parameters, printing what it promises.

Each notebook runs in a fresh kernel of this interpreter (a kernelspec written to a temporary
folder, so whatever kernels the machine has installed do not matter), with an empty posekit cache
and every HTTP(S) request sent to a closed local port: downloads fail at once, on this offline
machine and on a networked CI runner alike, so the notebooks take their offline path.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import nbformat
import pytest
from ipykernel.kernelspec import write_kernel_spec
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import KernelManager
from nbclient import NotebookClient
from nbformat.v4 import new_code_cell

from posekit.demo import UNTRAINED_TITLE
from posekit.widgets import NO_FRONTEND_MESSAGE

pytestmark = pytest.mark.notebook

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
NAMES = ("01_quickstart.ipynb", "02_coco_validation.ipynb", "03_skeletons_and_heatmaps.ipynb", "04_timing.ipynb",
         "05_video_tracking.ipynb", "06_finetune.ipynb", "07_compare_motion.ipynb")
SAMPLE = ROOT / "posekit" / "data" / "coco_sample"
COLAB_URL = "https://colab.research.google.com/github/posekit/posekit/blob/main/notebooks/{}"
KERNEL = "posekit-test-python"
POSEKIT_SOURCE = "git+https://github.com/posekit/posekit"
CLOSED_PORT_PROXY = "http://127.0.0.1:9"  # the discard port: nothing listens, connections are refused
CELL_TIMEOUT_S = 300


def _parameters_index(notebook: nbformat.NotebookNode) -> list[int]:
    return [i for i, cell in enumerate(notebook.cells) if "parameters" in cell.metadata.get("tags", [])]


@pytest.mark.parametrize("name", NAMES)
def test_committed_notebook_is_clean(name: str) -> None:
    notebook = nbformat.read(NOTEBOOKS / name, as_version=4)
    nbformat.validate(notebook)
    title = notebook.cells[0]
    assert title.cell_type == "markdown" and title.source.startswith("# ")
    assert f"({COLAB_URL.format(name)})" in title.source, "the Colab badge must open this very notebook"
    assert _parameters_index(notebook) == [1], "exactly one parameters cell, right after the title"
    assert notebook.cells[1].cell_type == "code"
    assert re.search(r"^[A-Z_]+ = ", notebook.cells[1].source, re.MULTILINE)
    # Where Colab installs posekit from: one setting, the first line of the parameters, and nowhere else.
    assert notebook.cells[1].source.startswith(f'POSEKIT_SOURCE = "{POSEKIT_SOURCE}"')
    assert sum(POSEKIT_SOURCE in cell.source for cell in notebook.cells) == 1
    setup = notebook.cells[2].source
    assert '"google.colab" in sys.modules' in setup and "resolve_device" in setup
    # No -U: pip then keeps what is installed and fits, Colab's CUDA build of torch above all.
    assert re.findall(r"^\s*%pip install (.*)$", setup, re.MULTILINE) == ['-q "{POSEKIT_SOURCE}"']
    for cell in notebook.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, f"{name}: outputs must be stripped"


@pytest.fixture(scope="module")
def kernel_specs(tmp_path_factory: pytest.TempPathFactory) -> KernelSpecManager:
    """A kernel spec manager that knows one kernel: ipykernel on this very interpreter."""
    kernels = tmp_path_factory.mktemp("kernels")
    write_kernel_spec(kernels / KERNEL)  # its argv starts with sys.executable
    return KernelSpecManager(kernel_dirs=[str(kernels)], ensure_native_kernel=False)


@pytest.fixture()
def offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Empty posekit cache and no reachable network for the kernels started in this test."""
    cache = tmp_path / "posekit-cache"
    monkeypatch.setenv("POSEKIT_HOME", str(cache))
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
        monkeypatch.setenv(name, CLOSED_PORT_PROXY)
    for name in ("NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("PYDEVD_DISABLE_FILE_VALIDATION", "1")  # quiets a debugger warning on stderr
    # A kernel draws its figures into the notebook only with matplotlib's inline backend, which
    # an inherited MPLBACKEND (e.g. Agg on a CI machine) would override.
    monkeypatch.delenv("MPLBACKEND", raising=False)
    return cache


def _execute(name: str, parameters: dict, specs: KernelSpecManager, folder: Path = NOTEBOOKS) -> nbformat.NotebookNode:
    """Run a notebook as papermill would: ``parameters`` in a cell right after the parameters cell,
    with ``folder`` as its working directory (where Jupyter runs it: the notebook's own folder)."""
    notebook = nbformat.read(NOTEBOOKS / name, as_version=4)
    injected = "\n".join(f"{key} = {value!r}" for key, value in parameters.items())
    notebook.cells.insert(_parameters_index(notebook)[0] + 1, new_code_cell(injected))
    manager = KernelManager(kernel_name=KERNEL, kernel_spec_manager=specs)
    client = NotebookClient(
        notebook, km=manager, timeout=CELL_TIMEOUT_S, resources={"metadata": {"path": str(folder)}}
    )
    client.execute()  # raises CellExecutionError, with the cell and traceback, on the first error
    return notebook


def _outputs(notebook: nbformat.NotebookNode) -> list[nbformat.NotebookNode]:
    return [output for cell in notebook.cells if cell.cell_type == "code" for output in cell.outputs]


def _printed(notebook: nbformat.NotebookNode) -> str:
    return "".join(o.text for o in _outputs(notebook) if o.output_type == "stream" and o.name == "stdout")


def _pictures(notebook: nbformat.NotebookNode) -> int:
    return sum("image/png" in o.get("data", {}) for o in _outputs(notebook))


def _annotations() -> list[dict]:
    return json.loads((SAMPLE / "test_coco.json").read_text())["annotations"]


def test_colab_install_keeps_colab_torch(kernel_specs: KernelSpecManager, monkeypatch) -> None:
    """The setup cell as Colab runs it, with this checkout as the source and pip in dry-run mode.

    One notebook is enough: the committed-notebook test holds every notebook to the same pip line.
    """
    notebook = nbformat.read(NOTEBOOKS / NAMES[0], as_version=4)
    fake_colab = (f'import sys, types\nsys.modules["google.colab"] = types.ModuleType("google.colab")\n'
                  f"POSEKIT_SOURCE = {str(ROOT)!r}")
    notebook.cells = [notebook.cells[1], new_code_cell(fake_colab), notebook.cells[2]]
    # pip resolves and reports what it would install, installs nothing; PIP_VERBOSE undoes the cell's -q.
    dry_run = {"PIP_DRY_RUN": "1", "PIP_NO_INDEX": "1", "PIP_VERBOSE": "1", "PIP_NO_BUILD_ISOLATION": "0"}
    for key, value in dry_run.items():
        monkeypatch.setenv(key, value)
    manager = KernelManager(kernel_name=KERNEL, kernel_spec_manager=kernel_specs)
    NotebookClient(notebook, km=manager, timeout=CELL_TIMEOUT_S).execute()
    printed = _printed(notebook)
    would_install = [line.strip() for line in re.findall(r"^Would install (.*)$", printed, re.MULTILINE)]
    # Everything else is installed here, as torch is on Colab: pip must leave it alone.
    import tomllib

    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert would_install == [f"posekit-{version}"], printed[-2000:]


def test_quickstart_runs_offline(kernel_specs: KernelSpecManager, offline: Path) -> None:
    notebook = _execute(NAMES[0], {"DEVICE": "cpu"}, kernel_specs)
    printed = _printed(notebook)
    # Offline: the ground-truth boxes stand in for the detector, one person per annotation.
    assert f"people found: {len(_annotations())} in 4 images" in printed
    assert f"WARNING: {UNTRAINED_TITLE}" in printed
    assert f"first person of 000000000785.jpg: {UNTRAINED_TITLE}" in printed, "the keypoint table says untrained"
    # The way out names the notebook's own setting, and that setting is the estimator's weights argument.
    assert 'set WEIGHTS = "path/to/file.pth" in the settings cell' in printed
    assert any("PoseEstimator(WEIGHTS," in cell.source for cell in notebook.cells if cell.cell_type == "code")
    # The offline download advice is for Python users: no command-line flags, no object reprs.
    assert "--weights" not in printed and "--boxes" not in printed and " object at 0x" not in printed
    assert "channel order BGR" in printed
    assert _pictures(notebook) >= 1, "the skeleton figure"
    plain = [o["data"]["text/plain"] for o in _outputs(notebook) if "text/plain" in o.get("data", {})]
    assert NO_FRONTEND_MESSAGE in plain, "the picker says in a sentence that it needs a widget front end"


def test_coco_validation_runs_offline_on_the_sample(
    kernel_specs: KernelSpecManager, offline: Path, tmp_path: Path
) -> None:
    coco_root = tmp_path / "coco"
    notebook = _execute(NAMES[1], {"DEVICE": "cpu", "COCO_ROOT": str(coco_root), "WORKERS": 0}, kernel_specs)
    printed = _printed(notebook)
    assert "bundled" in printed and str(coco_root) in printed, "says why it fell back to the sample"
    labelled = sum(max(a["keypoints"][2::3]) > 0 and not a["iscrowd"] for a in _annotations())
    assert f"{labelled} people in 4 images" in printed
    # The gap between annotated and evaluated people is explained, with both numbers.
    annotated = len(_annotations())
    assert f"{annotated - labelled} of the {annotated} annotated people skipped: crowds and people without" in printed
    # The AP table: posekit's value (a percentage) beside the paper's 70.4.
    row = re.search(r"^AP\s+(\d+\.\d)\s+70\.4$", printed, re.MULTILINE)
    assert row and 0.0 <= float(row.group(1)) <= 100.0
    assert "meaningless" in printed


def test_skeletons_and_heatmaps_runs_offline(kernel_specs: KernelSpecManager, offline: Path) -> None:
    notebook = _execute(NAMES[2], {"DEVICE": "cpu"}, kernel_specs)
    printed = _printed(notebook)
    errors = dict(re.findall(r"^(argmax|quarter|dark)\s+mean error ([\d.]+) heatmap px", printed, re.MULTILINE))
    assert set(errors) == {"argmax", "quarter", "dark"}
    # Centres spread uniformly over a pixel: rounding to the grid errs by about 0.38 px on average
    # (mean distance to the nearest corner of a unit square); the refinements must do better.
    assert 0.3 < float(errors["argmax"]) < 0.45
    assert float(errors["dark"]) < float(errors["quarter"]) < float(errors["argmax"])
    assert _pictures(notebook) >= 3, "crops, network heatmaps and training targets"


def test_timing_runs_offline(kernel_specs: KernelSpecManager, offline: Path) -> None:
    notebook = _execute(NAMES[3], {"DEVICE": "cpu", "BATCHES": (4, 2), "DEPTH": 18, "REPEATS": 1}, kernel_specs)
    printed = _printed(notebook)
    per_person = re.findall(r"^batch of (\d+): ([\d.]+) ms per person", printed, re.MULTILINE)
    assert [people for people, _ in per_person] == ["4", "2"]
    assert all(float(ms) > 0 for _, ms in per_person)
    assert "K80 reference row (a Colab K80 GPU, another machine, not measured here): batch of 200: 3.856 s" in printed
    assert "seed" not in printed.replace("seed 0", "")  # the random network's seed; no project history
    assert "timings on a shared machine are noisy: every figure and ratio above is from this one run" in printed
    # The speed ratio over the reference is split into its two factors, and they multiply back to it.
    splits = re.findall(r"against the reference \([\d.]+ s\): posekit is ([\d.]+) times (as fast as|slower than) the "
                        r"reference; speed ratio ([\d.]+) = ([\d.]+) from batching .* x ([\d.]+) from the runtime$",
                        printed, re.MULTILINE)
    assert len(splits) == 2
    for words, direction, total, batching, runtime in splits:
        assert float(total) == pytest.approx(float(batching) * float(runtime), rel=0.02)
        _assert_ratio_in_words(float(total), float(words), direction)
    runtimes = re.findall(r"^  runtime: .*; with \w+ the whole pipeline is ([\d.]+) times (as fast as|slower than) the "
                          r"plain network$", printed, re.MULTILINE)
    assert len(runtimes) == 2
    for (words, direction), (*_, runtime) in zip(runtimes, splits):
        _assert_ratio_in_words(float(runtime), float(words), direction)
    # A ratio below 1 is never called "faster": "0.65x faster" would say the opposite of the number.
    assert not re.search(r"\d\s*x faster", printed)
    # The table's and the printed people per second agree (the same rounding).
    table = re.search(r"^people per second\s+([\d.]+)\s+([\d.]+)$", printed, re.MULTILINE).groups()
    assert re.findall(r"ms per person, ([\d.]+) people/s", printed) == list(table)
    assert _pictures(notebook) >= 1, "the per-person chart"
    assert "comparison: runtime and batching; reference pipeline from " in printed


def _assert_ratio_in_words(ratio: float, words: float, direction: str) -> None:
    """``words`` and ``direction`` say the speed ratio ``ratio`` (other time / this time) the right way round."""
    if direction == "as fast as":
        assert ratio >= 1 and words == pytest.approx(ratio, abs=0.006)
    else:  # both printed to two decimals: each within 0.005 of its exact value, and the exact words = 1 / exact ratio
        exact = (ratio - 0.0051, ratio + 0.0051)
        assert ratio <= 1 and 1 / exact[1] - 0.0051 <= words <= 1 / max(exact[0], 1e-9) + 0.0051


def test_timing_without_a_checkout_says_the_reference_did_not_run(
    kernel_specs: KernelSpecManager, offline: Path, tmp_path: Path
) -> None:
    """As in Colab: the notebook without the repository around it, so without benchmarks/reference.py."""
    folder = tmp_path / "notebooks"
    folder.mkdir()
    notebook = _execute(NAMES[3], {"DEVICE": "cpu", "BATCHES": (2,), "DEPTH": 18, "REPEATS": 1}, kernel_specs, folder)
    printed = _printed(notebook)
    missing = tmp_path / "benchmarks" / "reference.py"
    assert f"comparison: posekit's runtime only; the reference pipeline did not run: {missing} is not here" in printed
    assert "against the reference" not in printed
    assert re.search(r"^  runtime: the network takes [\d.]+ s with \w+, [\d.]+ s plain", printed, re.MULTILINE)


def test_video_tracking_runs_offline(kernel_specs: KernelSpecManager, offline: Path) -> None:
    notebook = _execute(NAMES[4], {"DEVICE": "cpu", "FPS_FRAMES": 2}, kernel_specs)
    printed = _printed(notebook)
    assert f"WARNING: {UNTRAINED_TITLE}" in printed
    assert "person boxes from the bundled hand-drawn boxes" in printed
    # No RAFT weights offline: no flow; untrained joints are never confident: boxes are matched.
    assert "tracking with propagation 'pose', similarity 'iou'" in printed
    assert "not in Colab" in printed
    # boxes.json: three players throughout, the goalkeeper from frame 3, matched frame to frame by IoU.
    assert "5 frames, 4 tracks (ids [1, 2, 3, 4])" in printed and "fps tracking" in printed
    assert "right wrist of track 1: 5 frames" in printed
    rows = re.findall(r"^(every frame|every 5 frames)\s+(on|off)\s+(\d+\.\d\d)$", printed, re.MULTILINE)
    assert [(every, flip) for every, flip, _ in rows] == [
        ("every frame", "on"), ("every frame", "off"), ("every 5 frames", "on"), ("every 5 frames", "off")]
    assert all(float(fps) > 0 for _, _, fps in rows)
    assert _pictures(notebook) >= 2, "frames with ids and the wrist path"
    # The live cell, headless and offline: no camera or detector, so the real-time path runs on the clip.
    assert "the same real-time path runs on the bundled clip" in printed
    assert "realtime preset: detector" in printed
    assert re.search(r"^live from the bundled clip: 5 frames, [\d.]+ fps end to end, 0 stale frames dropped "
                     r"\(int8 network, no flip test\)$", printed, re.MULTILINE)


def test_finetune_runs_offline_on_synthetic_people(kernel_specs: KernelSpecManager, offline: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    notebook = _execute("06_finetune.ipynb", {"DEVICE": "cpu", "EPOCHS": 2, "OUT": str(out)}, kernel_specs)
    printed = _printed(notebook)
    assert "data: synthetic people (coco17)" in printed
    before = float(re.search(r"^before training: PCK@0.1 ([\d.]+)", printed, re.MULTILINE).group(1))
    final = re.search(r"^PCK@0.1 on the held-out people: before ([\d.]+), after ([\d.]+)", printed, re.MULTILINE)
    assert float(final.group(1)) == before and 0.0 <= float(final.group(2)) <= 1.0
    assert "2 epochs in" in printed and "pose_resnet_18, 17 joints" in printed
    assert (out / "run" / "last.pth").is_file() and (out / "run" / "log.csv").is_file()
    assert _pictures(notebook) >= 2, "the curves and the before/after skeletons"
    # The per-epoch log is on stdout: in Jupyter stderr shows as red error boxes.
    assert re.search(r"^epoch 2\b", printed, re.MULTILINE)
    assert not [o.text for o in _outputs(notebook) if o.output_type == "stream" and o.name == "stderr" and "epoch" in o.text]


def test_compare_motion_runs_offline_on_synthetic_takes(kernel_specs: KernelSpecManager, offline: Path, tmp_path: Path) -> None:
    notebook = _execute("07_compare_motion.ipynb", {"DEVICE": "cpu", "OUT": str(tmp_path)}, kernel_specs)
    printed = _printed(notebook)
    assert "two takes built from synthetic motion" in printed and "not in Colab" in printed
    # The attempt's left elbow was bent 30 degrees over attempt frames 70-82: found as the worst angle and joint.
    assert re.search(r"^worst angles: left_elbow \d+", printed, re.MULTILINE)
    assert re.search(r"^worst joints: left_wrist \d+", printed, re.MULTILINE)
    assert re.search(r"^score 9\d\.\d/100", printed, re.MULTILINE)
    assert (tmp_path / "side_by_side.mp4").stat().st_size > 0
    assert _pictures(notebook) >= 2, "the angle curves and the side-by-side frames"
