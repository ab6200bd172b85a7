"""The notebooks as a person sees them: JupyterLab in headless Chromium, every cell run, the picker used.

A JupyterLab server starts on 127.0.0.1 (a free port, a random token, HOME and every Jupyter
folder in a temporary directory, notebooks copied there so that autosave touches nothing in the
repo), offline as in ``test_notebooks.py``: an empty posekit cache and every HTTP(S) request sent
to a closed local port. Debian's Chromium, driven by playwright, opens each notebook, runs all
cells from the Run menu and checks that no cell failed; on the quickstart it then uses the image
picker as a person would and reads what the page shows, on the video notebook it reads the tracks,
the speed table and the pictures. Screenshots of every step are saved in a
temporary folder whose path is printed (``-s`` shows it), or in ``$POSEKIT_TEST_ARTIFACTS``.
"""
from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Iterator

import pytest
from ipykernel.kernelspec import write_kernel_spec
from PIL import Image

from posekit.demo import UNTRAINED_TITLE

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
SAMPLE = ROOT / "posekit" / "data" / "coco_sample"
CHROMIUM = Path("/usr/bin/chromium")
QUICKSTART = "01_quickstart.ipynb"
VIDEO = "05_video_tracking.ipynb"
# The fine-tuning notebook comes from another branch; it must run here once it exists.
FINETUNE = "06_finetune.ipynb"
COMPARE = "07_compare_motion.ipynb"
NAMES = (QUICKSTART, VIDEO, FINETUNE, COMPARE)
CLOSED_PORT_PROXY = "http://127.0.0.1:9"  # the discard port: nothing listens, connections are refused
SERVER_START_S = 60
# Seconds for Run All, per notebook: the video notebook tracks the clip six times with a ResNet-50 on the CPU.
RUN_ALL_S = {QUICKSTART: 240, VIDEO: 480}
RUN_ALL_DEFAULT_S = 480
STEP_MS = 60_000
VIEWPORT = {"width": 1280, "height": 800}  # a laptop screen: the picker must fit it


def _missing_tools() -> str | None:
    """What this machine lacks for the test, as the sentence that says how to get it; None if nothing."""
    for module in ("jupyterlab", "playwright"):
        if importlib.util.find_spec(module) is None:
            return f"{module} is missing: pip install -e '.[dev]' (bash .ci/run installs everything)"
    if not CHROMIUM.exists():
        return f"{CHROMIUM} is missing: apt-get install chromium (bash .ci/run installs everything)"
    return None


@pytest.fixture(scope="module", autouse=True)
def _tools() -> None:
    # CI installs the tools, so there a missing one is a failure; elsewhere the test says what to install.
    missing = _missing_tools()
    if missing and os.environ.get("CI"):
        pytest.fail(missing)
    if missing:
        pytest.skip(missing)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _get(url: str) -> bytes:
    # Straight to the local server, whatever proxy the environment names.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(url, timeout=5) as response:
        return response.read()


class Lab:
    """A running JupyterLab: its URL, token, log file and process group."""

    def __init__(self, base: Path) -> None:
        self.work = base / "work"
        self.work.mkdir()
        for notebook in NOTEBOOKS.glob("*.ipynb"):
            shutil.copy(notebook, self.work)
        home = base / "home"
        kernels = home / "jupyter-data" / "kernels" / "python3"
        kernels.parent.mkdir(parents=True)
        write_kernel_spec(kernels)  # this interpreter, whatever kernels the machine has installed
        env = {key: value for key, value in os.environ.items() if key not in ("MPLBACKEND", "NO_PROXY", "no_proxy")}
        env.update(
            HOME=str(home), JUPYTER_CONFIG_DIR=str(home / "jupyter-config"), JUPYTER_DATA_DIR=str(kernels.parents[1]),
            JUPYTER_RUNTIME_DIR=str(home / "jupyter-runtime"), IPYTHONDIR=str(home / "ipython"),
            JUPYTERLAB_SETTINGS_DIR=str(home / "lab-settings"), JUPYTERLAB_WORKSPACES_DIR=str(home / "lab-workspaces"),
            POSEKIT_HOME=str(base / "posekit-cache"),
            PYTHONPATH=os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]),
            PYDEVD_DISABLE_FILE_VALIDATION="1",
            **{name: CLOSED_PORT_PROXY for name in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy")},
        )
        # Every cell in the page, not only those scrolled into view, so that all prompts can be read.
        tracker = home / "lab-settings" / "@jupyterlab" / "notebook-extension" / "tracker.jupyterlab-settings"
        tracker.parent.mkdir(parents=True)
        tracker.write_text(json.dumps({"windowingMode": "none"}))
        # No "get notified about Jupyter news?" toast over the page (and no request for the news).
        notices = home / "lab-settings" / "@jupyterlab" / "apputils-extension" / "notification.jupyterlab-settings"
        notices.parent.mkdir(parents=True)
        notices.write_text(json.dumps({"fetchNews": "false"}))
        self.token = secrets.token_hex(16)
        self.url = f"http://127.0.0.1:{_free_port()}"
        self.log = base / "jupyterlab.log"
        with open(self.log, "wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "jupyterlab", "--no-browser", "--ip=127.0.0.1",
                 f"--port={self.url.rsplit(':', 1)[1]}", "--ServerApp.port_retries=0",
                 f"--IdentityProvider.token={self.token}", f"--ServerApp.root_dir={self.work}",
                 "--LabApp.news_url=", "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
                 "--LabApp.extension_manager=readonly", "--ServerApp.terminals_enabled=False",
                 *(["--allow-root"] if os.geteuid() == 0 else [])],  # CI runs as root
                env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: stopped as a whole at the end
            )

    def log_tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:]

    def api(self, path: str) -> object:
        return json.loads(_get(f"{self.url}/api/{path}?token={self.token}"))

    def wait_ready(self) -> None:
        deadline = time.monotonic() + SERVER_START_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"JupyterLab exited with {self.process.returncode}:\n{self.log_tail()}")
            with contextlib.suppress(OSError):
                self.api("status")
                return
            time.sleep(0.5)
        raise AssertionError(f"JupyterLab did not answer within {SERVER_START_S} s:\n{self.log_tail()}")

    def wait_kernel_idle(self, notebook: str) -> None:
        """Until the kernel of ``notebook``'s session has started and is idle."""
        deadline = time.monotonic() + SERVER_START_S
        while time.monotonic() < deadline:
            states = [session["kernel"]["execution_state"] for session in self.api("sessions")
                      if session["path"] == notebook and session.get("kernel")]
            if states == ["idle"]:
                return
            time.sleep(0.5)
        raise AssertionError(f"no idle kernel for {notebook} within {SERVER_START_S} s:\n{self.log_tail()}")

    def stop(self) -> None:
        """SIGTERM to the server's group (the server shuts its kernels down), SIGKILL what outlives it."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            pass
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=10)


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory, _tools: None) -> Iterator[Lab]:
    server = Lab(tmp_path_factory.mktemp("jupyterlab"))
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = Path(os.environ.get("POSEKIT_TEST_ARTIFACTS") or tmp_path_factory.mktemp("browser-artifacts"))
    folder.mkdir(parents=True, exist_ok=True)
    print(f"\nbrowser screenshots: {folder}")
    return folder


@pytest.fixture(scope="module")
def browser(_tools: None):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as driver:
        chromium = driver.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox", "--no-proxy-server"])
        try:
            yield chromium
        finally:
            chromium.close()


class Notebook:
    """One notebook open in JupyterLab, driven through the page as a person would."""

    def __init__(self, page, name: str, lab: Lab, artifacts: Path) -> None:
        self.page, self.name, self.lab, self.artifacts = page, name, lab, artifacts
        self.shots = 0

    def screenshot(self, step: str) -> Path:
        self.shots += 1
        path = self.artifacts / f"{Path(self.name).stem}-{self.shots:02d}-{step}.png"
        self.page.screenshot(path=path)
        return path

    def run_all(self) -> None:
        """Run > Run All Cells, then wait until every code cell has its execution count."""
        page = self.page
        page.locator(".jp-NotebookPanel .jp-Notebook").wait_for(timeout=STEP_MS)
        self._accept_kernel_dialog()
        self.lab.wait_kernel_idle(self.name)
        page.locator(".lm-MenuBar-item", has_text=re.compile(r"^Run$")).click()
        page.locator(".lm-Menu-item", has_text="Run All Cells").first.click()
        self._accept_kernel_dialog()
        page.wait_for_function(
            """() => {
                const prompts = [...document.querySelectorAll('.jp-CodeCell .jp-InputArea-prompt')];
                return prompts.length > 0 && prompts.every(p => /^\\[\\d+\\]:$/.test(p.textContent.trim()));
            }""",
            timeout=RUN_ALL_S.get(self.name, RUN_ALL_DEFAULT_S) * 1000,
        )

    def _accept_kernel_dialog(self) -> None:
        # JupyterLab may ask which kernel to start; a person takes the one it proposes (this Python).
        from playwright.sync_api import TimeoutError as PlaywrightTimeout

        with contextlib.suppress(PlaywrightTimeout):
            self.page.locator(".jp-Dialog .jp-mod-accept").click(timeout=3000)

    def errors(self) -> list[str]:
        """The text of every output that shows a traceback (an exception in a cell)."""
        outputs = self.page.locator(".jp-OutputArea-output").all_inner_texts()
        return [text for text in outputs if "Traceback (most recent call last)" in text]


def _hash(image) -> str:
    """sha256 of the bytes an <img> shows, read back from its blob URL: it changes exactly when the picture does."""
    return image.evaluate(
        """async (img) => {
            const bytes = await (await fetch(img.src)).arrayBuffer();
            const digest = new Uint8Array(await crypto.subtle.digest('SHA-256', bytes));
            return [...digest].map(b => b.toString(16).padStart(2, '0')).join('');
        }"""
    )


def _changed_hash(image, before: str, what: str) -> str:
    """The picture's new hash once it differs from ``before``; fails if it has not changed within a step's time."""
    deadline = time.monotonic() + STEP_MS / 1000
    while (now := _hash(image)) == before:
        assert time.monotonic() < deadline, f"the picker did not redraw {what}"
        time.sleep(0.2)
    return now


CAPTION = re.compile(
    r"^(?P<label>.+?): (?P<people>\d+) (?P<noun>person|people) \((?P<source>[^)]*)\), "
    r"(?P<joints>\d+) joints? drawn \(score ≥ (?P<threshold>[\d.]+)\)(?P<rest>.*)$"
)


def _annotated_people() -> dict[str, int]:
    """Annotated people per bundled image: what the quickstart's offline boxes hold (read from the JSON here)."""
    coco = json.loads((SAMPLE / "test_coco.json").read_text())
    names = {image["id"]: image["file_name"] for image in coco["images"]}
    counts = dict.fromkeys(names.values(), 0)
    for annotation in coco["annotations"]:
        counts[names[annotation["image_id"]]] += 1
    return counts


class Picker:
    """The quickstart's image picker, read and used through the page."""

    def __init__(self, page) -> None:
        self.page = page
        self.root = page.locator(".widget-vbox", has=page.locator(".widget-upload")).last
        self.root.wait_for(timeout=STEP_MS)
        self.dropdown = self.root.locator(".widget-dropdown select")
        texts, pictures = self.root.locator(".widget-html-content"), self.root.locator("img.widget-image")
        self.caption, self.message = texts.nth(0), texts.nth(1)
        self.picture, self.heatmaps = pictures.nth(0), pictures.nth(1)
        self.upload = self.root.locator(".widget-upload")

    def read(self) -> dict:
        """The caption, parsed; fails when it does not read as the picker's sentence."""
        text = self.caption.inner_text().strip()
        match = CAPTION.match(text)
        assert match, f"caption {text!r} does not say image: people (box source), joints drawn (threshold)"
        return match.groupdict()

    def wait_caption(self, pattern: str) -> dict:
        from playwright.sync_api import expect

        expect(self.caption).to_have_text(re.compile(pattern), timeout=STEP_MS)
        return self.read()

    def set_threshold(self, value: float) -> None:
        """Type the value into the slider's readout, as a person does for an exact number."""
        readout = self.root.locator(".widget-slider .widget-readout")
        readout.click()
        self.page.keyboard.press("Control+A")
        self.page.keyboard.type(f"{value:.2f}")
        self.page.keyboard.press("Enter")

    def choose_files(self, *paths: Path) -> None:
        # The button opens the file chooser of a hidden <input type=file>; this is what choosing does.
        with self.page.expect_file_chooser() as chooser:
            self.upload.click()
        chooser.value.set_files([str(path) for path in paths])


def _use_the_picker(page, notebook: Notebook, tmp_path: Path) -> None:
    """Change the image, move the threshold, toggle heatmaps, upload an image and a non-image file."""
    picker = Picker(page)
    picker.root.scroll_into_view_if_needed()
    people = _annotated_people()
    first = picker.read()
    notebook.screenshot("picker")
    # Offline, without a detector: the annotated boxes, as in the figure above the picker.
    assert first["label"] == picker.dropdown.input_value() == sorted(people)[0]
    assert (int(first["people"]), first["noun"], first["source"]) == (
        people[first["label"]], "person" if people[first["label"]] == 1 else "people", "in the given boxes")
    assert 0 < int(first["joints"]) <= 17 * int(first["people"])
    assert "random weights: not a prediction" in first["rest"], "offline the network is untrained and must say so"
    # Layout: the controls and the whole picture fit one laptop screen; the picture is not upscaled.
    box = picker.root.bounding_box()
    assert box["height"] <= VIEWPORT["height"], f"picker is {box['height']} px tall"
    shown, natural = picker.picture.evaluate("img => [img.clientWidth, img.naturalWidth]")
    assert shown <= natural, f"picture stretched from {natural} to {shown} px wide"
    before = _hash(picker.picture)

    second = sorted(people)[1]
    picker.dropdown.select_option(second)
    changed = picker.wait_caption(f"^{re.escape(second)}: ")
    assert (int(changed["people"]), changed["noun"]) == (people[second], "people" if people[second] != 1 else "person")
    after_image = _changed_hash(picker.picture, before, "the picture for the new image")
    notebook.screenshot("image-changed")

    picker.set_threshold(0.95)
    raised = picker.wait_caption(r"\(score ≥ 0\.95\)")
    # Random heatmap peaks are far below 0.95: the joints go, and the picture shows it.
    assert int(raised["joints"]) < int(changed["joints"])
    _changed_hash(picker.picture, after_image, "the picture for the new threshold")
    notebook.screenshot("threshold")

    picker.root.locator("button.widget-toggle-button", has_text="heatmaps").click()
    picker.heatmaps.wait_for(state="visible", timeout=STEP_MS)
    heatmaps_before = _hash(picker.heatmaps)
    picker.heatmaps.scroll_into_view_if_needed()
    notebook.screenshot("heatmaps")

    picker.set_threshold(0.0)
    picker.wait_caption(r"\(score ≥ 0\.00\)")
    own = tmp_path / "my photo.png"
    Image.radial_gradient("L").convert("RGB").resize((160, 240)).save(own)
    picker.choose_files(own)
    uploaded = picker.wait_caption(f"^{re.escape(own.name)}: ")
    assert picker.dropdown.input_value() == own.name
    assert (uploaded["people"], uploaded["noun"]) == ("1", "person")
    assert uploaded["source"] == "no detector, so the whole image is taken as one person"
    _changed_hash(picker.heatmaps, heatmaps_before, "the heatmaps for the uploaded image")
    assert picker.picture.evaluate("img => img.naturalHeight") == 240
    picker.root.scroll_into_view_if_needed()
    notebook.screenshot("uploaded")

    notes = tmp_path / "notes.txt"
    notes.write_text("not a picture")
    picker.choose_files(notes)
    from playwright.sync_api import expect

    expect(picker.message).to_contain_text("uploaded file 'notes.txt' is not an image", timeout=STEP_MS)
    message = picker.message.inner_text()
    assert "expected a JPEG, PNG" in message and "BytesIO" not in message and " 0x" not in message
    assert picker.dropdown.input_value() == own.name, "a failed upload keeps the current image"
    notebook.screenshot("not-an-image")


def _read_the_tracking(page, notebook: Notebook, tmp_path: Path) -> None:
    """What a person reads after Run All: the tracks of the bundled clip, the untrained warning, the pictures."""
    text = "\n".join(page.locator(".jp-OutputArea-output").all_inner_texts())
    # Offline: the clip's hand-drawn boxes (three players throughout, the goalkeeper from frame 3).
    assert "person boxes from the bundled hand-drawn boxes" in text
    assert "5 frames, 4 tracks (ids [1, 2, 3, 4])" in text
    assert f"WARNING: {UNTRAINED_TITLE}" in text, "offline the network is untrained and says so"
    fps_rows = re.findall(r"^(every frame|every 5 frames)\s+(on|off)\s+(\d+\.\d\d)$", text, re.MULTILINE)
    assert len(fps_rows) == 4 and all(float(fps) > 0 for *_, fps in fps_rows)
    # The frames with ids and the wrist path are drawn: pictures with pixels in them.
    pictures = page.locator(".jp-OutputArea-output img")
    assert pictures.count() >= 2
    for index in range(2):
        picture = pictures.nth(index)
        picture.scroll_into_view_if_needed()
        assert picture.evaluate("img => img.complete && img.naturalWidth > 0 && img.naturalHeight > 0")
        notebook.screenshot(f"figure-{index + 1}")


def _read_the_finetune(page, notebook: Notebook, tmp_path: Path) -> None:
    """After Run All offline: synthetic people, PCK before and after training, the curves and skeletons drawn."""
    text = "\n".join(page.locator(".jp-OutputArea-output").all_inner_texts())
    assert "data: synthetic people (coco17)" in text
    before = float(re.search(r"^before training: PCK@0.1 ([\d.]+)", text, re.MULTILINE).group(1))
    final = re.search(r"^PCK@0.1 on the held-out people: before ([\d.]+), after ([\d.]+)", text, re.MULTILINE)
    assert final is not None and float(final.group(1)) == before and 0.0 <= float(final.group(2)) <= 1.0
    pictures = page.locator(".jp-OutputArea-output img")
    assert pictures.count() >= 2, "the loss/PCK curves and the before/after skeletons"
    for index in range(2):
        picture = pictures.nth(index)
        picture.scroll_into_view_if_needed()
        assert picture.evaluate("img => img.complete && img.naturalWidth > 0 && img.naturalHeight > 0")
        notebook.screenshot(f"figure-{index + 1}")


# What each notebook's picker or other interactive part must do beyond running all cells.
INTERACTIONS = {QUICKSTART: _use_the_picker, VIDEO: _read_the_tracking, FINETUNE: _read_the_finetune}


@pytest.mark.parametrize("name", NAMES)
def test_notebook_in_the_browser(name: str, lab: Lab, browser, artifacts: Path, tmp_path: Path) -> None:
    page = browser.new_page(viewport=VIEWPORT)
    notebook = Notebook(page, name, lab, artifacts)
    try:
        # A workspace of its own: JupyterLab would otherwise reopen the notebooks of earlier tests beside it.
        page.goto(f"{lab.url}/lab/workspaces/{Path(name).stem}/tree/{name}?token={lab.token}")
        notebook.run_all()
        notebook.screenshot("ran")
        assert notebook.errors() == []
        interact = INTERACTIONS.get(name)
        if interact:
            interact(page, notebook, tmp_path)
    except Exception:
        notebook.screenshot("failure")
        raise
    finally:
        page.close()
