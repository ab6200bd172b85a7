"""posekit's top-down core against the same inference written the way the paper's code does it.

For a batch of people in one bundled image (the protocol of ``posekit bench``), both pipelines
run the same random-weight network with the same threads and chunks; the script prints the
seconds of each, the speed-up and the largest keypoint difference. Dev-only: needs OpenCV.

Run: python benchmarks/reference.py [--people 100] [--depth 50] [--no-flip]
"""
from __future__ import annotations

import argparse
import math
import time

import cv2
import numpy as np
import torch
from torchvision.transforms.functional import normalize, to_tensor

from posekit.bench import PersonBatch, sample_people, time_stages
from posekit.crop import affine_matrix, box_to_center_scale
from posekit.export import inference_forward
from posekit.model import pose_resnet
from posekit.spec import InputSpec


def reference_keypoints(
    model: torch.nn.Module, spec: InputSpec, batch: PersonBatch, flip: bool = True, max_batch: int = 64
) -> np.ndarray:
    """The inference of the paper's code, for comparison only.

    One person at a time: ``cv2.warpAffine`` on the image in the network's channel order,
    ``ToTensor`` + ``Normalize``; the eager fp32 network under ``no_grad``; the flip test as a
    ``numpy`` flip of the input, a second forward, a pair-by-pair swap and a one-pixel shift;
    the quarter-pixel refinement and the mapping back to the image one joint at a time. The
    Python loops are the point: this is the baseline the batched core is measured against.

    Shape: -> keypoints (N, K, 3) x, y, score in image pixels.
    """
    device = next(model.parameters()).device
    # The paper's loader reads images with cv2.imread, i.e. as BGR.
    image = np.ascontiguousarray(batch.image[:, :, ::-1] if spec.channel_order == "bgr" else batch.image)
    centers, scales = box_to_center_scale(batch.boxes, spec.aspect_ratio)
    keypoints = []
    with torch.no_grad():
        for start in range(0, len(centers), max_batch):
            people = range(start, min(start + max_batch, len(centers)))
            tensors = []
            for n in people:
                matrix = affine_matrix(centers[n], scales[n], output_size=spec.input_size)
                crop = cv2.warpAffine(image, matrix, tuple(spec.input_size), flags=cv2.INTER_LINEAR)
                tensors.append(normalize(to_tensor(crop), spec.mean, spec.std))
            inputs = torch.stack(tensors).to(device)
            heatmaps = model(inputs)
            if flip:
                mirrored_inputs = torch.from_numpy(np.flip(inputs.cpu().numpy(), 3).copy()).to(device)
                mirrored = model(mirrored_inputs).cpu().numpy()[:, :, :, ::-1]
                for left, right in spec.flip_pairs:
                    mirrored[:, [left, right]] = mirrored[:, [right, left]]
                mirrored = mirrored.copy()
                mirrored[:, :, :, 1:] = mirrored[:, :, :, :-1].copy()
                heatmaps = (heatmaps + torch.from_numpy(mirrored).to(device)) * 0.5
            keypoints.append(_reference_decode(heatmaps.cpu().numpy(), centers[people], scales[people]))
    return np.concatenate(keypoints)


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
    parser.add_argument("--no-flip", action="store_true")
    args = parser.parse_args()
    flip = not args.no_flip
    torch.manual_seed(0)
    model = pose_resnet(args.depth).eval()
    forward = inference_forward(model)  # what PoseEstimator runs by default on this device
    batch = sample_people(args.people)
    time_stages(forward, model.input_spec, batch, flip, args.max_batch)  # warm-up
    ours, times = time_stages(forward, model.input_spec, batch, flip, args.max_batch)
    started = time.perf_counter()
    reference = reference_keypoints(model, model.input_spec, batch, flip, args.max_batch)
    reference_seconds = time.perf_counter() - started
    distances = np.linalg.norm(reference[..., :2] - ours[..., :2], axis=-1)
    print(f"{args.people} people, pose_resnet_{args.depth} (random weights), flip test {'on' if flip else 'off'}, "
          f"{torch.get_num_threads()} threads")
    print(f"posekit top-down core: {times.total:.3f} s; paper-style reference: {reference_seconds:.3f} s; "
          f"speed-up {reference_seconds / times.total:.2f}x")
    print(f"largest keypoint difference {distances.max():.2g} px; joints > 0.01 px apart: "
          f"{int((distances > 0.01).sum())} of {distances.size}")


if __name__ == "__main__":
    main()
