"""The built-in synthetic dataset: 20 fine-grained procedural classes, deterministic from a seed.

`synthetic` or `synthetic:seed=0,train_per_class=40,test_per_class=60` (every option is
optional; defaults: seed 0, 40 train and 60 test shapes per class = 800 / 1,200 shapes — a
test set where one point of accuracy is 12 shapes — 1024 points unless `num_points` says
otherwise; a second or two to generate). `synthetic:version=1` is the earlier, easier
12-class set (`synthetic_v1`, defaults 80 / 25 per class), kept so that results made on it
stay reproducible.

The classes come in ten pairs whose members differ in one small detail, so that telling them
apart takes fine geometric resolution, which a tiny model lacks:

    box / box_knob            a small cube on the top face
    cylinder / capsule        flat or rounded ends
    cone / frustum            a pointed or a cut-off top
    sphere / ellipsoid        slightly flattened on two axes
    ring / ring_gap           a closed torus or one with a gap
    table4 / table3           four legs or one missing
    cup / mug                 an open cylinder with or without a handle
    helix_cw / helix_ccw      the same spiral, mirrored (rotation cannot turn one into other)
    dumbbell / dumbbell_uneven  equal balls or one smaller
    l_beam / t_beam           the foot at the end of the post or under its middle

Every shape has its own generator seeded by (seed, split, class, index): train and test never
share a shape, and a smaller `*_per_class` gives a prefix (per class) of a larger one. Shapes
vary in their parameters, are turned at random about the up axis with a small tilt, carry
surface noise, and half of them are partial views (points beyond a random plane cut away, as
from a single scan direction) — which can hide the very detail that defines the class, so
some shapes are genuinely ambiguous. Shapes are built y-up and turned z-up at the end, like
the shared ModelNet40 clouds (the augmentation's default up axis).
"""

from __future__ import annotations

import numpy as np

from pointkd.data._core import MissingSplitError, PointCloudSet
from pointkd.data._pose import random_pose
from pointkd.errors import DataError

DEFAULTS = {"seed": 0, "train_per_class": 40, "test_per_class": 60, "version": 2}
VERSIONS = (1, 2)


def _unit(rng: np.random.Generator, n: int) -> np.ndarray:
    v = rng.normal(size=(n, 3))
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def _split(n: int, *fractions: float) -> list[int]:
    """Point counts for the parts of a composite shape: `fractions` of n, the rest last."""
    counts = [int(round(f * n)) for f in fractions]
    return counts + [n - sum(counts)]


def _box_surface(rng, n, half) -> np.ndarray:
    """Points on the surface of an axis-aligned box with half-sizes `half`, by face area."""
    half = np.asarray(half, dtype=float)
    areas = np.array([half[1] * half[2], half[0] * half[2], half[0] * half[1]])
    face = rng.choice(3, n, p=areas / areas.sum())
    p = rng.uniform(-1, 1, (n, 3))
    p[np.arange(n), face] = rng.choice([-1.0, 1.0], n)
    return p * half


def _tube(rng, n, radius, height, caps) -> np.ndarray:
    """Cylinder side along y plus caps: 'flat' discs, 'round' hemispheres, 'bottom' (one
    flat disc, an open cup) or None."""
    theta = rng.uniform(0, 2 * np.pi, n)
    y = rng.uniform(-height / 2, height / 2, n)
    p = np.stack([radius * np.cos(theta), y, radius * np.sin(theta)], 1)
    m = n // 4
    if caps in ("flat", "bottom"):
        r = radius * np.sqrt(rng.uniform(0, 1, m))
        t = rng.uniform(0, 2 * np.pi, m)
        side = -np.ones(m) if caps == "bottom" else np.sign(rng.uniform(-1, 1, m))
        p[:m] = np.stack([r * np.cos(t), side * height / 2, r * np.sin(t)], 1)
    elif caps == "round":
        d = _unit(rng, m) * radius
        d[:, 1] += np.sign(d[:, 1]) * height / 2
        p[:m] = d
    return p


def _box(rng, n, knob=False):
    half = np.array([rng.uniform(0.45, 0.9), rng.uniform(0.35, 0.7), rng.uniform(0.45, 0.9)])
    if not knob:
        return _box_surface(rng, n, half)
    n_box, n_knob = _split(n, 0.9)
    s = rng.uniform(0.1, 0.15)
    knob_pts = _box_surface(rng, n_knob, [s, s, s])
    knob_pts += [rng.uniform(-1, 1) * (half[0] - s), half[1] + s,
                 rng.uniform(-1, 1) * (half[2] - s)]
    return np.concatenate([_box_surface(rng, n_box, half), knob_pts])


def _cylinder(rng, n, caps):
    return _tube(rng, n, rng.uniform(0.3, 0.5), rng.uniform(1.1, 1.8), caps)


def _cone(rng, n, top=0.0):
    """Lateral surface from the base disc (y = -h/2, radius r) up to radius `top` x r at
    y = h/2: a cone for top = 0, a frustum (with its top disc) otherwise."""
    radius, height = rng.uniform(0.5, 0.8), rng.uniform(1.0, 1.5)
    n_side, n_base, n_top = _split(n, 0.7, 0.2) if top else [*_split(n, 0.8), 0]
    t = np.sqrt(rng.uniform(top**2, 1, n_side))  # radius fraction; area grows towards the base
    a = rng.uniform(0, 2 * np.pi, n_side)
    y = height / 2 - (t - top) / (1 - top) * height
    side = np.stack([radius * t * np.cos(a), y, radius * t * np.sin(a)], 1)
    discs = []
    for count, r, y in ((n_base, radius, -height / 2), (n_top, radius * top, height / 2)):
        rr, aa = r * np.sqrt(rng.uniform(0, 1, count)), rng.uniform(0, 2 * np.pi, count)
        discs.append(np.stack([rr * np.cos(aa), np.full(count, y), rr * np.sin(aa)], 1))
    return np.concatenate([side, *discs])


def _sphere(rng, n):
    return _unit(rng, n) * rng.uniform(0.95, 1.05, 3)


def _ellipsoid(rng, n):
    return _unit(rng, n) * np.array([1.0, rng.uniform(0.65, 0.8), rng.uniform(0.65, 0.8)])


def _ring(rng, n, gap=False):
    big, small = rng.uniform(0.6, 0.8), rng.uniform(0.12, 0.22)
    start = rng.uniform(1.0, 1.4) if gap else 0.0  # the gap spans 55-80 degrees
    u = rng.uniform(start, 2 * np.pi, n)
    v = rng.uniform(0, 2 * np.pi, n)
    return np.stack([(big + small * np.cos(v)) * np.cos(u), small * np.sin(v),
                     (big + small * np.cos(v)) * np.sin(u)], 1)


def _table(rng, n, legs=4):
    wx, wz, h = rng.uniform(0.6, 0.9), rng.uniform(0.45, 0.7), rng.uniform(0.45, 0.65)
    leg_r, inset = rng.uniform(0.04, 0.06), rng.uniform(0.05, 0.12)
    n_top, n_legs = _split(n, 0.6)
    top = _box_surface(rng, n_top, [wx, 0.04, wz]) + [0, h, 0]
    corners = [(sx * (wx - inset), sz * (wz - inset)) for sx in (-1, 1) for sz in (-1, 1)]
    if legs == 3:
        corners.pop(int(rng.integers(0, 4)))
    which = rng.integers(0, len(corners), n_legs)
    leg = _tube(rng, n_legs, leg_r, 2 * h, None)
    leg += np.array([[corners[i][0], 0.0, corners[i][1]] for i in which])
    return np.concatenate([top, leg])


def _cup(rng, n, handle=False):
    radius, height = rng.uniform(0.4, 0.55), rng.uniform(0.8, 1.2)
    if not handle:
        return _tube(rng, n, radius, height, "bottom")
    n_cup, n_handle = _split(n, 0.82)
    big, small = rng.uniform(0.25, 0.35) * height, 0.07
    u = rng.uniform(-np.pi / 2, np.pi / 2, n_handle)  # the outer half of a torus in the xy-plane
    v = rng.uniform(0, 2 * np.pi, n_handle)
    arc = np.stack([radius + (big + small * np.cos(v)) * np.cos(u),
                    (big + small * np.cos(v)) * np.sin(u), small * np.sin(v)], 1)
    return np.concatenate([_tube(rng, n_cup, radius, height, "bottom"), arc])


def _helix(rng, n, hand=1):
    turns, radius, tube = rng.uniform(2, 3.5), rng.uniform(0.4, 0.6), rng.uniform(0.06, 0.1)
    s = rng.uniform(0, 1, n)
    centre = np.stack([radius * np.cos(2 * np.pi * turns * s), 2 * s - 1,
                       hand * radius * np.sin(2 * np.pi * turns * s)], 1)
    return centre + _unit(rng, n) * tube


def _dumbbell(rng, n, uneven=False):
    r, gap = rng.uniform(0.3, 0.42), rng.uniform(0.55, 0.85)
    r2 = r * rng.uniform(0.6, 0.75) if uneven else r
    n_a, n_b, n_rod = _split(n, 0.4, 0.4 * (r2 / r) ** 2)
    a = _unit(rng, n_a) * r + [0, gap, 0]
    b = _unit(rng, n_b) * r2 - [0, gap, 0]
    rod = _tube(rng, n_rod, 0.3 * r2, 2 * gap, None)
    return np.concatenate([a, b, rod])


def _beam(rng, n, centred=False):
    """A vertical post on a horizontal foot: at the foot's end (L) or its middle (T)."""
    long, foot, thick = rng.uniform(0.8, 1.0), rng.uniform(0.5, 0.8), rng.uniform(0.12, 0.2)
    n_post, n_foot = _split(n, 0.55)
    post = _box_surface(rng, n_post, [thick, long, thick])
    bar = _box_surface(rng, n_foot, [foot, thick, thick])
    bar[:, 1] -= long - thick
    if not centred:
        bar[:, 0] += foot - thick
    return np.concatenate([post, bar])


CLASSES = {
    "box": _box, "box_knob": lambda r, n: _box(r, n, knob=True),
    "cylinder": lambda r, n: _cylinder(r, n, "flat"),
    "capsule": lambda r, n: _cylinder(r, n, "round"),
    "cone": _cone, "frustum": lambda r, n: _cone(r, n, top=r.uniform(0.2, 0.3)),
    "sphere": _sphere, "ellipsoid": _ellipsoid,
    "ring": _ring, "ring_gap": lambda r, n: _ring(r, n, gap=True),
    "table4": _table, "table3": lambda r, n: _table(r, n, legs=3),
    "cup": _cup, "mug": lambda r, n: _cup(r, n, handle=True),
    "helix_cw": _helix, "helix_ccw": lambda r, n: _helix(r, n, hand=-1),
    "dumbbell": _dumbbell, "dumbbell_uneven": lambda r, n: _dumbbell(r, n, uneven=True),
    "l_beam": _beam, "t_beam": lambda r, n: _beam(r, n, centred=True),
}

def make_shape(cls: int, rng: np.random.Generator, num_points: int) -> np.ndarray:
    fn = list(CLASSES.values())[cls]
    p = fn(rng, 2 * num_points) @ random_pose(rng).T
    if rng.uniform() < 0.3:  # partial view: cut away 10-30% beyond a random plane
        proj = p @ _unit(rng, 1)[0]
        p = p[proj < np.quantile(proj, 1 - rng.uniform(0.1, 0.3))]
    p = p[rng.permutation(len(p))[:num_points]]
    return p + rng.normal(0, rng.uniform(0.005, 0.02), p.shape)


def parse_options(text: str) -> dict[str, int]:
    """The options of `synthetic:key=value,...`, defaults filled in (version 1 has its own
    per-class defaults)."""
    given: dict[str, int] = {}
    if ":" in text:
        for item in filter(None, text.split(":", 1)[1].split(",")):
            key, _, value = item.strip().partition("=")
            if key not in DEFAULTS:
                raise DataError(f"{text}: unknown synthetic option '{key}' "
                                f"(known: {', '.join(DEFAULTS)})")
            try:
                given[key] = int(value)
            except ValueError:
                raise DataError(f"{text}: synthetic option {key} must be an integer, got "
                                f"'{value}'") from None
            if given[key] < (0 if key == "seed" else 1):
                raise DataError(f"{text}: synthetic option {key} must be "
                                f"{'>= 0' if key == 'seed' else '>= 1'}, got {given[key]}")
    version = given.get("version", DEFAULTS["version"])
    if version not in VERSIONS:
        raise DataError(f"{text}: synthetic version must be one of "
                        f"{', '.join(map(str, VERSIONS))}, got {version}")
    if version == 1:
        from pointkd.data import synthetic_v1

        return {**DEFAULTS, **synthetic_v1.DEFAULTS, **given}
    return {**DEFAULTS, **given}


def load_synthetic(text: str, split: str, num_points: int) -> PointCloudSet:
    if split not in ("train", "test"):
        raise MissingSplitError(f"{text}: synthetic data has splits train and test, "
                                f"not '{split}'")
    opts = parse_options(text)
    if opts["version"] == 1:
        from pointkd.data import synthetic_v1 as generator
    else:
        import pointkd.data.synthetic as generator
    classes = list(generator.CLASSES)
    per_class = opts[f"{split}_per_class"]
    split_key = 0 if split == "train" else 1
    labels = np.repeat(np.arange(len(classes)), per_class)
    points = np.empty((len(labels), num_points, 3), dtype=np.float32)
    for k, c in enumerate(labels):
        rng = np.random.default_rng([opts["seed"], split_key, int(c), k % per_class])
        points[k] = generator.make_shape(int(c), rng, num_points)
    name = "synthetic" if text == "synthetic" else text
    return PointCloudSet(points, labels.astype(np.int64), classes, f"{name}/{split}")
