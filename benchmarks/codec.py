"""How fast and how exact are posekit's crop and heatmap codec? (dev-only: needs OpenCV)

For 200 people x 17 joints x 64x48 heatmaps (256x192 crops) it prints:
- decode, vectorised vs a per-joint Python loop doing the same thing (the official style);
- crop_batch vs one cv2.warpAffine per person;
- the sub-pixel error of argmax / quarter / DARK on Gaussians with known sub-pixel centres.

Run: python benchmarks/codec.py [--device cuda]
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import cv2
import numpy as np
import torch

from posekit.core.crop import affine_matrices, box_to_center_scale, crop_batch
from posekit.core.heatmaps import decode

PEOPLE, JOINTS, HEATMAP_W, HEATMAP_H, SIGMA = 200, 17, 48, 64, 2.0
SAMPLE_IMAGE = Path(__file__).resolve().parents[1] / "posekit" / "data" / "coco_sample" / "000000196141.jpg"


def best_time(run, repeats: int, device: torch.device) -> float:
    """Best wall time of ``repeats`` runs, in seconds (CUDA work is waited for)."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return min(times)


def gaussian_heatmaps(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Peak-1 Gaussians at uniform sub-pixel centres, 4 px or more from the border."""
    centres = np.stack(
        [rng.uniform(4, HEATMAP_W - 5, (PEOPLE, JOINTS)), rng.uniform(4, HEATMAP_H - 5, (PEOPLE, JOINTS))], -1
    )
    ys, xs = np.mgrid[0:HEATMAP_H, 0:HEATMAP_W]
    d2 = (xs - centres[..., 0, None, None]) ** 2 + (ys - centres[..., 1, None, None]) ** 2
    return np.exp(-d2 / (2 * SIGMA**2)).astype(np.float32), centres


def decode_joint_by_joint(heatmaps: np.ndarray, to_image: np.ndarray, method: str) -> np.ndarray:
    """The per-joint loop the vectorised decode replaces (argmax, refinement, inverse transform)."""
    coords = np.zeros((PEOPLE, JOINTS, 2), np.float32)
    for n in range(PEOPLE):
        for k in range(JOINTS):
            hm = heatmaps[n, k]
            y, x = np.unravel_index(np.argmax(hm), hm.shape)
            point = np.array([x, y], np.float64)
            if method == "quarter" and 1 < x < HEATMAP_W - 1 and 1 < y < HEATMAP_H - 1:
                point += 0.25 * np.sign([hm[y, x + 1] - hm[y, x - 1], hm[y + 1, x] - hm[y - 1, x]])
            if method == "dark" and 1 < x < HEATMAP_W - 2 and 1 < y < HEATMAP_H - 2:
                smooth = cv2.GaussianBlur(np.pad(hm, 5).astype(np.float64), (11, 11), 0)[5:-5, 5:-5]
                log = np.log(np.maximum(smooth * hm.max() / smooth.max(), 1e-10))
                grad = 0.5 * np.array([log[y, x + 1] - log[y, x - 1], log[y + 1, x] - log[y - 1, x]])
                dxx = 0.25 * (log[y, x + 2] - 2 * log[y, x] + log[y, x - 2])
                dyy = 0.25 * (log[y + 2, x] - 2 * log[y, x] + log[y - 2, x])
                dxy = 0.25 * (log[y + 1, x + 1] - log[y - 1, x + 1] - log[y + 1, x - 1] + log[y - 1, x - 1])
                if dxx * dyy - dxy**2 != 0:
                    point -= np.linalg.inv([[dxx, dxy], [dxy, dyy]]) @ grad
            coords[n, k] = to_image[n] @ np.append(point, 1.0)
    return coords


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", help="torch device for the vectorised code (cpu, cuda)")
    device = torch.device(parser.parse_args().device)
    rng = np.random.default_rng(0)
    print(
        f"posekit codec benchmark: {PEOPLE} people x {JOINTS} joints, heatmaps {HEATMAP_H}x{HEATMAP_W}, "
        f"crops 256x192; {device} (torch {torch.__version__}, {torch.get_num_threads()} threads), "
        f"OpenCV {cv2.__version__}"
    )

    heatmaps, centres = gaussian_heatmaps(rng)
    noisy = heatmaps + rng.normal(0, 0.02, heatmaps.shape).astype(np.float32)
    boxes = np.column_stack([rng.uniform(0, 500, (PEOPLE, 2)), rng.uniform(20, 300, (PEOPLE, 2))])
    centers, scales = box_to_center_scale(boxes)
    to_image = affine_matrices(centers, scales, (HEATMAP_W, HEATMAP_H), inverse=True)
    on_device = torch.from_numpy(noisy).to(device)
    for method in ("argmax", "quarter", "dark"):
        fast = best_time(lambda: decode(on_device, centers, scales, method), 5, device)
        slow = best_time(lambda: decode_joint_by_joint(noisy, to_image, method), 3, device)
        loop_coords = decode_joint_by_joint(noisy, to_image, method)
        loop_vs_fast = np.abs(loop_coords - decode(noisy, centers, scales, method)[0])
        print(
            f"decode {method:<7}  vectorised {fast * 1e3:8.1f} ms | per-joint loop {slow * 1e3:8.1f} ms | "
            f"{slow / fast:6.1f}x faster (max |difference| {loop_vs_fast.max():.1e} image px)"
        )

    image = cv2.imread(str(SAMPLE_IMAGE))
    height, width = image.shape[:2]
    boxes = np.column_stack([rng.uniform(-50, width - 50, PEOPLE), rng.uniform(-50, height - 50, PEOPLE),
                             rng.uniform(10, width / 2, PEOPLE), rng.uniform(10, height / 2, PEOPLE)])
    centers, scales = box_to_center_scale(boxes)
    to_crop = affine_matrices(centers, scales, (192, 256))
    image_on_device = torch.from_numpy(image).to(device).permute(2, 0, 1)
    batched = best_time(lambda: crop_batch(image_on_device, centers, scales), 3, device)
    opencv = best_time(lambda: [cv2.warpAffine(image, m, (192, 256), flags=cv2.INTER_LINEAR) for m in to_crop], 3,
                       device)
    print(
        f"crop    {width}x{height} image  crop_batch {batched * 1e3:8.1f} ms | cv2.warpAffine x{PEOPLE} "
        f"{opencv * 1e3:8.1f} ms | {opencv / batched:6.2f}x ({'crop_batch' if batched < opencv else 'OpenCV'} faster)"
    )

    # this center and scale make heatmap px and image px the same
    identity = np.tile([HEATMAP_W / 2, HEATMAP_H / 2], (PEOPLE, 1)), np.tile([HEATMAP_W, HEATMAP_H], (PEOPLE, 1)) / 200
    print(f"sub-pixel error on {PEOPLE * JOINTS} Gaussians (sigma {SIGMA:g}, peak 1), in heatmap px (distance):")
    for label, maps in (("clean", heatmaps), ("noise 0.02", noisy)):
        for method in ("argmax", "quarter", "dark"):
            coords, _ = decode(maps, *identity, method)
            error = np.linalg.norm(coords - centres, axis=-1)
            print(f"  {label:<10} {method:<7}  mean {error.mean():.4f}  max {error.max():.4f}")


if __name__ == "__main__":
    main()
