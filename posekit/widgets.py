"""An ipywidgets image picker: choose or upload an image, run the estimator, move the threshold.

ipywidgets is imported only when a picker is built, so ``import posekit`` works without it.
The estimator runs once per image (results are cached per picker); moving the score threshold or
toggling the heatmaps only redraws. Every callback is a method, so code and tests can drive the
picker without a browser by setting ``picker.dropdown.value``, ``picker.slider.value``, ...

The controls sit above the picture; the picture is drawn at the image's own resolution (at most
:data:`MAX_SIDE` pixels) and shown no larger than that, shrunk to the cell's width and to
:data:`MAX_HEIGHT` of the window, so controls and picture fit one screen and nothing is upscaled.
"""
from __future__ import annotations

import contextlib
import html
import io
import os
from pathlib import Path
from typing import Iterator, Mapping, Protocol, Sequence

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure
from PIL import Image, UnidentifiedImageError

from posekit.defaults import UNTRAINED_TITLE
from posekit.errors import ImageReadError, PosekitError
from posekit.io.images import ImageSource, load_image
from posekit.poses import Poses
from posekit.viz import draw_skeleton, label_untrained, show_heatmaps

# The picture's longest side in pixels (larger images are drawn smaller) and its share of the window height.
MAX_SIDE = 1024
MAX_HEIGHT = "60vh"

NO_WIDGETS_MESSAGE = (
    "The image picker needs ipywidgets: run `pip install ipywidgets` (Jupyter and Colab have it), "
    "or call posekit.viz.draw_skeleton(image, keypoints) for a static picture."
)
NO_FRONTEND_MESSAGE = (
    "posekit image picker: an interactive widget that this front end cannot show; open the notebook "
    "in Jupyter or Colab, or call posekit.viz.draw_skeleton(image, keypoints) for a static picture."
)


class EstimatorLike(Protocol):
    """Anything called as ``estimator(image) -> Poses``, e.g. a ``PoseEstimator``, and as
    ``estimator(image, boxes)`` for an image whose boxes are given (:class:`~posekit.poses.Poses`:
    ``boxes`` (N, 4) x, y, w, h and ``keypoints`` (N, K, 3) x, y, score, image pixels).

    It may also offer ``estimate_heatmaps(image, boxes_xywh (M, 4)) -> (crops (M, H, W, 3) uint8,
    heatmaps (M, 17, h, w))``, which the heatmap toggle uses; ``pretrained`` (False: random weights,
    said on every picture); and ``detector`` (None: without given boxes the whole image is one person),
    which the caption uses to say where the boxes came from.
    """

    def __call__(self, image: np.ndarray, boxes: object = None) -> Poses: ...


def _decode_upload(name: str, content: bytes) -> np.ndarray:
    """An RGB uint8 (H, W, 3) array from the bytes of an uploaded file, converted as :func:`load_image` does."""
    expected = "expected a JPEG, PNG or other image format Pillow reads"
    try:
        opened = Image.open(io.BytesIO(content))
        opened.load()  # decode now, so a truncated upload fails here with its name
    except UnidentifiedImageError:
        # Pillow's own message names the in-memory buffer's repr, which means nothing to the reader.
        raise ImageReadError(f"uploaded file {name!r} is not an image; {expected}") from None
    except (Image.DecompressionBombError, OSError, SyntaxError, ValueError) as error:
        raise ImageReadError(f"uploaded file {name!r} could not be decoded ({error}); {expected}") from None
    return load_image(opened)


def _named_sources(images: Mapping[str, ImageSource] | Sequence[ImageSource]) -> dict[str, ImageSource]:
    """Dropdown label -> image source. Paths in a list are labelled by file name, arrays by position."""
    if isinstance(images, Mapping):
        sources = dict(images)
    else:
        labels = [Path(item).name if isinstance(item, (str, os.PathLike)) else f"image {i}"
                  for i, item in enumerate(images)]
        if len(set(labels)) != len(labels):
            raise PosekitError(f"images has repeated file names {labels}; pass a dict of distinct label -> image")
        sources = dict(zip(labels, images))
    if not sources:
        raise PosekitError("images is empty; expected at least one image path or (H, W, 3) uint8 array")
    return sources


def _png(fig: Figure) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=fig.dpi)  # the figure's own size, whatever savefig.dpi says
    return buffer.getvalue()


def _box_words(box: np.ndarray) -> str:
    """A box x, y, w, h as words: "x 12, y 30, 140x260 px"."""
    x, y, w, h = np.round(np.asarray(box, np.float64)).astype(int)
    return f"x {x}, y {y}, {w}x{h} px"


def _plural(count: int, noun: str, plural: str) -> str:
    return f"{count} {noun if count == 1 else plural}"


class ImagePicker:
    """The widgets and state behind :func:`image_picker`; display it (or ``picker.widget``) in a notebook.

    Attributes a caller or test may use: ``dropdown``, ``upload``, ``slider``, ``toggle`` (the controls),
    ``caption`` (what the picture shows: people, where their boxes came from, joints drawn),
    ``message`` (what is not shown and why), ``image`` and ``heatmap_image`` (PNG views),
    ``figure`` / ``heatmap_figure`` (the last matplotlib figures drawn), ``redraw_count`` (skeleton redraws).
    """

    def __init__(
        self,
        images: Mapping[str, ImageSource] | Sequence[ImageSource],
        estimator: EstimatorLike,
        score_threshold: float = 0.3,
        boxes: Mapping[str, object] | None = None,
    ) -> None:
        import ipywidgets as widgets

        if not callable(estimator):
            raise PosekitError(
                f"estimator must be callable as estimator(image) -> Poses (e.g. a PoseEstimator), "
                f"got {type(estimator).__name__}"
            )
        self._sources = _named_sources(images)
        self._boxes = dict(boxes or {})
        unknown = sorted(set(self._boxes) - set(self._sources))
        if unknown:
            raise PosekitError(f"boxes are given for {unknown}, which are not among the images {list(self._sources)}")
        self._estimator = estimator
        # label -> (image, poses) and label -> (crop, heatmaps) of the first person: the expensive results.
        self._results: dict[str, tuple[np.ndarray, Poses]] = {}
        self._heatmaps: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        self.redraw_count = 0
        self.figure: Figure | None = None
        self.heatmap_figure: Figure | None = None

        # Narrow enough that the four controls share one row of a notebook cell on a laptop screen.
        self.dropdown = widgets.Dropdown(options=list(self._sources), description="image",
                                         layout=widgets.Layout(width="240px"), style={"description_width": "initial"})
        self.upload = widgets.FileUpload(accept="image/*", multiple=True, description="add image")
        self.slider = widgets.FloatSlider(
            value=score_threshold, min=0.0, max=1.0, step=0.05, description="threshold", continuous_update=False,
            layout=widgets.Layout(width="260px"), style={"description_width": "initial"},
        )
        self.toggle = widgets.ToggleButton(value=False, description="heatmaps", tooltip="heatmaps of the first person")
        self.caption = widgets.HTML()
        self.message = widgets.HTML()
        # Shown at most at its own size: shrunk to fit the cell and the window, never stretched (a
        # column of widgets stretches its children to its width unless they align themselves).
        fit = dict(width="auto", height="auto", max_width="100%", object_fit="contain", align_self="flex-start")
        self.image = widgets.Image(format="png", layout=widgets.Layout(max_height=MAX_HEIGHT, **fit))
        self.heatmap_image = widgets.Image(format="png", layout=widgets.Layout(display="none", **fit))
        self.widget = widgets.VBox([
            widgets.HBox([self.dropdown, self.upload, self.slider, self.toggle],
                         layout=widgets.Layout(flex_flow="row wrap")),
            self.caption, self.message, self.image, self.heatmap_image,
        ])
        self.dropdown.observe(self.on_image_change, names="value")
        self.upload.observe(self.on_upload, names="value")
        self.slider.observe(self.on_threshold_change, names="value")
        self.toggle.observe(self.on_heatmaps_toggle, names="value")
        self.on_image_change()

    def _repr_mimebundle_(self, **kwargs: object) -> dict:
        # Front ends without a widget manager fall back to text/plain: make that a sentence, not a repr.
        bundle = self.widget._repr_mimebundle_(**kwargs)
        bundle["text/plain"] = NO_FRONTEND_MESSAGE
        return bundle

    def _result(self, label: str) -> tuple[np.ndarray, Poses]:
        if label not in self._results:
            image = load_image(self._sources[label])
            poses = self._estimator(image, self._boxes[label]) if label in self._boxes else self._estimator(image)
            self._results[label] = image, poses
        return self._results[label]

    def _say(self, text: str) -> None:
        self.message.value = f'<span style="color: #c00">{html.escape(text)}</span>' if text else ""

    @contextlib.contextmanager
    def _errors_to_message(self) -> Iterator[None]:
        # A bad image or estimator input is the user's to fix: say so in the UI and keep the picker alive.
        try:
            yield
        except PosekitError as error:
            self._say(str(error))

    @property
    def _untrained(self) -> bool:
        return getattr(self._estimator, "pretrained", None) is False

    def _box_source(self, label: str) -> str:
        if label in self._boxes:
            return "in the given boxes"
        if getattr(self._estimator, "detector", None) is not None:
            return "found by the detector"
        if hasattr(self._estimator, "detector"):
            return "no detector, so the whole image is taken as one person"
        return ""

    def on_image_change(self, change: dict | None = None) -> None:
        """Run the estimator on the selected image (once per image) and redraw everything."""
        self._say("")
        with self._errors_to_message():
            self._draw_skeleton()
            self._draw_heatmaps()

    def on_threshold_change(self, change: dict | None = None) -> None:
        """Redraw the skeletons with the new threshold; the cached results are reused."""
        with self._errors_to_message():
            self._draw_skeleton()

    def on_heatmaps_toggle(self, change: dict | None = None) -> None:
        """Show or hide the first person's heatmaps."""
        self._say("")
        with self._errors_to_message():
            self._draw_heatmaps()

    def on_upload(self, change: dict) -> None:
        """Add the uploaded files as images (ipywidgets 8: dicts with ``name``, ``content``)."""
        self.add_images({upload["name"]: bytes(upload["content"]) for upload in change["new"]})

    def add_images(self, files: Mapping[str, bytes]) -> None:
        """Add image files given as name -> bytes and select the last one; the message names files that are no image.

        In Colab, where the *add image* button fails for files over about 1 MB, pass what
        ``google.colab.files.upload()`` returns.
        """
        errors, added = [], []
        for name, content in files.items():
            try:
                image = _decode_upload(name, content)
            except ImageReadError as error:
                errors.append(str(error))
                continue
            self._sources[name] = image
            self._boxes.pop(name, None)  # a new picture: boxes given for an old one with its name do not fit
            self._results.pop(name, None)  # the same name uploaded again is a new image
            self._heatmaps.pop(name, None)
            added.append(name)
        if added:
            # New options reset the dropdown to its first entry: keep that from running the estimator.
            self.dropdown.unobserve(self.on_image_change, names="value")
            try:
                self.dropdown.options = list(self._sources)
                self.dropdown.value = added[-1]
            finally:
                self.dropdown.observe(self.on_image_change, names="value")
            self.on_image_change()
        if errors:
            self._say(" ".join(errors))

    def _draw_skeleton(self) -> None:
        label, threshold = self.dropdown.value, self.slider.value
        image, poses = self._result(label)
        keypoints = poses.keypoints
        height, width = image.shape[:2]
        # One image pixel per figure pixel (fewer for large images): sharp, and never shown upscaled.
        dpi = 100 * min(1.0, MAX_SIDE / max(height, width))
        fig = Figure(figsize=(width / 100, height / 100), dpi=dpi)
        ax = draw_skeleton(image, keypoints, threshold, ax=fig.add_axes((0, 0, 1, 1)), boxes=poses.boxes)
        if self._untrained:
            label_untrained(ax)
        self.image.value = _png(fig)
        self.figure = fig
        self.redraw_count += 1
        source = self._box_source(label)
        drawn = int((keypoints[..., 2] >= threshold).sum())  # draw_skeleton's rule for a visible joint
        caption = (f"<b>{html.escape(label)}</b>: {_plural(len(poses), 'person', 'people')}"
                   f"{f' ({html.escape(source)})' if source else ''}, "
                   f"{_plural(drawn, 'joint', 'joints')} drawn (score &ge; {threshold:.2f})")
        if self._untrained:
            caption += ' <b style="color: #c00">random weights: not a prediction</b>'
        self.caption.value = caption

    def _draw_heatmaps(self) -> None:
        self.heatmap_image.layout.display = "none"
        if not self.toggle.value:
            return
        estimate_heatmaps = getattr(self._estimator, "estimate_heatmaps", None)
        if estimate_heatmaps is None:
            self._say("This estimator does not expose heatmaps (no estimate_heatmaps method).")
            return
        label = self.dropdown.value
        image, poses = self._result(label)
        if not len(poses):
            self._say(f"No person in {label}: no heatmaps to show.")
            return
        if label not in self._heatmaps:
            crops, heatmaps = estimate_heatmaps(image, np.asarray(poses.boxes[:1], dtype=np.float64))
            self._heatmaps[label] = crops[0], heatmaps[0]
        fig = show_heatmaps(*self._heatmaps[label])
        shown = f"heatmaps of the first person in {label} (box {_box_words(poses.boxes[0])})"
        if self._untrained:
            fig.suptitle(UNTRAINED_TITLE, color="#c00")
            fig.supxlabel(shown)
        else:
            fig.suptitle(shown)
        plt.close(fig)  # rendered into the widget; an open pyplot figure would also pop up in the next cell
        self.heatmap_image.value = _png(fig)
        self.heatmap_figure = fig
        self.heatmap_image.layout.display = None


def image_picker(
    images: Mapping[str, ImageSource] | Sequence[ImageSource],
    estimator: EstimatorLike,
    score_threshold: float = 0.3,
    boxes: Mapping[str, object] | None = None,
) -> ImagePicker | None:
    """An interactive picker: image dropdown, upload, score-threshold slider, heatmap toggle, skeleton view.

    Args:
        images: label -> path or (H, W, 3) uint8 RGB array, or a list of them (labelled by file name).
        estimator: called as ``estimator(image[, boxes]) -> Poses`` (see :class:`EstimatorLike`).
        score_threshold: initial slider value; joints scoring below it are hidden.
        boxes: label -> the people's boxes (N, 4) x, y, w, h, or ``(boxes, scores)``, for images whose
            boxes come from elsewhere (e.g. annotations); the estimator finds the others' people itself.

    Returns:
        The picker (the last expression of a cell displays it), or None after printing what to install
        when ipywidgets is missing.
    """
    try:
        import ipywidgets  # noqa: F401
    except ImportError:
        print(NO_WIDGETS_MESSAGE)
        return None
    return ImagePicker(images, estimator, score_threshold, boxes)
