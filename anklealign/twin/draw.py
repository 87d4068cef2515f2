"""Procedural rear view of a lower leg and heel: the pictures of the synthetic twin.

A :class:`Scene` is resolution independent (positions are fractions of the frame) and
:func:`render` evaluates it analytically on the pixel grid with numpy, so a scene can be drawn at
any size and :func:`mirror` is exact: ``render(mirror(s))`` is ``render(s)`` flipped left-right.

The class lives in :attr:`Foot.tilt`, the angle between the heel axis and the leg axis measured
*relative to the foot*: negative = the heel bottom swings laterally (eversion, pronation), positive
= medially (inversion, supination). In a rear view a left foot's lateral side is on the viewer's
left, so the same tilt turns the heel the opposite way on screen for the two feet, and a mirrored
left foot is a right foot with the same tilt and class.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np
from PIL import Image

__all__ = ["NEUTRAL_BAND", "Foot", "Nuisance", "Scene", "heel_angle", "mirror", "random_scene", "render",
           "tilt_class"]

NEUTRAL_BAND = 6.0  # |tilt| <= this many degrees is neutral
RGB = tuple[float, float, float]


def tilt_class(tilt: float) -> int:
    """Class id of a heel tilt: 0 pronation (tilt < -band), 1 neutral, 2 supination (tilt > band)."""
    if tilt < -NEUTRAL_BAND:
        return 0
    return 2 if tilt > NEUTRAL_BAND else 1


@dataclass(frozen=True)
class Foot:
    """One leg and heel seen from behind.

    Attributes:
        side: -1 for a left foot (on the viewer's left), +1 for a right foot.
        tilt: heel axis against leg axis in degrees, relative to the foot (< 0 = pronation).
        x: ankle pivot as a fraction of the frame width.
        y: ankle pivot as a fraction of the frame height.
        size: ankle width as a fraction of the shorter frame side.
        lean: leg axis in image space in degrees; > 0 moves its lower end towards +x.
        skin: skin colour, RGB in [0, 1].
    """

    side: int
    tilt: float
    x: float
    y: float
    size: float
    lean: float
    skin: RGB


@dataclass(frozen=True)
class Scene:
    """Feet in front of a wall, standing on a floor.

    Attributes:
        feet: one or two feet (two = a left and a right foot of the same class).
        wall: wall colour; ``wall2`` is mixed in by the texture.
        floor: floor colour.
        waves: wall texture as ``(cycles per frame, angle in degrees, phase)`` plane waves.
        floor_y: wall/floor boundary as a fraction of the height (measured at the centre).
        floor_angle: slope of that boundary in degrees.
        light_angle: direction of the lighting gradient in degrees.
        light: strength of the lighting gradient (0 = flat light).
        lines: marker-pen bisection lines drawn on leg and heel, as in clinical photos.
        texture: strength of the wall texture (1 = the realistic twin's).
    """

    feet: tuple[Foot, ...]
    wall: RGB
    wall2: RGB
    floor: RGB
    waves: tuple[tuple[float, float, float], ...]
    floor_y: float
    floor_angle: float
    light_angle: float
    light: float
    lines: bool
    texture: float = 1.0


def heel_angle(foot: Foot) -> float:
    """Image-space direction of the heel axis in degrees (same convention as :attr:`Foot.lean`)."""
    # Lateral is -x for a left foot (side -1): eversion (tilt < 0) must turn the heel towards it.
    return foot.lean - foot.side * foot.tilt


def mirror(scene: Scene) -> Scene:
    """The scene flipped left-right; every foot keeps its tilt (and class), sides swap."""
    feet = tuple(replace(f, side=-f.side, x=1.0 - f.x, lean=-f.lean) for f in scene.feet)
    waves = tuple((freq, 180.0 - angle, phase) for freq, angle, phase in scene.waves)
    return replace(scene, feet=feet[::-1], waves=waves, floor_angle=-scene.floor_angle,
                   light_angle=180.0 - scene.light_angle)


def _smin(a: np.ndarray, b: np.ndarray, k: float) -> np.ndarray:
    """Smooth union of two signed distances (blends the joint over about ``k`` pixels)."""
    h = np.clip(0.5 + 0.5 * (b - a) / k, 0.0, 1.0)
    return b + (a - b) * h - k * h * (1.0 - h)


def _cover(sdf: np.ndarray) -> np.ndarray:
    """Anti-aliased coverage in [0, 1] of a signed distance in pixels."""
    return np.clip(0.5 - sdf, 0.0, 1.0)


def _frame(px: np.ndarray, py: np.ndarray, angle: float) -> tuple[np.ndarray, np.ndarray]:
    """Coordinates along an axis pointing 'down' at ``angle`` degrees, and across it (+x at 0)."""
    rad = math.radians(angle)
    s, c = math.sin(rad), math.cos(rad)
    return px * s + py * c, px * c - py * s


def _forefoot(foot: Foot, dx: np.ndarray, dy: np.ndarray, u: float) -> tuple[np.ndarray, np.ndarray]:
    """Pixel offsets from the forefoot centre: it lies flat on the floor behind the heel and
    pronation swings it out laterally (the 'too many toes' sign)."""
    rad = math.radians(foot.lean)
    fx = dx - (1.6 * u * math.sin(rad) + foot.side * u * (0.25 + 0.04 * max(-foot.tilt, -5.0)))
    return fx, dy - 1.6 * u * math.cos(rad)


def _offsets(foot: Foot, gx: np.ndarray, gy: np.ndarray, w: int, h: int) -> tuple[np.ndarray, np.ndarray, float]:
    """Pixel offsets from the foot's ankle pivot, and the ankle width in pixels."""
    u = foot.size * min(w, h)  # ankle width in pixels
    return gx - (foot.x - 0.5) * w, gy - (foot.y - 0.5) * h, u


def _shadow(foot: Foot, gx: np.ndarray, gy: np.ndarray, w: int, h: int) -> np.ndarray:
    """Soft contact shadow of one foot on the floor, (H, W) in [0, 1]."""
    dx, dy, u = _offsets(foot, gx, gy, w, h)
    fx, fy = _forefoot(foot, dx, dy, u)
    return _cover((np.sqrt((fx / (1.6 * u)) ** 2 + ((fy - 0.2 * u) / (0.32 * u)) ** 2) - 1.0) * (0.15 * u))


def _band(foot: Foot, w: int, h: int) -> tuple[slice, slice]:
    """(rows, columns) a foot can touch: drawing only there keeps rendering cheap."""
    u = foot.size * min(w, h)
    reach = 2.8 * u + h * abs(math.tan(math.radians(foot.lean)))
    centre = foot.x * w
    bottom = min(h, math.ceil(foot.y * h + 2.5 * u))  # below the shadow there is only floor
    return slice(0, max(bottom, 1)), slice(max(0, math.floor(centre - reach)), min(w, math.ceil(centre + reach)))


def _draw_foot(img: np.ndarray, foot: Foot, gx: np.ndarray, gy: np.ndarray,
               *, w: int, h: int, lines: bool) -> None:
    """Paint one foot into ``img`` (3, H, W) in place; ``gx`` is (1, W), ``gy`` is (H, 1)."""
    dx, dy, u = _offsets(foot, gx, gy, w, h)
    a, p = _frame(dx, dy, foot.lean)  # (H, W) leg frame; a > 0 below the ankle
    ah, ph = _frame(dx, dy, heel_angle(foot))  # heel frame, pivoting at the ankle
    medial, lateral = -foot.side, foot.side
    ap = np.abs(p)
    half = 0.5 * u * (1.0 + 0.18 * np.clip(-a / (3 * u), 0, 1)
                      + 0.5 * np.exp(-(((a + 3.8 * u) / (1.8 * u)) ** 2)))
    leg = np.maximum(ap - half, a - 0.3 * u)
    heel = (np.sqrt((ph / (0.58 * u)) ** 2 + ((ah - 0.82 * u) / (1.0 * u)) ** 2) - 1.0) * (0.58 * u)
    body = _smin(leg, heel, 0.25 * u)
    for along, across, radius in ((-0.42 * u, medial * 0.47 * u, 0.17 * u),
                                  (-0.18 * u, lateral * 0.5 * u, 0.16 * u)):
        body = _smin(body, np.hypot(a - along, p - across) - radius, 0.12 * u)
    fx, fy = _forefoot(foot, dx, dy, u)
    fore = (np.sqrt((fx / (1.15 * u)) ** 2 + (fy / (0.34 * u)) ** 2) - 1.0) * (0.34 * u)
    # Cylinder shading across whichever part (leg or heel) is nearer, plus the Achilles tendon hollows.
    across = np.where(leg < heel, ap / half, np.abs(ph) / (0.58 * u))
    shade = 0.68 + 0.32 * np.sqrt(np.clip(1.0 - across**2, 0.0, 1.0))
    hollow = np.exp(-(((ap - 0.2 * u) / (0.1 * u)) ** 2)) * np.clip(-a / u, 0, 1) * (a > -3 * u)
    shade *= 1.0 - 0.08 * hollow
    if lines:  # bisection lines of the leg and of the heel, as drawn by a clinician
        ink = np.minimum(np.where((a > -2.6 * u) & (a < -0.05 * u), ap, np.inf),
                         np.where((ah > 0.05 * u) & (ah < 1.7 * u), np.abs(ph), np.inf))
        shade *= 1.0 - 0.75 * _cover(ink - 0.025 * u - 0.5)
    # One blend: body over forefoot over the background (the forefoot is a darker shade of skin).
    mb = _cover(body)
    mf = _cover(fore) * (1.0 - mb)
    tone = mb * shade + mf * 0.74  # (H, W) skin brightness
    keep = 1.0 - mb - mf
    for channel, value in zip(img, foot.skin, strict=True):  # channel-first: long inner loops
        channel *= keep
        channel += tone * value


def render(scene: Scene, width: int, height: int, *, grain: np.ndarray | None = None) -> Image.Image:
    """Draw ``scene`` as an RGB image of ``width`` x ``height`` pixels.

    Args:
        scene: what to draw.
        width: image width in pixels.
        height: image height in pixels.
        grain: optional sensor noise in grey levels, (H, W), added to every channel before quantising.
    """
    if width < 8 or height < 8:
        raise ValueError(f"image size must be at least 8x8, got {width}x{height}")
    w, h = width, height
    # Pixel centres relative to the frame centre: exactly antisymmetric in x, so mirroring is exact.
    gx = (np.arange(w, dtype=np.float32) + 0.5 - w / 2)[None, :]  # (1, W)
    gy = (np.arange(h, dtype=np.float32) + 0.5 - h / 2)[:, None]  # (H, 1)
    m = float(min(w, h))
    tex = np.zeros((h, w), dtype=np.float32)
    for freq, angle, phase in scene.waves:
        rad, k = math.radians(angle), 2 * math.pi * freq / m
        tex += np.sin(gx * (k * math.cos(rad)) + (gy * (k * math.sin(rad)) + phase))
    mix = 0.5 + 0.5 * np.tanh(tex * (1.5 * scene.texture / max(len(scene.waves), 1)))
    below = gy - (scene.floor_y - 0.5) * h - gx * math.tan(math.radians(scene.floor_angle))  # (H, W)
    fm = _cover(-below)
    depth = 0.85 + 0.2 * np.clip(below / (0.5 * h), 0, 1)
    weights = np.stack(((1.0 - fm) * (1.0 - mix), (1.0 - fm) * mix, fm * depth))  # (3 materials, H, W)
    palette = np.asarray((scene.wall, scene.wall2, scene.floor), dtype=np.float32)  # (material, RGB)
    img = (palette.T @ weights.reshape(3, -1)).reshape(3, h, w)  # (RGB, H, W)
    shadow = np.zeros((h, w), dtype=np.float32)
    bands = {foot: _band(foot, w, h) for foot in scene.feet}
    for foot, (rows, cols) in bands.items():
        shadow[rows, cols] = np.maximum(shadow[rows, cols], _shadow(foot, gx[:, cols], gy[rows], w, h))
    for foot in sorted(scene.feet, key=lambda f: f.size):  # the nearer (larger) foot last
        rows, cols = bands[foot]
        _draw_foot(img[:, rows, cols], foot, gx[:, cols], gy[rows], w=w, h=h, lines=scene.lines)
    # Lighting gradient and contact shadow (which also darkens the heel's base: ambient occlusion).
    rad = math.radians(scene.light_angle)
    light = np.clip(1.0 + (gx * math.cos(rad) + gy * math.sin(rad)) * (scene.light / m), 0.3, 1.7)
    gain = light * (1.0 - 0.45 * shadow * fm) * 255.0
    channels = []
    for channel in img:
        channel *= gain
        if grain is not None:
            channel += grain
        channels.append(Image.fromarray(np.clip(channel, 0.0, 255.0).astype(np.uint8)))  # mode L
    return Image.merge("RGB", channels)


@dataclass(frozen=True)
class Nuisance:
    """Strength of the variation that carries no class (the defaults: the original twin's)."""

    foot_scale: float = 1.0
    lean: float = 1.5
    light: float = 0.6
    texture: float = 1.0
    lines: float = 0.5


_SKINS = ((0.96, 0.80, 0.70), (0.86, 0.64, 0.52), (0.66, 0.46, 0.34), (0.42, 0.28, 0.20))
_WALLS = ((0.93, 0.93, 0.91), (0.85, 0.82, 0.76), (0.70, 0.72, 0.75), (0.78, 0.84, 0.90),
          (0.55, 0.60, 0.52), (0.35, 0.36, 0.40), (0.90, 0.80, 0.78))
_FLOORS = ((0.55, 0.40, 0.26), (0.70, 0.58, 0.42), (0.60, 0.60, 0.62), (0.30, 0.30, 0.32), (0.82, 0.80, 0.76))


def _pick(rng: np.random.Generator, colours: tuple[RGB, ...], jitter: float) -> RGB:
    base = np.asarray(colours[rng.integers(len(colours))]) + rng.normal(0.0, jitter, 3)
    r, g, b = (float(v) for v in np.clip(base, 0.02, 0.98))
    return r, g, b


def random_scene(rng: np.random.Generator, *, tilt: float, feet: int, aspect: float,
                 nuisance: Nuisance = Nuisance()) -> Scene:
    """A random scene whose heel tilt is ``tilt``: only the tilt carries the class.

    Args:
        rng: the random source (the scene is a pure function of its state).
        tilt: the heel tilt drawn, in degrees (both feet of a two-foot scene show it).
        feet: 1 or 2.
        aspect: width / height of the frame the scene will be drawn in.
        nuisance: how strong the variation that carries no class is (pose, light, texture, lines).
    """
    if feet not in (1, 2):
        raise ValueError(f"feet must be 1 or 2, got {feet}")
    if aspect <= 0:
        raise ValueError(f"aspect must be positive, got {aspect}")
    short = min(aspect, 1.0)  # the shorter frame side in units of the height
    skin = _pick(rng, _SKINS, 0.04)
    if feet == 1:
        size = float(min(rng.uniform(0.15, 0.24) * nuisance.foot_scale, 0.34))
        spots = [(float(rng.choice((-1, 1))), 0.5 + float(rng.uniform(-0.12, 0.12)))]
    else:
        size = float(min(rng.uniform(0.10, 0.15) * nuisance.foot_scale, 0.17 * aspect / short, 0.2))
        gap = float(rng.uniform(1.4, 1.9)) * size * short / aspect  # centre offset, fraction of width
        centre = 0.5 + float(rng.uniform(-0.05, 0.05))
        spots = [(-1.0, centre - gap), (1.0, centre + gap)]
    u = size * short  # ankle width in units of the height
    y = float(min(rng.uniform(0.3, 0.55), 0.96 - 1.95 * u))
    lean = float(rng.normal(0.0, nuisance.lean))
    feet_out = []
    for side, x in spots:
        grow = 1.0 + (0.04 * float(rng.uniform(-1, 1)) if feet == 2 else 0.0)
        limit = 3.3 * max(nuisance.lean, 1.5)
        feet_out.append(Foot(side=int(side), tilt=tilt, x=x, y=y + float(rng.normal(0, 0.01)), size=size * grow,
                             lean=float(np.clip(lean * -side + rng.normal(0.0, nuisance.lean / 1.5), -limit, limit)),
                             skin=skin))
    texture = int(rng.integers(4))  # plain, stripes, checks, blobs
    angle = float(rng.choice((0.0, 90.0))) + float(rng.normal(0, 3))
    waves: tuple[tuple[float, float, float], ...] = (
        (),
        ((float(rng.uniform(2, 12)), angle, float(rng.uniform(0, 6.3))),),
        tuple((float(rng.uniform(4, 10)), angle + k * 90.0, float(rng.uniform(0, 6.3))) for k in range(2)),
        tuple((float(rng.uniform(0.5, 2.0)), float(rng.uniform(0, 360)), float(rng.uniform(0, 6.3)))
              for _ in range(3)),
    )[texture]
    wall = _pick(rng, _WALLS, 0.05)
    wall2 = tuple(float(np.clip(c + rng.normal(0.0, 0.08), 0.02, 0.98)) for c in wall)
    heel_bottom = y + 1.85 * u
    return Scene(feet=tuple(feet_out), wall=wall, wall2=(wall2[0], wall2[1], wall2[2]),
                 floor=_pick(rng, _FLOORS, 0.05), waves=waves,
                 floor_y=float(np.clip(heel_bottom - rng.uniform(0.02, 0.25), 0.25, 0.97)),
                 floor_angle=float(rng.normal(0.0, 1.5)), light_angle=float(rng.uniform(0, 360)),
                 light=float(rng.uniform(0.0, nuisance.light)), lines=bool(rng.random() < nuisance.lines),
                 texture=nuisance.texture)
