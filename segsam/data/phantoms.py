"""Deterministic synthetic abdominal phantoms for the offline ``demo`` configuration.

The demo has no network and no real dataset, yet it must give a pretrained
medical SAM and the fine-tuned decoders something meaningful to segment. This
module draws abdomen-like CT and MR volumes with a ten-organ label map
(:data:`PHANTOM_LABELS`), entirely from ``np.random.default_rng(seed)``: the same
seed gives bit-identical arrays, different seeds give different anatomy.

How a case is made:

1. **Geometry.** Spacing as requested, an origin that moves with the seed (like
   a table position), and a direction matrix that is LPS identity for even seeds
   and a flipped or permuted orthonormal matrix for odd seeds (RAS, feet-first
   with a left-right flip, or rows/columns swapped), so that reorientation to a
   canonical orientation downstream is really exercised.
2. **Anatomy** is defined in patient coordinates (LPS millimetres relative to
   the centre of the field of view; +x patient left, +y posterior, +z superior)
   for a nominal 384 x 320 x 320 mm field of view and scaled to the actual one
   (in-plane isotropically, along z separately). Every voxel centre is first
   moved by a smooth random displacement field, then tested against implicit
   shapes (warped superellipsoids, tubes along polylines, tubes along z). Each
   organ also gets its own jitter of position, size and rotation and a lumpy
   surface.
3. **Priority.** Structures are laid down in a fixed order (body wall, spine,
   great vessels, thorax, then organs, then bowel) and each one only takes
   voxels that are still free, so nothing overlaps. Organs are designed to
   overlap their neighbours' envelopes, which makes them *touch* after the
   carving: liver-gallbladder, liver-IVC, liver-right kidney, stomach-spleen,
   pancreas-spleen, stomach-liver.
4. **Intensities** come from a tissue table (more tissues than labels: fat,
   muscle, ribs, discs, bowel, lung, heart, kidney medulla, stomach gas/fluid,
   intrahepatic vessels ...). CT uses Hounsfield units with a seeded contrast
   phase (native, arterial, portal-venous) and deliberately close values for
   neighbouring soft-tissue organs; MR uses T2-like relative intensities with
   dark or bright blood. Per-tissue smoothed-noise texture, a little
   partial-volume blur, then acquisition noise (Gaussian for CT, Rician for MR,
   after a smooth multiplicative bias field).

The random draws for anatomy come before the modality-specific ones, so a CT
and an MR drawn with the same seed share their anatomy (a "paired" case).
:func:`phantom_case_ids` gives every case its own seed, so a demo dataset never
contains such pairs unless asked to.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from segsam.atomic import atomic_path
from segsam.checks import is_int as _is_int

__all__ = [
    "MIN_SHAPE",
    "MODALITIES",
    "PHANTOM_LABELS",
    "make_phantom",
    "phantom_case_ids",
    "write_phantom_case",
]

PHANTOM_LABELS: dict[int, str] = {
    1: "liver",
    2: "spleen",
    3: "kidney_right",
    4: "kidney_left",
    5: "gallbladder",
    6: "stomach",
    7: "pancreas",
    8: "aorta",
    9: "inferior_vena_cava",
    10: "vertebrae",
}
"""Label id -> class name of the phantom label maps (``config/labelmaps/demo.json``)."""

MODALITIES: tuple[str, ...] = ("ct", "mr")
"""Modalities :func:`make_phantom` can draw."""

MIN_SHAPE = 16
"""Smallest allowed size of each image axis, in voxels."""

_NOMINAL_FOV_MM = np.array([384.0, 320.0, 320.0])  # LR, AP, SI extent the anatomy is designed for
_SEED_STRIDE = 1000  # seed offset between modalities in phantom_case_ids
_CT_PHASES = ("native", "arterial", "venous")  # column order of _CT_TABLE's means
_ANGLE_JITTER_DEG = 8.0  # SD of the per-organ rotation jitter
_RADIUS_JITTER = 0.1  # relative half-range of the per-point tube radius jitter

# Direction matrices (columns: physical direction of array axes i, j, k in LPS) for odd seeds.
_ODD_DIRECTIONS: tuple[np.ndarray, ...] = (
    np.diag([-1.0, -1.0, 1.0]),  # RAS, the usual NIfTI orientation
    np.diag([-1.0, 1.0, -1.0]),  # left-right flip, slices stored feet-first
    np.array([[0.0, 1.0, 0.0], [-1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]),  # i runs anterior, j runs left
)

# Tissue classes: more than the labels, so that unlabelled structures look like anatomy.
_TISSUES: tuple[str, ...] = (
    "air",
    "subcutaneous_fat",
    "muscle",
    "visceral_fat",
    "lung",
    "heart",
    "rib",
    "disc",
    "spinal_canal",
    "bowel",
    "bowel_gas",
    "iliac_artery",
    "iliac_vein",
    "liver",
    "liver_vessel",
    "spleen",
    "kidney_right",
    "kidney_right_medulla",
    "kidney_left",
    "kidney_left_medulla",
    "gallbladder",
    "stomach_wall",
    "stomach_fluid",
    "stomach_gas",
    "pancreas",
    "aorta",
    "ivc",
    "vertebra_cortex",
    "vertebra_marrow",
)
_T = {name: code for code, name in enumerate(_TISSUES)}
_TISSUE_LABEL: dict[str, int] = {
    "liver": 1,
    "liver_vessel": 1,
    "spleen": 2,
    "kidney_right": 3,
    "kidney_right_medulla": 3,
    "kidney_left": 4,
    "kidney_left_medulla": 4,
    "gallbladder": 5,
    "stomach_wall": 6,
    "stomach_fluid": 6,
    "stomach_gas": 6,
    "pancreas": 7,
    "aorta": 8,
    "ivc": 9,
    "vertebra_cortex": 10,
    "vertebra_marrow": 10,
}
_LABEL_OF_TISSUE = np.array([_TISSUE_LABEL.get(name, 0) for name in _TISSUES], dtype=np.uint8)

# CT tissue values: (mean HU per phase native/arterial/venous, fine texture SD, coarse texture SD).
_CT_TABLE: dict[str, tuple[tuple[float, float, float], float, float]] = {
    "air": ((-1000.0, -1000.0, -1000.0), 2.0, 0.0),
    "subcutaneous_fat": ((-105.0, -105.0, -105.0), 8.0, 5.0),
    "muscle": ((50.0, 55.0, 58.0), 8.0, 4.0),
    "visceral_fat": ((-95.0, -95.0, -95.0), 12.0, 8.0),
    "lung": ((-860.0, -850.0, -850.0), 30.0, 25.0),
    "heart": ((40.0, 160.0, 120.0), 10.0, 8.0),
    "rib": ((450.0, 450.0, 450.0), 60.0, 40.0),
    "disc": ((80.0, 85.0, 85.0), 8.0, 4.0),
    "spinal_canal": ((15.0, 15.0, 18.0), 5.0, 2.0),
    "bowel": ((28.0, 45.0, 50.0), 14.0, 12.0),
    "bowel_gas": ((-900.0, -900.0, -900.0), 30.0, 20.0),
    "iliac_artery": ((45.0, 200.0, 150.0), 6.0, 2.0),
    "iliac_vein": ((42.0, 70.0, 135.0), 6.0, 2.0),
    "liver": ((61.0, 65.0, 69.0), 5.0, 4.0),
    "liver_vessel": ((40.0, 70.0, 150.0), 6.0, 3.0),
    "spleen": ((50.0, 78.0, 76.0), 5.0, 5.0),
    "kidney_right": ((33.0, 170.0, 150.0), 6.0, 4.0),
    "kidney_right_medulla": ((30.0, 70.0, 145.0), 6.0, 4.0),
    "kidney_left": ((33.0, 170.0, 150.0), 6.0, 4.0),
    "kidney_left_medulla": ((30.0, 70.0, 145.0), 6.0, 4.0),
    "gallbladder": ((10.0, 10.0, 10.0), 3.0, 2.0),
    "stomach_wall": ((40.0, 70.0, 65.0), 6.0, 4.0),
    "stomach_fluid": ((12.0, 12.0, 12.0), 6.0, 6.0),
    "stomach_gas": ((-880.0, -880.0, -880.0), 25.0, 15.0),
    "pancreas": ((43.0, 95.0, 75.0), 8.0, 5.0),
    "aorta": ((45.0, 200.0, 150.0), 5.0, 2.0),
    "ivc": ((42.0, 70.0, 135.0), 5.0, 3.0),
    "vertebra_cortex": ((600.0, 600.0, 600.0), 50.0, 30.0),
    "vertebra_marrow": ((220.0, 225.0, 225.0), 30.0, 20.0),
}

# MR (T2-like, arbitrary units): (mean with dark blood, mean with bright blood, fine SD, coarse SD).
_MR_TABLE: dict[str, tuple[float, float, float, float]] = {
    "air": (0.0, 0.0, 0.0, 0.0),
    "subcutaneous_fat": (620.0, 620.0, 30.0, 20.0),
    "muscle": (170.0, 170.0, 15.0, 10.0),
    "visceral_fat": (590.0, 590.0, 35.0, 25.0),
    "lung": (35.0, 35.0, 10.0, 5.0),
    "heart": (200.0, 620.0, 25.0, 20.0),
    "rib": (60.0, 60.0, 15.0, 10.0),
    "disc": (650.0, 650.0, 30.0, 15.0),
    "spinal_canal": (900.0, 900.0, 20.0, 10.0),
    "bowel": (350.0, 350.0, 60.0, 50.0),
    "bowel_gas": (15.0, 15.0, 5.0, 5.0),
    "iliac_artery": (60.0, 750.0, 10.0, 5.0),
    "iliac_vein": (80.0, 720.0, 10.0, 5.0),
    "liver": (270.0, 270.0, 15.0, 12.0),
    "liver_vessel": (80.0, 700.0, 15.0, 10.0),
    "spleen": (470.0, 470.0, 20.0, 15.0),
    "kidney_right": (520.0, 520.0, 25.0, 15.0),
    "kidney_right_medulla": (600.0, 600.0, 25.0, 15.0),
    "kidney_left": (520.0, 520.0, 25.0, 15.0),
    "kidney_left_medulla": (600.0, 600.0, 25.0, 15.0),
    "gallbladder": (950.0, 950.0, 20.0, 10.0),
    "stomach_wall": (300.0, 300.0, 20.0, 10.0),
    "stomach_fluid": (880.0, 880.0, 30.0, 25.0),
    "stomach_gas": (15.0, 15.0, 5.0, 5.0),
    "pancreas": (330.0, 330.0, 25.0, 15.0),
    "aorta": (60.0, 750.0, 10.0, 5.0),
    "ivc": (80.0, 720.0, 10.0, 5.0),
    "vertebra_cortex": (80.0, 80.0, 15.0, 10.0),
    "vertebra_marrow": (430.0, 430.0, 30.0, 25.0),
}

# Groups of soft tissues whose mean value gets a common small per-case jitter.
_JITTERED: tuple[tuple[str, ...], ...] = (
    ("liver",),
    ("spleen",),
    ("pancreas",),
    ("kidney_right", "kidney_right_medulla"),
    ("kidney_left", "kidney_left_medulla"),
    ("stomach_wall",),
    ("muscle",),
    ("bowel",),
)


@dataclass
class _Canvas:
    """Anatomy coordinates of all voxels (flat, array order k, j, i) and the tissue map being drawn."""

    x: np.ndarray
    y: np.ndarray
    z: np.ndarray
    tissue: np.ndarray
    free: np.ndarray

    def take(self, index: np.ndarray, tissue: str) -> np.ndarray:
        """Give the still-free voxels among ``index`` to ``tissue``; return the ones taken."""
        taken = index[self.free[index]]
        self.tissue[taken] = _T[tissue]
        self.free[taken] = False
        return taken

    def near(self, center: Sequence[float], half: Sequence[float]) -> np.ndarray:
        """Flat indices of voxels inside an axis-aligned box (a cheap pre-selection)."""
        cx, cy, cz = center
        hx, hy, hz = half
        idx = np.flatnonzero(np.abs(self.z - cz) < hz)  # slab first, then filter the (fewer) survivors
        idx = idx[np.abs(self.x[idx] - cx) < hx]
        return idx[np.abs(self.y[idx] - cy) < hy]


def _rotation(rx: float, ry: float, rz: float) -> np.ndarray:
    """Rotation matrix from angles (radians) about x, then y, then z."""
    cx, sx = np.cos(rx), np.sin(rx)
    cy, sy = np.cos(ry), np.sin(ry)
    cz, sz = np.cos(rz), np.sin(rz)
    rot_x = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    rot_y = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rot_z = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return rot_z @ rot_y @ rot_x


def _superellipsoid(
    canvas: _Canvas,
    rng: np.random.Generator,
    center: Sequence[float],
    semi: Sequence[float],
    angles_deg: Sequence[float] = (0.0, 0.0, 0.0),
    exponent: float = 2.0,
    jitter_mm: float = 6.0,
    size_jitter: float = 0.08,
    lumpiness: float = 0.06,
) -> tuple[np.ndarray, np.ndarray]:
    """Voxels inside a jittered, rotated, lumpy superellipsoid.

    Returns the flat indices inside and, for those, the normalised radius
    (0 at the centre, 1 on the surface), so callers can pick inner shells.
    """
    c = np.asarray(center, dtype=float) + rng.normal(0.0, jitter_mm, size=3)
    a = np.asarray(semi, dtype=float) * rng.uniform(1.0 - size_jitter, 1.0 + size_jitter, size=3)
    ang = np.deg2rad(np.asarray(angles_deg, dtype=float) + rng.normal(0.0, _ANGLE_JITTER_DEG, size=3))
    rot = _rotation(*ang)
    freqs = rng.normal(0.0, 2.2, size=(3, 3))  # low-frequency surface lumps
    phases = rng.uniform(0.0, 2.0 * np.pi, size=3)
    idx = canvas.near(c, np.full(3, a.max() * (1.0 + lumpiness) + 2.0))
    d = np.stack([canvas.x[idx] - c[0], canvas.y[idx] - c[1], canvas.z[idx] - c[2]])
    q = (rot.T @ d) / a[:, None]  # local, normalised coordinates
    rho = (np.abs(q) ** exponent).sum(axis=0) ** (1.0 / exponent)
    rho -= lumpiness * np.sin(freqs @ q + phases[:, None]).sum(axis=0) / 3.0
    inside = rho < 1.0
    return idx[inside], rho[inside]


def _tube(
    canvas: _Canvas,
    rng: np.random.Generator,
    points: Sequence[Sequence[float]],
    radii: Sequence[float],
    jitter_mm: float = 5.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Voxels inside a tube around a jittered polyline whose radius varies linearly per segment.

    Returns the flat indices inside and, for those, the depth below the tube
    surface in millimetres (radius minus distance to the centre line).
    """
    pts = np.asarray(points, dtype=float) + rng.normal(0.0, jitter_mm, size=(len(points), 3))
    rad = np.asarray(radii, dtype=float) * rng.uniform(1.0 - _RADIUS_JITTER, 1.0 + _RADIUS_JITTER, size=len(radii))
    lo = (pts - rad[:, None]).min(axis=0)
    hi = (pts + rad[:, None]).max(axis=0)
    idx = canvas.near((lo + hi) / 2.0, (hi - lo) / 2.0 + 1.0)
    p = np.stack([canvas.x[idx], canvas.y[idx], canvas.z[idx]])
    depth = np.full(idx.size, -np.inf)
    for a, b, ra, rb in zip(pts[:-1], pts[1:], rad[:-1], rad[1:], strict=True):
        ab = b - a
        t = np.clip(((p - a[:, None]) * ab[:, None]).sum(axis=0) / (ab @ ab), 0.0, 1.0)
        dist = np.linalg.norm(p - (a[:, None] + t * ab[:, None]), axis=0)
        depth = np.maximum(depth, ra + t * (rb - ra) - dist)
    inside = depth > 0.0
    return idx[inside], depth[inside]


def _validate(modality: str, seed: int, shape_xyz: Sequence[int], spacing_mm: Sequence[float]) -> None:
    """Raise ValueError naming the first argument of :func:`make_phantom` that is out of range."""
    if modality not in MODALITIES:
        raise ValueError(f"modality must be one of {MODALITIES}, got {modality!r}")
    if not _is_int(seed) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    if not isinstance(shape_xyz, Sequence) or len(shape_xyz) != 3 or not all(_is_int(s) for s in shape_xyz):
        raise ValueError(f"shape_xyz must be three integers, got {shape_xyz!r}")
    if min(shape_xyz) < MIN_SHAPE:
        raise ValueError(f"shape_xyz must be at least {MIN_SHAPE} voxels along each axis, got {tuple(shape_xyz)}")
    if (
        not isinstance(spacing_mm, Sequence)
        or len(spacing_mm) != 3
        or not all(isinstance(s, (int, float, np.number)) and not isinstance(s, bool) for s in spacing_mm)
        or not all(np.isfinite(s) and s > 0 for s in spacing_mm)
    ):
        raise ValueError(f"spacing_mm must be three positive, finite numbers, got {spacing_mm!r}")


def _direction(seed: int) -> np.ndarray:
    """LPS identity for even seeds; one of the flipped or permuted matrices for odd seeds."""
    if seed % 2 == 0:
        return np.eye(3)
    return _ODD_DIRECTIONS[(seed // 2) % len(_ODD_DIRECTIONS)]


@dataclass
class _Drawing:
    """What every organ group of :func:`_draw_anatomy` draws with: the canvas, the random stream, the grid.

    The groups take their random draws from ``rng`` one after the other, in the
    order :func:`_draw_anatomy` calls them, so that order fixes the phantom.
    """

    canvas: _Canvas
    rng: np.random.Generator
    shape_zyx: tuple[int, int, int]
    all_idx: np.ndarray  # 0 .. n_voxels - 1: flat indices of every voxel


@dataclass
class _BodyWall:
    """Voxel masks (flat) of the body outline and its layers, and the body's antero-posterior centre."""

    body: np.ndarray  # inside the skin
    muscle_zone: np.ndarray  # inside the subcutaneous fat
    cavity: np.ndarray  # inside the muscle wall
    y_mid: float  # mm


@dataclass
class _SpineAxis:
    """Where the vertebral bodies lie, for the great vessels in front of them."""

    y_vert: np.ndarray  # per voxel: y (mm) of the vertebral body's centre at the voxel's height
    vb_b: float  # antero-posterior semi-axis of the vertebral body, mm


def _draw_anatomy(canvas: _Canvas, rng: np.random.Generator, shape_zyx: tuple[int, int, int]) -> None:
    """Fill ``canvas.tissue`` with the abdomen; all positions in nominal LPS millimetres.

    The groups are drawn in priority order (module docstring): the body wall and
    spine paint the tissue map directly and open the free cavity; every later
    structure only takes voxels that are still free.
    """
    drawing = _Drawing(canvas, rng, shape_zyx, np.arange(canvas.x.size))
    wall = _draw_body_wall(drawing)
    _draw_ribs(drawing, wall)
    spine = _draw_spine(drawing, wall)
    _draw_great_vessels(drawing, spine)
    _draw_thorax(drawing)
    _draw_kidneys(drawing)
    _draw_gallbladder(drawing)
    _draw_spleen(drawing)
    _draw_liver(drawing)
    _draw_stomach(drawing)
    _draw_pancreas(drawing)
    _draw_bowel(drawing)


def _body_ring(
    x: np.ndarray, y: np.ndarray, half_w: float, half_y: np.ndarray, y_mid: float, shrink: float
) -> np.ndarray:
    """Voxels inside the body outline (a superellipse, flatter at the back) moved ``shrink`` mm inwards."""
    u = np.abs(x) / (half_w - shrink)
    v = np.abs(y - y_mid) / (half_y - shrink)
    return u**2.4 + v**2.0 <= 1.0


def _draw_body_wall(drawing: _Drawing) -> _BodyWall:
    """Body outline: subcutaneous fat, then a muscle wall around the visceral-fat cavity."""
    canvas, rng = drawing.canvas, drawing.rng
    x, y, z = canvas.x, canvas.y, canvas.z
    half_w = 160.0 * rng.uniform(0.9, 1.05)
    half_ant = 118.0 * rng.uniform(0.9, 1.05)
    half_post = 110.0 * rng.uniform(0.92, 1.05)
    y_mid = 8.0 + rng.normal(0.0, 3.0)
    fat = rng.uniform(10.0, 30.0)
    wall = rng.uniform(9.0, 14.0)
    belly = 1.0 + 0.05 * np.cos((z + 40.0) / 160.0 * np.pi)  # anterior bulge below the ribs
    half_y = np.where(y < y_mid, half_ant * belly, half_post)
    body = _body_ring(x, y, half_w, half_y, y_mid, 0.0)
    muscle_zone = _body_ring(x, y, half_w, half_y, y_mid, fat)
    cavity = _body_ring(x, y, half_w, half_y, y_mid, fat + wall)
    canvas.tissue[body] = _T["subcutaneous_fat"]
    canvas.tissue[muscle_zone] = _T["muscle"]
    canvas.tissue[cavity] = _T["visceral_fat"]
    return _BodyWall(body=body, muscle_zone=muscle_zone, cavity=cavity, y_mid=y_mid)


def _draw_ribs(drawing: _Drawing, wall: _BodyWall) -> None:
    """Ribs in the muscle wall above the costal margin (sloping down anteriorly)."""
    canvas, rng = drawing.canvas, drawing.rng
    x, y, z = canvas.x, canvas.y, canvas.z
    rib_period = rng.uniform(28.0, 34.0)
    rib_phase = rng.uniform(0.0, rib_period)
    from_back = np.arctan2(np.abs(x), y - wall.y_mid) / np.pi  # 0 at the back, 1 at the front
    rib_level = np.mod(z + 110.0 * from_back - rib_phase, rib_period) < 8.0
    costal = z > -40.0 + 120.0 * from_back
    lateral = (np.abs(x) > 30.0) | (y > 20.0)
    canvas.tissue[wall.muscle_zone & ~wall.cavity & rib_level & costal & lateral] = _T["rib"]


def _draw_spine(drawing: _Drawing, wall: _BodyWall) -> _SpineAxis:
    """Spine: vertebral bodies with discs, canal, posterior arch; paraspinal and psoas muscles.

    Then opens the cavity: the visceral fat left inside it is what later structures may take.
    """
    canvas, rng = drawing.canvas, drawing.rng
    x, y, z = canvas.x, canvas.y, canvas.z
    lordosis = rng.uniform(6.0, 12.0)
    y_vert = 36.0 - lordosis * np.exp(-(((z + 70.0) / 70.0) ** 2))
    vb_a, vb_b = 22.0 * rng.uniform(0.9, 1.1), 17.0 * rng.uniform(0.9, 1.1)
    level = rng.uniform(32.0, 37.0)
    level_phase = rng.uniform(0.0, level)
    pos_in_level = np.mod(z - level_phase, level)
    is_disc = pos_in_level < 7.0
    r_body = np.sqrt((x / vb_a) ** 2 + ((y - y_vert) / vb_b) ** 2)
    vert_body = r_body <= 1.0
    near_endplate = (pos_in_level < 9.5) | (pos_in_level > level - 2.5)
    canal_y = y_vert + vb_b + 9.0
    r_canal = np.sqrt(x**2 + (y - canal_y) ** 2)
    canal = r_canal <= 8.0
    arch = (r_canal > 8.0) & (r_canal <= 14.0) & (y > y_vert + vb_b - 3.0)
    spinous = (np.abs(x) <= 4.0) & (y > canal_y + 8.0) & (y < canal_y + 34.0) & (pos_in_level > 12.0)
    transverse = (
        (np.abs(x) <= 32.0) & (np.abs(y - canal_y + 2.0) <= 4.0) & (pos_in_level > 15.0) & (pos_in_level < 23.0)
    )
    posterior = (arch | spinous | transverse) & ~is_disc
    paraspinal = ((np.abs(x) - 38.0) / 30.0) ** 2 + ((y - canal_y - 18.0) / 24.0) ** 2 <= 1.0
    psoas_r = np.clip(5.0 + 0.2 * (-10.0 - z), 0.0, 24.0)
    psoas = (z < -10.0) & ((np.abs(x) - (vb_a + 0.6 * psoas_r + 2.0)) ** 2 + (y - y_vert + 2.0) ** 2 <= psoas_r**2)
    in_body = wall.body & ~(canvas.tissue == _T["rib"])
    canvas.tissue[in_body & (paraspinal | psoas) & ~(vert_body | canal | posterior)] = _T["muscle"]
    canvas.tissue[in_body & canal] = _T["spinal_canal"]
    canvas.tissue[in_body & vert_body & is_disc] = _T["disc"]
    cortex = (r_body > 0.8) | near_endplate
    canvas.tissue[in_body & vert_body & ~is_disc & cortex] = _T["vertebra_cortex"]
    canvas.tissue[in_body & vert_body & ~is_disc & ~cortex] = _T["vertebra_marrow"]
    canvas.tissue[in_body & posterior] = _T["vertebra_cortex"]
    canvas.free[:] = wall.cavity & (canvas.tissue == _T["visceral_fat"])
    return _SpineAxis(y_vert=y_vert, vb_b=vb_b)


def _draw_great_vessels(drawing: _Drawing, spine: _SpineAxis) -> None:
    """Great vessels along z: aorta left-anterior of the spine, flattened IVC to its right, iliac vessels below."""
    canvas, rng, all_idx = drawing.canvas, drawing.rng, drawing.all_idx
    x, y, z = canvas.x, canvas.y, canvas.z
    bif_aorta = -105.0 + rng.normal(0.0, 8.0)
    aorta_x = 18.0 + rng.normal(0.0, 3.0) + 3.0 * np.sin(z / 90.0)
    aorta_y = spine.y_vert - spine.vb_b - 12.0
    aorta_r = (11.5 + 0.012 * (z - bif_aorta)) * rng.uniform(0.9, 1.1)
    aorta = (z > bif_aorta) & ((x - aorta_x) ** 2 + (y - aorta_y) ** 2 <= aorta_r**2)
    canvas.take(all_idx[aorta], "aorta")
    ivc_x = -22.0 + rng.normal(0.0, 3.0)
    ivc_y = spine.y_vert - spine.vb_b - 14.0 + 0.08 * np.clip(z, 0.0, None)
    ivc_a, ivc_b = 15.0 * rng.uniform(0.85, 1.15), 9.0 * rng.uniform(0.85, 1.15)
    bif_ivc = bif_aorta - 10.0
    ivc = (z > bif_ivc) & (((x - ivc_x) / ivc_a) ** 2 + ((y - ivc_y) / ivc_b) ** 2 <= 1.0)
    canvas.take(all_idx[ivc], "ivc")
    for side in (-1.0, 1.0):
        spread = np.clip(bif_aorta - z, 0.0, None)
        artery = (z <= bif_aorta) & (
            (x - aorta_x - side * 0.55 * spread) ** 2 + (y - aorta_y + 0.1 * spread) ** 2 <= 7.5**2
        )
        canvas.take(all_idx[artery], "iliac_artery")
        spread_v = np.clip(bif_ivc - z, 0.0, None)
        vein = (z <= bif_ivc) & (
            (x - ivc_x - side * 0.5 * spread_v - 8.0 * (side + 1.0)) ** 2 + (y - ivc_y) ** 2 <= 8.5**2
        )
        canvas.take(all_idx[vein], "iliac_vein")


def _draw_thorax(drawing: _Drawing) -> None:
    """Thorax above the dome-shaped diaphragm: heart anteriorly, lung bases elsewhere."""
    canvas, rng, all_idx = drawing.canvas, drawing.rng, drawing.all_idx
    x, y, z = canvas.x, canvas.y, canvas.z
    dome_r = 124.0 + rng.normal(0.0, 6.0)
    dome_l = dome_r - rng.uniform(4.0, 14.0)
    dome = np.where(x < 0.0, dome_r, dome_l) + 12.0 * np.exp(-((np.abs(x) - 60.0) ** 2) / (2.0 * 45.0**2))
    diaphragm = dome - 12.0 - 0.3 * np.clip(y, 0.0, None) - 0.12 * np.clip(np.abs(x) - 80.0, 0.0, None)
    thorax = canvas.free & (z > diaphragm)
    heart, _ = _superellipsoid(canvas, rng, (12.0, -40.0, 190.0), (75.0, 55.0, 70.0), (0.0, 0.0, 25.0))
    heart_mask = np.zeros_like(thorax)
    heart_mask[heart] = True
    canvas.take(all_idx[thorax & heart_mask], "heart")
    canvas.take(all_idx[thorax], "lung")


def _draw_kidneys(drawing: _Drawing) -> None:
    """Kidneys (retroperitoneal, right one lower), with medulla and a fatty hilum notch."""
    canvas, rng = drawing.canvas, drawing.rng
    for name, sx, zc in (("kidney_right", -1.0, -48.0), ("kidney_left", 1.0, -38.0)):
        center = (sx * 72.0, 42.0, zc)
        outer, rho = _superellipsoid(canvas, rng, center, (27.0, 24.0, 52.0), (-12.0, sx * 12.0, sx * -20.0))
        hilum, _ = _superellipsoid(
            canvas,
            rng,
            (sx * 52.0, 32.0, zc),
            (13.0, 12.0, 20.0),
            jitter_mm=2.0,
            lumpiness=0.02,
        )
        canvas.take(np.intersect1d(outer, hilum), "visceral_fat")
        canvas.take(outer[rho < 0.62], f"{name}_medulla")
        canvas.take(outer, name)


def _draw_gallbladder(drawing: _Drawing) -> None:
    """Gallbladder under the liver (drawn before the liver, so the liver wraps it)."""
    gb, _ = _superellipsoid(
        drawing.canvas, drawing.rng, (-48.0, -42.0, 8.0), (17.0, 19.0, 38.0), (35.0, -15.0, 0.0), lumpiness=0.04
    )
    drawing.canvas.take(gb, "gallbladder")


def _draw_spleen(drawing: _Drawing) -> None:
    """Spleen: a crescent against the left posterolateral wall."""
    canvas, rng = drawing.canvas, drawing.rng
    spleen, _ = _superellipsoid(
        canvas, rng, (92.0, 40.0, 62.0), (26.0, 62.0, 55.0), (10.0, 0.0, 35.0), exponent=2.3, lumpiness=0.05
    )
    notch, _ = _superellipsoid(
        canvas, rng, (55.0, 20.0, 60.0), (32.0, 40.0, 50.0), (0.0, 0.0, 35.0), jitter_mm=3.0, lumpiness=0.03
    )
    spleen_only = np.setdiff1d(spleen, notch, assume_unique=True)
    canvas.take(spleen_only, "spleen")


def _draw_liver(drawing: _Drawing) -> None:
    """Liver: right lobe plus left lobe, with hepatic and portal veins inside."""
    canvas, rng = drawing.canvas, drawing.rng
    right_lobe, _ = _superellipsoid(
        canvas, rng, (-68.0, 5.0, 58.0), (72.0, 80.0, 92.0), (0.0, 0.0, 0.0), lumpiness=0.05, size_jitter=0.06
    )
    left_lobe, _ = _superellipsoid(
        canvas, rng, (12.0, -48.0, 72.0), (68.0, 36.0, 44.0), (0.0, 10.0, -15.0), lumpiness=0.06
    )
    liver = np.union1d(right_lobe, left_lobe)
    liver_taken = canvas.take(liver, "liver")
    liver_mask = np.zeros(canvas.x.size, dtype=bool)
    liver_mask[liver_taken] = True
    confluence = (-20.0, 18.0, 112.0)
    for tip in ((-120.0, -10.0, 70.0), (-40.0, -60.0, 80.0), (40.0, -50.0, 85.0), (-70.0, 40.0, 20.0)):
        vessel, _ = _tube(canvas, rng, (confluence, tip), (6.0, 2.5), jitter_mm=6.0)
        vessel = vessel[liver_mask[vessel]]
        canvas.tissue[vessel] = _T["liver_vessel"]


def _draw_stomach(drawing: _Drawing) -> None:
    """Stomach: a J-shaped tube from the fundus (touching the spleen) to the pylorus; gas above the fluid."""
    canvas, rng = drawing.canvas, drawing.rng
    stomach, depth = _tube(
        canvas,
        rng,
        ((82.0, 25.0, 108.0), (70.0, -15.0, 72.0), (40.0, -45.0, 40.0), (0.0, -50.0, 25.0), (-28.0, -35.0, 22.0)),
        (44.0, 38.0, 28.0, 18.0, 11.0),
        jitter_mm=4.0,
    )
    wall_mm = rng.uniform(3.5, 6.0)
    gas_level = rng.uniform(-45.0, -5.0)
    lumen = depth > wall_mm
    gas = lumen & (canvas.y[stomach] < gas_level)
    canvas.take(stomach[gas], "stomach_gas")
    canvas.take(stomach[lumen & ~gas], "stomach_fluid")
    canvas.take(stomach[~lumen], "stomach_wall")


def _draw_pancreas(drawing: _Drawing) -> None:
    """Pancreas: head by the IVC, body across the aorta, tail into the splenic hilum."""
    pancreas, _ = _tube(
        drawing.canvas,
        drawing.rng,
        (
            (-38.0, -8.0, 2.0),
            (-8.0, -22.0, 10.0),
            (28.0, -14.0, 18.0),
            (58.0, 10.0, 28.0),
            (80.0, 30.0, 40.0),
            (96.0, 40.0, 48.0),  # inside the spleen's envelope: the carved tail always reaches the hilum
        ),
        (18.0, 13.0, 12.0, 11.0, 10.0, 8.0),
        jitter_mm=3.0,
    )
    drawing.canvas.take(pancreas, "pancreas")


def _draw_bowel(drawing: _Drawing) -> None:
    """Colon frame with gas and stool, then small-bowel loops filling the lower abdomen."""
    canvas, rng, all_idx = drawing.canvas, drawing.rng, drawing.all_idx
    colon, colon_depth = _tube(
        canvas,
        rng,
        (
            (-95.0, 0.0, -130.0),
            (-100.0, -5.0, -40.0),
            (-85.0, -45.0, 0.0),
            (0.0, -75.0, -5.0),
            (85.0, -40.0, 15.0),
            (105.0, 10.0, -10.0),
            (95.0, 0.0, -130.0),
        ),
        (24.0, 21.0, 20.0, 20.0, 20.0, 18.0, 17.0),
        jitter_mm=6.0,
    )
    stool = rng.standard_normal(colon.size) > 0.3
    canvas.take(colon[(colon_depth > 3.0) & ~stool], "bowel_gas")
    canvas.take(colon, "bowel")
    loops = ndimage.gaussian_filter(rng.standard_normal(drawing.shape_zyx, dtype=np.float32), 1.6).ravel()
    loop_thr = np.quantile(loops, rng.uniform(0.35, 0.5))
    low = canvas.free & (canvas.z < 30.0 - 0.3 * canvas.y) & (canvas.y < 40.0)
    bowel = low & (loops > loop_thr)
    canvas.take(all_idx[bowel & (loops > loops.std() * 2.2 + loop_thr)], "bowel_gas")
    canvas.take(all_idx[bowel], "bowel")


def _anatomy_coordinates(
    rng: np.random.Generator,
    shape_xyz: tuple[int, int, int],
    spacing: np.ndarray,
    direction: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Warped, scaled LPS coordinates (nominal mm) of every voxel, flat in array order (k, j, i)."""
    extent = np.abs(direction) @ (spacing * np.asarray(shape_xyz))
    s_xy = min(extent[0] / _NOMINAL_FOV_MM[0], extent[1] / _NOMINAL_FOV_MM[1])
    s_z = extent[2] / _NOMINAL_FOV_MM[2]
    axes = [((np.arange(n, dtype=np.float64) - (n - 1) / 2.0) * sp) for n, sp in zip(shape_xyz, spacing, strict=True)]
    i_ax = axes[0][None, None, :]
    j_ax = axes[1][None, :, None]
    k_ax = axes[2][:, None, None]
    scale = (s_xy, s_xy, s_z)
    coords = []
    for row in range(3):
        c = direction[row, 0] * i_ax + direction[row, 1] * j_ax + direction[row, 2] * k_ax
        coords.append((np.broadcast_to(c, (shape_xyz[2], shape_xyz[1], shape_xyz[0])) / scale[row]).ravel())
    px, py, pz = (c.astype(np.float32) for c in coords)
    # Smooth random displacement field: a few random plane waves per component.
    shifted = []
    for p in (px, py, pz):
        disp = np.zeros_like(p)
        for _ in range(3):
            unit = rng.normal(size=3)
            unit /= np.linalg.norm(unit)
            k = (unit * 2.0 * np.pi / rng.uniform(90.0, 220.0)).astype(np.float32)
            amp = np.float32(rng.uniform(2.0, 6.0))
            phase = np.float32(rng.uniform(0.0, 2.0 * np.pi))
            disp += amp * np.sin(k[0] * px + k[1] * py + k[2] * pz + phase)
        shifted.append(p + disp)
    return shifted[0], shifted[1], shifted[2]


def _textures(rng: np.random.Generator, shape_zyx: tuple[int, int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Unit-variance fine and coarse smoothed-noise fields (flat)."""
    fields = []
    for sigma in (0.8, 2.5):
        f = ndimage.gaussian_filter(rng.standard_normal(shape_zyx, dtype=np.float32), sigma)
        f /= f.std()
        fields.append(f.ravel())
    return fields[0], fields[1]


def _intensities(
    rng: np.random.Generator,
    modality: str,
    tissue: np.ndarray,
    shape_zyx: tuple[int, int, int],
    coords: tuple[np.ndarray, np.ndarray, np.ndarray],
) -> np.ndarray:
    """Image array (array order k, j, i) from the tissue map: texture, blur, bias field, noise."""
    n = len(_TISSUES)
    mean = np.zeros(n, dtype=np.float32)
    fine_sd = np.zeros(n, dtype=np.float32)
    coarse_sd = np.zeros(n, dtype=np.float32)
    if modality == "ct":
        phase = int(rng.integers(len(_CT_PHASES)))
        for name, (means, fsd, csd) in _CT_TABLE.items():
            mean[_T[name]], fine_sd[_T[name]], coarse_sd[_T[name]] = means[phase], fsd, csd
        for name in ("vertebra_cortex", "rib"):
            mean[_T[name]] += rng.uniform(-100.0, 100.0)
        mean[_T["vertebra_marrow"]] += rng.uniform(-40.0, 60.0)
        jitter_sd = 3.0
    else:
        bright_blood = int(rng.integers(2))
        for name, (dark, bright, fsd, csd) in _MR_TABLE.items():
            mean[_T[name]] = bright if bright_blood else dark
            fine_sd[_T[name]], coarse_sd[_T[name]] = fsd, csd
        jitter_sd = 20.0
    for names in _JITTERED:
        offset = rng.normal(0.0, jitter_sd)
        for name in names:
            mean[_T[name]] += offset

    fine, coarse = _textures(rng, shape_zyx)
    image = mean[tissue] + fine_sd[tissue] * fine + coarse_sd[tissue] * coarse
    image = ndimage.gaussian_filter(image.reshape(shape_zyx), (0.6, 0.5, 0.5))

    if modality == "ct":
        noise_sd = rng.uniform(10.0, 20.0)
        image += rng.normal(0.0, noise_sd, size=shape_zyx).astype(np.float32)
        return np.clip(np.rint(image), -1024, 3071).astype(np.int16)

    x, y, z = (c.reshape(shape_zyx) for c in coords)
    u, v, w = x / 190.0, y / 160.0, z / 160.0
    coef = rng.normal(0.0, [0.15, 0.15, 0.12, 0.12, 0.12, 0.08])
    log_bias = coef[0] * u + coef[1] * v + coef[2] * w + coef[3] * u * u + coef[4] * v * v + coef[5] * u * v
    image *= np.float32(rng.uniform(0.8, 1.25)) * np.exp(log_bias).astype(np.float32)
    noise_sd = np.float32(rng.uniform(12.0, 30.0))
    real = image + noise_sd * rng.standard_normal(shape_zyx, dtype=np.float32)
    imag = noise_sd * rng.standard_normal(shape_zyx, dtype=np.float32)
    return np.sqrt(real * real + imag * imag).astype(np.float32)


def make_phantom(
    modality: Literal["ct", "mr"],
    seed: int,
    shape_xyz: tuple[int, int, int] = (96, 80, 64),
    spacing_mm: tuple[float, float, float] = (4.0, 4.0, 5.0),
) -> tuple[sitk.Image, sitk.Image]:
    """Draw one synthetic abdominal phantom and its label map.

    Args:
        modality: ``"ct"`` (int16 Hounsfield units) or ``"mr"`` (float32,
            T2-like arbitrary units with a smooth bias field).
        seed: Non-negative integer; the only source of randomness. Even seeds
            give an LPS-identity direction, odd seeds a flipped or permuted one.
        shape_xyz: Image size in voxels along the array axes i, j, k (SimpleITK
            order), each at least :data:`MIN_SHAPE`.
        spacing_mm: Voxel spacing in millimetres along i, j, k; all positive.

    Returns:
        ``(image, label)`` with identical spacing, origin and direction. The
        label is uint8 with the ids of :data:`PHANTOM_LABELS` (0 = background).

    Raises:
        ValueError: If an argument is out of range; the message names it.
    """
    _validate(modality, seed, shape_xyz, spacing_mm)
    shape = (int(shape_xyz[0]), int(shape_xyz[1]), int(shape_xyz[2]))
    shape_zyx = (shape[2], shape[1], shape[0])
    spacing = np.asarray(spacing_mm, dtype=np.float64)
    rng = np.random.default_rng(int(seed))

    direction = _direction(int(seed))
    center = np.round(rng.uniform([-40.0, 120.0, -700.0], [40.0, 220.0, -300.0]) * 2.0) / 2.0
    origin = center - direction @ (spacing * (np.asarray(shape) - 1) / 2.0)

    coords = _anatomy_coordinates(rng, shape, spacing, direction)
    n_vox = coords[0].size
    canvas = _Canvas(*coords, tissue=np.zeros(n_vox, dtype=np.uint8), free=np.zeros(n_vox, dtype=bool))
    _draw_anatomy(canvas, rng, shape_zyx)
    image_arr = _intensities(rng, modality, canvas.tissue, shape_zyx, coords)
    label_arr = _LABEL_OF_TISSUE[canvas.tissue].reshape(shape_zyx)

    image = sitk.GetImageFromArray(image_arr)
    label = sitk.GetImageFromArray(label_arr)
    for img in (image, label):
        img.SetSpacing(tuple(float(s) for s in spacing))
        img.SetOrigin(tuple(float(o) for o in origin))
        img.SetDirection(tuple(float(d) for d in direction.ravel()))
    return image, label


def write_phantom_case(
    image_path: Path,
    label_path: Path,
    modality: Literal["ct", "mr"],
    seed: int,
    shape_xyz: tuple[int, int, int] = (96, 80, 64),
    spacing_mm: tuple[float, float, float] = (4.0, 4.0, 5.0),
) -> None:
    """Draw a phantom with :func:`make_phantom` and write image and label as NIfTI.

    Each file is written to a temporary file in its destination folder and then
    renamed over the destination, so a partial file never appears under the
    final name. Missing parent folders are created.

    Args:
        image_path: Destination of the image; must end in ``.nii.gz``.
        label_path: Destination of the label map; must end in ``.nii.gz`` and
            differ from ``image_path``.
        modality: ``"ct"`` or ``"mr"``.
        seed: Non-negative integer seed.
        shape_xyz: Image size in voxels along i, j, k.
        spacing_mm: Voxel spacing in millimetres along i, j, k.

    Raises:
        ValueError: If a path does not end in ``.nii.gz``, both paths are the
            same, or :func:`make_phantom` rejects an argument.
    """
    image_path, label_path = Path(image_path), Path(label_path)
    for name, p in (("image_path", image_path), ("label_path", label_path)):
        if not p.name.endswith(".nii.gz"):
            raise ValueError(f"{name} must end in .nii.gz, got {str(p)!r}")
    if image_path.resolve() == label_path.resolve():
        raise ValueError(f"image_path and label_path must differ, both are {str(image_path)!r}")
    image, label = make_phantom(modality, seed, shape_xyz, spacing_mm)
    for path, img in ((image_path, image), (label_path, label)):
        with atomic_path(path) as tmp:  # temporary sibling ending in .nii.gz, renamed on success
            sitk.WriteImage(img, str(tmp), useCompression=True)


def phantom_case_ids(n_cases: int, modalities: list[str]) -> list[tuple[str, str, int]]:
    """Case ids, modalities and seeds of a phantom dataset.

    Case ``i`` has modality ``modalities[i % len(modalities)]`` and id
    ``f"{modality}_phantom_{i:03d}"``. Its seed is ``1000 * m + k`` where ``m``
    is the modality's position in ``modalities`` and ``k`` counts the cases of
    that modality so far, so every case has its own anatomy and each modality
    gets both even seeds (LPS identity) and odd seeds (flipped directions).

    Args:
        n_cases: Number of cases, at least 1 and at most 1000 per modality.
        modalities: Distinct modalities out of :data:`MODALITIES`, in the order
            they alternate.

    Returns:
        ``[(case_id, modality, seed), ...]`` of length ``n_cases``.

    Raises:
        ValueError: If ``n_cases`` or ``modalities`` is invalid.
    """
    if not modalities:
        raise ValueError("modalities must name at least one modality")
    unknown = [m for m in modalities if m not in MODALITIES]
    if unknown:
        raise ValueError(f"modalities must be drawn from {MODALITIES}, got unknown {unknown}")
    if len(set(modalities)) != len(modalities):
        raise ValueError(f"modalities must not repeat, got {modalities}")
    if not _is_int(n_cases) or n_cases < 1:
        raise ValueError(f"n_cases must be a positive integer, got {n_cases!r}")
    if n_cases > _SEED_STRIDE * len(modalities):
        raise ValueError(f"n_cases must be at most {_SEED_STRIDE * len(modalities)}, got {n_cases}")
    cases = []
    for i in range(int(n_cases)):
        m = i % len(modalities)
        cases.append((f"{modalities[m]}_phantom_{i:03d}", modalities[m], _SEED_STRIDE * m + i // len(modalities)))
    return cases
