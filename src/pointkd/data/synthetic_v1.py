"""Version 1 of the built-in synthetic dataset (`synthetic:version=1`), kept unchanged so
that record sets and test expectations made on it stay reproducible.

12 procedural shape classes; defaults 80 train and 25 test shapes per class. Every shape has
its own generator seeded by (seed, split, class, index). Intra-class variation: random shape
parameters, random orientation about the up axis and a small tilt, surface noise, and for a
third of the shapes a partial view. Several classes are confusable in pairs (sphere/ellipsoid,
cylinder/capsule, cone/pyramid, box/L-shape, disk/torus), but a 0.1M-parameter student
already reaches ~93% on it: `make demo` uses version 2 (see `synthetic`).
"""

from __future__ import annotations

import numpy as np

from pointkd.data._pose import random_pose

DEFAULTS = {"train_per_class": 80, "test_per_class": 25}


def _unit(rng: np.random.Generator, n: int) -> np.ndarray:
    v = rng.normal(size=(n, 3))
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def _sphere(rng, n):
    return _unit(rng, n) * rng.uniform(0.92, 1.08, 3)


def _ellipsoid(rng, n):
    return _unit(rng, n) * np.array([1.0, rng.uniform(0.55, 0.85), rng.uniform(0.55, 0.85)])


def _box(rng, n, size=None):
    size = rng.uniform(0.4, 1.0, 3) if size is None else size
    face = rng.integers(0, 3, n)
    p = rng.uniform(-1, 1, (n, 3))
    p[np.arange(n), face] = rng.choice([-1.0, 1.0], n)
    return p * size


def _tube(rng, n, radius, height, caps):
    """Cylinder side plus optional caps: 'flat' discs or 'round' hemispheres."""
    theta = rng.uniform(0, 2 * np.pi, n)
    y = rng.uniform(-height / 2, height / 2, n)
    p = np.stack([radius * np.cos(theta), y, radius * np.sin(theta)], 1)
    m = n // 4
    if caps == "flat":
        r = radius * np.sqrt(rng.uniform(0, 1, m))
        t = rng.uniform(0, 2 * np.pi, m)
        p[:m] = np.stack([r * np.cos(t), np.sign(rng.uniform(-1, 1, m)) * height / 2,
                          r * np.sin(t)], 1)
    elif caps == "round":
        d = _unit(rng, m) * radius
        p[:m] = d + np.stack([0 * d[:, 0], np.sign(d[:, 1]) * height / 2, 0 * d[:, 0]], 1)
    return p


def _cylinder(rng, n):
    return _tube(rng, n, rng.uniform(0.3, 0.55), rng.uniform(1.0, 1.8), "flat")


def _capsule(rng, n):
    return _tube(rng, n, rng.uniform(0.3, 0.55), rng.uniform(0.9, 1.6), "round")


def _apex_solid(rng, n, sides):
    """Cone (sides=0) or pyramid: lateral surface towards an apex, plus the base."""
    radius, height = rng.uniform(0.45, 0.8), rng.uniform(0.9, 1.5)
    t = np.sqrt(rng.uniform(0, 1, n))  # area grows linearly towards the base
    angle = rng.uniform(0, 2 * np.pi, n)
    if sides:
        # polygon boundary point at the angle's sector
        sector = np.floor(angle / (2 * np.pi / sides))
        a0 = sector * 2 * np.pi / sides
        frac = rng.uniform(0, 1, n)
        c0 = np.stack([np.cos(a0), np.sin(a0)], 1)
        c1 = np.stack([np.cos(a0 + 2 * np.pi / sides), np.sin(a0 + 2 * np.pi / sides)], 1)
        ring = c0 + frac[:, None] * (c1 - c0)
    else:
        ring = np.stack([np.cos(angle), np.sin(angle)], 1)
    p = np.stack([radius * t * ring[:, 0], height / 2 - t * height, radius * t * ring[:, 1]], 1)
    m = n // 5
    base = ring[:m] * np.sqrt(rng.uniform(0, 1, (m, 1)))
    p[:m] = np.stack([radius * base[:, 0], np.full(m, -height / 2), radius * base[:, 1]], 1)
    return p


def _cone(rng, n):
    return _apex_solid(rng, n, 0)


def _pyramid(rng, n):
    return _apex_solid(rng, n, 4)


def _torus(rng, n):
    big, small = rng.uniform(0.6, 0.8), rng.uniform(0.15, 0.4)
    u, v = rng.uniform(0, 2 * np.pi, n), rng.uniform(0, 2 * np.pi, n)
    return np.stack([(big + small * np.cos(v)) * np.cos(u), small * np.sin(v),
                     (big + small * np.cos(v)) * np.sin(u)], 1)


def _disk(rng, n):
    return _tube(rng, n, rng.uniform(0.8, 1.0), rng.uniform(0.08, 0.3), "flat")[
        :, [0, 1, 2]]


def _helix(rng, n):
    turns, radius, tube = rng.uniform(2, 4), rng.uniform(0.4, 0.6), rng.uniform(0.06, 0.12)
    s = rng.uniform(0, 1, n)
    centre = np.stack([radius * np.cos(2 * np.pi * turns * s), 2 * s - 1,
                       radius * np.sin(2 * np.pi * turns * s)], 1)
    return centre + _unit(rng, n) * tube


def _dumbbell(rng, n):
    r, gap = rng.uniform(0.3, 0.45), rng.uniform(0.5, 0.9)
    k = rng.integers(0, 3, n)
    p = _unit(rng, n) * r
    p[k == 0, 1] += gap
    p[k == 1, 1] -= gap
    rod = k == 2
    p[rod] = _tube(rng, int(rod.sum()), r * 0.3, 2 * gap, None)
    return p


def _l_shape(rng, n):
    long, short, thick = rng.uniform(0.8, 1.0), rng.uniform(0.4, 0.7), rng.uniform(0.15, 0.3)
    half = n // 2
    a = _box(rng, half, np.array([thick, long, thick]))
    b = _box(rng, n - half, np.array([short, thick, thick]))
    b[:, 0] += short - thick
    b[:, 1] -= long - thick
    return np.concatenate([a, b])


CLASSES = {
    "sphere": _sphere, "ellipsoid": _ellipsoid, "box": _box, "l_shape": _l_shape,
    "cylinder": _cylinder, "capsule": _capsule, "cone": _cone, "pyramid": _pyramid,
    "torus": _torus, "disk": _disk, "helix": _helix, "dumbbell": _dumbbell,
}


def make_shape(cls: int, rng: np.random.Generator, num_points: int) -> np.ndarray:
    fn = list(CLASSES.values())[cls]
    p = fn(rng, 2 * num_points) @ random_pose(rng).T
    if rng.uniform() < 1 / 3:  # partial view: cut away 15-40% beyond a random plane
        d = _unit(rng, 1)[0]
        proj = p @ d
        p = p[proj < np.quantile(proj, 1 - rng.uniform(0.15, 0.4))]
    p = p[rng.permutation(len(p))[:num_points]]
    return p + rng.normal(0, rng.uniform(0.0, 0.03), p.shape)
