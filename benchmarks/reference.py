"""posekit's top-down core against the same inference written the way the paper's code does it.

For a batch of people in one bundled image (the protocol of ``posekit bench``), both pipelines
run the same random-weight network with the same threads and chunks; the script prints the
warm median seconds of each, stage by stage, the speed-up and the largest keypoint difference.
The reference's network runs either as the paper's code runs it (the eager fp32 module) or
through the core's own forward: then the two pipelines differ only in batching (pre- and
post-processing on whole batches, crops and mirrors in one network call). Dev-only: needs
OpenCV; not part of the package (``notebooks/04_timing.ipynb`` loads it from the checkout).

Run: python benchmarks/reference.py [--people 100] [--depth 50] [--no-flip] [--network posekit]
"""
from __future__ import annotations

import argparse
import contextlib
import math

import cv2
import numpy as np
import torch
from torchvision.transforms.functional import normalize, to_tensor

from posekit.bench import PersonBatch, StageTimes, sample_people, time_stages
from posekit.core.crop import affine_matrix, box_to_center_scale
from posekit.core.spec import InputSpec
from posekit.core.topdown import Forward, StageTimer, Stopwatch
from posekit.models.pose_resnet import pose_resnet
from posekit.models.runtime import inference_forward, resolve_backend


def reference_keypoints(
    network: Forward,
    spec: InputSpec,
    batch: PersonBatch,
    flip: bool = True,
    max_batch: int = 64,
    device: torch.device | str = "cpu",
    stopwatch: Stopwatch | None = None,
) -> np.ndarray:
    """The inference of the paper's code, for comparison only.

    One person at a time: ``cv2.warpAffine`` on the image in the network's channel order,
    ``ToTensor`` + ``Normalize``; the network under ``no_grad`` (the eager fp32 module, as the
    paper's code runs it, or any forward callable on ``device``); the flip test as a ``numpy``
    flip of the input, a second forward, a pair-by-pair swap and a one-pixel shift; the
    quarter-pixel refinement and the mapping back to the image one joint at a time. The
    Python loops are the point: this is the baseline the batched core is measured against.
    ``stopwatch`` is called with the stage names of :data:`posekit.core.topdown.STAGES`, as the
    core's is, so that the two are timed stage by stage.

    Shape: -> keypoints (N, K, 3) x, y, score in image pixels.
    """
    stopwatch = stopwatch or (lambda stage: contextlib.nullcontext())
    with stopwatch("crop"):
        # The paper's loader reads images with cv2.imread, i.e. as BGR.
        image = np.ascontiguousarray(batch.image[:, :, ::-1] if spec.channel_order == "bgr" else batch.image)
        centers, scales = box_to_center_scale(batch.boxes, spec.aspect_ratio)
    keypoints = []
    with torch.no_grad():
        for start in range(0, len(centers), max_batch):
            people = range(start, min(start + max_batch, len(centers)))
            crops, tensors = [], []
            with stopwatch("crop"):
                for n in people:
                    matrix = affine_matrix(centers[n], scales[n], output_size=spec.input_size)
                    crops.append(cv2.warpAffine(image, matrix, tuple(spec.input_size), flags=cv2.INTER_LINEAR))
            with stopwatch("normalise"):
                for crop in crops:
                    tensors.append(normalize(to_tensor(crop), spec.mean, spec.std))
                inputs = torch.stack(tensors).to(device)
                if flip:
                    mirrored_inputs = torch.from_numpy(np.flip(inputs.cpu().numpy(), 3).copy()).to(device)
            with stopwatch("forward"):
                heatmaps = network(inputs)
                if flip:
                    mirrored = network(mirrored_inputs).cpu().numpy()
            if flip:
                with stopwatch("flip_back"):
                    mirrored = mirrored[:, :, :, ::-1]
                    for left, right in spec.flip_pairs:
                        mirrored[:, [left, right]] = mirrored[:, [right, left]]
                    mirrored = mirrored.copy()
                    mirrored[:, :, :, 1:] = mirrored[:, :, :, :-1].copy()
                    heatmaps = (heatmaps + torch.from_numpy(mirrored).to(device)) * 0.5
            with stopwatch("decode"):
                keypoints.append(_reference_decode(heatmaps.cpu().numpy(), centers[people], scales[people]))
    return np.concatenate(keypoints)


def time_reference(
    network: Forward,
    spec: InputSpec,
    batch: PersonBatch,
    flip: bool = True,
    max_batch: int = 64,
    repeats: int = 3,
    device: torch.device | str = "cpu",
) -> tuple[StageTimes, list[StageTimes]]:
    """:func:`reference_keypoints` on ``batch`` once cold, then ``repeats`` times warm, each
    timed per stage as ``posekit bench`` times the core; the median is ``StageTimes.median(warm)``.

    Returns: the cold run's stage times and the warm runs'.
    """
    runs = []
    for _ in range(repeats + 1):
        timer = StageTimer(device)
        reference_keypoints(network, spec, batch, flip, max_batch, device, timer)
        runs.append(StageTimes.from_timer(timer))
    return runs[0], runs[1:]


def _reference_decode(heatmaps: np.ndarray, centers: np.ndarray, scales: np.ndarray) -> np.ndarray:
    """Argmax, quarter-pixel step towards the higher neighbour, back to the image: joint by joint."""
    people, joints, height, width = heatmaps.shape
    flat = heatmaps.reshape(people, joints, -1)
    peaks, maxima = flat.argmax(2), flat.max(2)
    coords = np.stack([peaks % width, peaks // width], axis=2).astype(np.float32)
    coords *= (maxima > 0)[..., None]
    keypoints = np.zeros((people, joints, 3), np.float32)
    for n in range(people):
        to_image = affine_matrix(centers[n], scales[n], output_size=(width, height), inverse=True)
        for k in range(joints):
            heatmap, (x, y) = heatmaps[n, k], coords[n, k]
            px, py = int(math.floor(x + 0.5)), int(math.floor(y + 0.5))
            if 1 < px < width - 1 and 1 < py < height - 1:
                step = np.array([heatmap[py, px + 1] - heatmap[py, px - 1], heatmap[py + 1, px] - heatmap[py - 1, px]])
                x, y = coords[n, k] + np.sign(step) * 0.25
            keypoints[n, k, :2] = to_image @ np.array([x, y, 1.0])
            keypoints[n, k, 2] = maxima[n, k]
    return keypoints


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--people", type=int, default=100)
    parser.add_argument("--depth", type=int, default=50)
    parser.add_argument("--max-batch", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3, help="warm runs of each pipeline (the median is shown)")
    parser.add_argument("--no-flip", action="store_true")
    parser.add_argument("--network", choices=("eager", "posekit"), default="eager",
                        help="the reference's network: the eager module (the paper's code) or the core's own "
                             "forward (then only the batching differs)")
    args = parser.parse_args()
    flip = not args.no_flip
    torch.manual_seed(0)
    model = pose_resnet(args.depth).eval()
    spec = model.input_spec
    forward = inference_forward(model)  # what PoseEstimator runs by default on this device
    network = model if args.network == "eager" else forward
    batch = sample_people(args.people)
    ours = [time_stages(forward, spec, batch, flip, args.max_batch) for _ in range(args.repeats + 1)]
    _, warm = time_reference(network, spec, batch, flip, args.max_batch, args.repeats)
    core, reference = StageTimes.median([times for _, times in ours[1:]]), StageTimes.median(warm)
    points = reference_keypoints(network, spec, batch, flip, args.max_batch)
    distances = np.linalg.norm(points[..., :2] - ours[-1][0][..., :2], axis=-1)
    print(f"{args.people} people, pose_resnet_{args.depth} (random weights), flip test {'on' if flip else 'off'}, "
          f"{torch.get_num_threads()} threads, warm medians of {args.repeats} runs")
    print(f"{'stage (s)':<12}{'posekit':>10}{'reference':>11}")
    for (stage, seconds), theirs in zip(core.as_dict().items(), reference.as_dict().values()):
        print(f"{stage:<12}{seconds:>10.3f}{theirs:>11.3f}")
    print(f"posekit top-down core ({resolve_backend('auto')}): {core.total:.3f} s; "
          f"paper-style reference ({'eager module' if args.network == 'eager' else 'the same forward'}): "
          f"{reference.total:.3f} s; "
          f"speed-up {reference.total / core.total:.2f}x")
    print(f"largest keypoint difference {distances.max():.2g} px; joints > 0.01 px apart: "
          f"{int((distances > 0.01).sum())} of {distances.size}")


if __name__ == "__main__":
    main()
