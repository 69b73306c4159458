"""The random upright pose shared by the synthetic sets (current and version 1)."""

from __future__ import annotations

import numpy as np

# +90 degrees about x: (x, y, z) -> (x, -z, y), a proper rotation taking y-up to z-up
Y_UP_TO_Z_UP = np.array([[1.0, 0, 0], [0, 0, -1], [0, 1, 0]])


def random_pose(rng: np.random.Generator) -> np.ndarray:
    """Random rotation about the (y-up) building frame's up axis, then a small tilt about x,
    then the turn to z-up. Proper rotations only: a mirror would turn one helix into the
    other."""
    a, t = rng.uniform(0, 2 * np.pi), rng.normal(0, 0.15)
    ry = np.array([[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]])
    rx = np.array([[1, 0, 0], [0, np.cos(t), -np.sin(t)], [0, np.sin(t), np.cos(t)]])
    return Y_UP_TO_Z_UP @ rx @ ry
