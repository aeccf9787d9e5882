"""Drawing the synthetic chest X-rays: a thorax whose findings are visible, in numpy.

Body coordinates: ``u`` runs across the image (image left = patient right on the frontal view;
anterior on the lateral) and ``v`` down, both about [-1, 1]. Each finding of
:func:`examples.rrg.synthetic.sample_findings` changes the drawing: a wider heart, a basal fluid
level, dense or hazy patches, a lucent rim with a pleural line, a nodule, tubes and a pacemaker.
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from examples.rrg.data import NUM_VIEWS

if TYPE_CHECKING:
    from examples.rrg.synthetic import Finding

# --------------------------------------------------------------------------------------------------
# Images: body coordinates u (image left = patient right; lateral: anterior) and v (down), ~[-1, 1]
# --------------------------------------------------------------------------------------------------

#: Per view: body ellipse, lung super-ellipses, heart ellipse, hila, device paths, pacemaker box.
_GEOMETRY: tuple[dict[str, Any], ...] = (
    {"body": (0.0, 0.15, 0.92, 1.25), "heart": (0.08, 0.2, 0.3, 0.25), "hila": (-0.25, 0.25),
     "lungs": {"right": (-0.42, -0.08, 0.32, 0.62), "left": (0.42, -0.08, 0.32, 0.62)},
     "box": (0.55, -0.62), "devices": {
         "endotracheal tube": ((0, -1.1), (0, -0.42)),
         "nasogastric tube": ((0, -1.1), (0, 0.0), (0.05, 0.4), (0.2, 0.6), (0.35, 0.62)),
         "central venous catheter": ((-0.3, -1.1), (-0.15, -0.6), (-0.06, -0.35), (-0.05, -0.12)),
         "pacemaker": ((0.5, -0.58), (0.25, -0.45), (0.0, -0.1), (-0.05, 0.2), (0.1, 0.38))}},
    {"body": (0.0, 0.12, 0.78, 1.22), "heart": (-0.25, 0.26, 0.3, 0.25), "hila": (0.05,),
     "lungs": {"both": (0.05, -0.08, 0.58, 0.66)}, "box": (-0.55, -0.6), "devices": {
         "endotracheal tube": ((0.15, -1.1), (0.12, -0.45)),
         "nasogastric tube": ((0.22, -1.1), (0.18, 0.0), (0.05, 0.45), (-0.1, 0.6)),
         "central venous catheter": ((0.0, -1.1), (0.02, -0.5), (-0.05, -0.15)),
         "pacemaker": ((-0.5, -0.55), (-0.3, -0.2), (-0.2, 0.3))}},
)  # fmt: skip
_LEVEL_Y = {"upper": -0.38, "middle": 0.02, "lower": 0.25}
_SIGN = {"right": -1.0, "left": 1.0}
_HEART_SCALE = {"mild": 1.2, "moderate": 1.35, "marked": 1.5}


def _uniform(rng: np.random.Generator, low: float, high: float) -> float:
    return float(rng.uniform(low, high))


@functools.lru_cache(maxsize=8)
def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    c = ((np.arange(size) + 0.5) / size * 2 - 1).astype(np.float32)
    return np.meshgrid(c, c)


@functools.lru_cache(maxsize=8)
def _upsampler(size: int, cells: int = 8) -> np.ndarray:
    pos = (np.arange(size) + 0.5) / size * (cells - 1)
    lo = np.minimum(pos.astype(int), cells - 2)
    m = np.zeros((size, cells), np.float32)
    m[np.arange(size), lo], m[np.arange(size), lo + 1] = 1 - (pos - lo), pos - lo
    return m


def _smooth_noise(rng: np.random.Generator, size: int) -> np.ndarray:
    m = _upsampler(size)
    return m @ rng.standard_normal((m.shape[1],) * 2, dtype=np.float32) @ m.T


def _inside(d: np.ndarray, width: float) -> np.ndarray:
    """Soft indicator of ``d < 0``, ramping over ``width``."""
    return np.clip(0.5 - d / width, 0.0, 1.0)


def _ellipse(u, v, cx: float, cy: float, rx: float, ry: float, *, cubic: bool = False):
    """``|x|^p + |y|^p`` in the ellipse's frame, ``p`` 2 or 3 (a squarer super-ellipse)."""
    a, b = np.abs((u - cx) / rx), np.abs((v - cy) / ry)
    return a * a * a + b * b * b if cubic else a * a + b * b


def _blob(u, v, cx: float, cy: float, sigma: float) -> np.ndarray:
    return np.exp(-((u - cx) ** 2 + (v - cy) ** 2) / (2 * sigma**2))


def _polyline(u, v, points: Sequence[tuple[float, float]], hw: float) -> np.ndarray:
    """A line of half-width ``hw`` through ``points``, peak 1."""
    dist = np.full(u.shape, np.inf, np.float32)
    for (x0, y0), (x1, y1) in itertools.pairwise(points):
        dx, dy = x1 - x0, y1 - y0
        t = np.clip(((u - x0) * dx + (v - y0) * dy) / (dx * dx + dy * dy), 0, 1)
        dist = np.minimum(dist, np.hypot(u - x0 - t * dx, v - y0 - t * dy))
    return np.clip(1 - dist / hw, 0, 1)


def _view(f: Mapping[str, Finding], size: int, rng: np.random.Generator, lateral: bool):
    """One uint8 view: tissue, lungs (air), heart, bones, findings, devices, exposure and noise."""
    g = _GEOMETRY[lateral]
    x, y = _grid(size)
    scale, dx, dy = _uniform(rng, 0.9, 1.05), _uniform(rng, -0.05, 0.05), _uniform(rng, -0.05, 0.05)
    u, v, px = (x - dx) / scale, (y - dy) / scale, 2 / (size * scale)
    if lateral:
        dome = 0.38 + 0.15 * u + 0.1 * u**2
        bone = _inside(np.abs(u - 0.62) - 0.09, 0.03) * (0.6 + 0.4 * np.cos(12 * np.pi * v))
        bone += 0.5 * _inside(np.abs(u + 0.66) - 0.03, px)  # spine, sternum
    else:
        dome = 0.42 + 0.12 * ((np.abs(u) - 0.42) / 0.32) ** 2 + 0.02 * (1 + np.sign(u))
        bone = _ribs(f, u, v, px, rng) + 0.5 * _inside(np.abs(u) - 0.06, px)
        bone += _inside(np.abs(v + 0.72 - 0.2 * (np.abs(u) - 0.3) ** 2) - 0.03, px) * (
            np.abs(u) < 0.6
        )
    below = _inside(dome - v, 0.04)
    body = _inside(_ellipse(u, v, *g["body"]) - 1, 0.08)
    lungs = {s: _inside(_ellipse(u, v, *e, cubic=True) - 1, 0.08) * (1 - below)
             for s, e in g["lungs"].items()}  # fmt: skip
    c = f.get("Cardiomegaly")
    k = (1 + (_HEART_SCALE[c.size] - 1) * c.strength if c else 1) * _uniform(rng, 0.95, 1.05)
    cx, cy, rx, ry = g["heart"]
    heart = _inside(_ellipse(u, v, cx, cy, rx * k, ry * math.sqrt(k)) - 1, 0.1)
    wide = 0.11 * (1.7 if "Enlarged Cardiomediastinum" in f else 1)
    mediastinum = 0 if lateral else _inside(np.abs(u) - wide, 0.03) * _inside(v - 0.25, 0.05)
    air = sum(lungs.values()) * (1 - heart) * (1 - mediastinum)
    air = _pleural(f, u, v, px, lungs, air, dome)
    air, dense = _parenchyma(f, u, v, px, air, rng, g)
    ptx, line = (0, 0) if lateral else _pneumothorax(f.get("Pneumothorax"), u, v, px, lungs)
    hila = sum(_blob(u, v, h, 0.0, 0.16) for h in g["hila"])
    markings = (0.05 * _smooth_noise(rng, size) + 0.1 * hila) * (1 - ptx)
    img = body * (0.3 + 0.1 * below + 0.12 * bone) + 0.12 * heart + 0.2 * mediastinum
    img = img + air * (markings - 0.24) - 0.07 * ptx + 0.12 * line + 0.25 * dense
    if "Support Devices" in f:
        img = img + 0.6 * _device_image(f["Support Devices"].sites, u, v, px, rng, g)
    gain, offset, gamma = (_uniform(rng, *r) for r in ((0.9, 1.25), (-0.03, 0.06), (0.8, 1.25)))
    img = np.clip(img * gain + offset, 0, 1) ** gamma
    img = img + _uniform(rng, 0.01, 0.03) * rng.standard_normal(img.shape, dtype=np.float32)
    return np.round(np.clip(img, 0, 1) * 255).astype(np.uint8)


def _ribs(f: Mapping[str, Finding], u, v, px: float, rng: np.random.Generator) -> np.ndarray:
    """Posterior rib stripes; a fracture shifts one stretch of a rib and leaves a lucent gap."""
    rib, gap = v - 0.3 * np.abs(u) + 0.3 * u**2, 0.0
    if "Fracture" in f:
        fx = f["Fracture"]
        g = _SIGN[fx.sites[0]]
        uf, vf = g * _uniform(rng, 0.45, 0.65), _uniform(rng, -0.45, 0.1)
        near = (np.abs(v - vf) < 0.12) & (np.abs(u - uf) < 0.2)
        rib = rib + 0.07 * fx.strength * (near & ((u - uf) * g > 0)).astype(np.float32)
        gap = (near & (np.abs(u - uf) < max(0.015, px))).astype(np.float32)
    stripes = np.clip(2.5 * (np.cos(2 * np.pi * 5.5 * rib) - 0.5), 0, 1) * (1 - gap)
    return stripes * _inside(np.abs(u) - 0.82, 0.05) * _inside(v - 0.45, 0.05)


def _pleural(f, u, v, px: float, lungs: dict, air: np.ndarray, dome: np.ndarray) -> np.ndarray:
    """Effusions (fluid with a lateral, or posterior, meniscus); apical pleural thickening."""
    if "Pleural Effusion" in f:
        e = f["Pleural Effusion"]
        height = {"small": 0.1, "moderate": 0.25, "large": 0.42}[e.size] * e.strength
        for side, lung in lungs.items():
            if side == "both":  # lateral: the posterior costophrenic sulcus fills first
                rise, level = 0.15 * np.clip(u, 0, 1), height * (0.8 + 0.3 * len(e.sites))
            elif side in e.sites:
                rise, level = 0.12 * np.clip((_SIGN[side] * u - 0.15) / 0.5, 0, 1), height
            else:
                continue
            air = air * (1 - lung * _inside(dome - level - rise - v, 0.04))
    if "Pleural Other" in f and "both" not in lungs:
        p = f["Pleural Other"]
        cap = _ellipse(u, v, *_GEOMETRY[0]["lungs"][p.sites[0]], cubic=True) > 0.7
        air = air * (1 - 0.7 * p.strength * lungs[p.sites[0]] * cap * _inside(v + 0.4, px))
    return air


def _pneumothorax(p: Finding | None, u, v, px: float, lungs: dict) -> tuple:
    """A lucent rim without lung markings around the collapsed lung, and its pleural line."""
    if p is None:
        return 0, 0
    g, c = _SIGN[p.sites[0]], 1 - {"small": 0.15, "moderate": 0.3}[p.size] * p.strength
    r = np.sqrt(_ellipse(u, v, g * 0.35, 0.02, 0.32 * c, 0.62 * c))
    upper = lungs[p.sites[0]] * _inside(v - 0.25, 0.1)
    return upper * _inside(1 - r, 0.05), upper * _inside(np.abs(r - 1) * 0.3 * c - 0.01, px)


def _parenchyma(f, u, v, px: float, air, rng: np.random.Generator, g: dict) -> tuple:
    """Consolidation, opacity, pneumonia, edema, atelectasis, nodules: air lost, density added."""
    lateral, dense = "both" in g["lungs"], np.zeros_like(u)

    def center(zone: str) -> tuple[float, float]:
        side, level = zone.split()
        cx = _uniform(rng, -0.3, 0.35) if lateral else _SIGN[side] * _uniform(rng, 0.3, 0.48)
        return cx, _LEVEL_Y[level] + _uniform(rng, -0.06, 0.06)

    for obs, sigma, amount in (("Consolidation", 0.11, 0.9), ("Lung Opacity", 0.16, 0.55),
                               ("Pneumonia", 0.12, 0.85)):  # fmt: skip
        if obs in f and not (obs == "Pneumonia" and "Consolidation" in f):
            patch = _blob(u, v, *center(f[obs].sites[0]), sigma)
            patch = np.clip(1.6 * patch * (1 + 0.3 * _smooth_noise(rng, u.shape[0])), 0, 1)
            air = air * (1 - amount * f[obs].strength * patch)
    if "Edema" in f:
        e = f["Edema"]
        haze = np.minimum(sum(_blob(u, v, h, 0.0, 0.2) for h in g["hila"]), 1)
        air = air * (1 - {"mild": 0.45, "moderate": 0.65}[e.size] * e.strength * haze)
    if "Atelectasis" in f:
        a = f["Atelectasis"]
        for side in a.sites:
            cx, tilt, half = (0.0, 0.1, 0.35) if lateral else (_SIGN[side] * 0.42, 0.15, 0.2)
            d = np.abs(v - _uniform(rng, 0.18, 0.3) - tilt * _SIGN[side] * (u - cx))
            band = _inside(d - max(0.02, 0.6 * px), px) * _inside(np.abs(u - cx) - half, 0.05)
            air = air * (1 - 0.9 * a.strength * band)
    if "Lung Lesion" in f:
        n = f["Lung Lesion"]
        cx, cy = center(n.sites[0])
        disk = _inside(np.hypot(u - cx, v - cy) - (0.09 if n.size == "mass" else 0.045), px)
        air, dense = air * (1 - 0.9 * n.strength * disk), dense + 0.2 * n.strength * disk
    return air, dense


def _device_image(devices: Sequence[str], u, v, px: float, rng: np.random.Generator, g: dict):
    """Radio-opaque tubes and lines, and a pacemaker's generator box; peak 1."""
    out, hw = np.zeros_like(u), max(0.014, 0.7 * px)
    for device in devices:
        du, dv = _uniform(rng, -0.03, 0.03), _uniform(rng, -0.03, 0.03)
        out = np.maximum(out, _polyline(u - du, v - dv, g["devices"][device], hw))
        if device == "pacemaker":
            box = np.maximum(
                np.abs(u - du - g["box"][0]) / 0.09, np.abs(v - dv - g["box"][1]) / 0.06
            )
            out = np.maximum(out, _inside(box - 1, 0.15))
    return out


def render_views(
    findings: Mapping[str, Finding], rng: np.random.Generator, *, layout: str, image_size: int
) -> list[np.ndarray]:
    """The study's uint8 ``(image_size, image_size)`` views: frontal (+ lateral for iu_xray)."""
    return [_view(findings, image_size, rng, lateral=bool(k)) for k in range(NUM_VIEWS[layout])]
