"""Temporal smoothing of keypoints: the One-Euro filter, vectorised over people and joints.

:class:`~posekit.track.PoseTracker` applies it per track when given ``smoothing=OneEuro()``.
"""
from __future__ import annotations

import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True)
class OneEuro:
    """One-Euro filter settings (Casiez et al., CHI 2012): a low-pass filter whose cutoff rises
    with speed, so still joints stop jittering while fast ones do not lag.

    Attributes:
        min_cutoff: cutoff frequency at rest, Hz (lower: smoother, more lag when slow).
        beta: cutoff increase per pixel/second of speed (higher: less lag when fast).
        d_cutoff: cutoff of the speed estimate, Hz.
    """

    min_cutoff: float = 1.0
    beta: float = 0.01
    d_cutoff: float = 1.0

    def __call__(
        self, x: np.ndarray, previous: np.ndarray, previous_speed: np.ndarray, dt: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """One step for many signals at once.

        Shape: x, previous (filtered), previous_speed: (N, K, 2); dt (N,) seconds since each
        previous value -> (filtered x, filtered speed), each (N, K, 2).
        """
        dt = np.maximum(np.asarray(dt, np.float64), 1e-6)[:, None, None]
        speed = _low_pass((x - previous) / dt, previous_speed, self._alpha(self.d_cutoff, dt))
        cutoff = self.min_cutoff + self.beta * np.linalg.norm(speed, axis=-1, keepdims=True)
        return _low_pass(x, previous, self._alpha(cutoff, dt)), speed

    @staticmethod
    def _alpha(cutoff: np.ndarray | float, dt: np.ndarray) -> np.ndarray:
        tau = 1.0 / (2 * np.pi * cutoff)
        return 1.0 / (1.0 + tau / dt)


def _low_pass(x: np.ndarray, previous: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    return alpha * x + (1 - alpha) * previous
