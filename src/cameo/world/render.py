"""A vectorised 2-D renderer for world people: soft-edged shapes painted back to front.

Every shape is an implicit function over the pixel grid, anti-aliased with a one-pixel ramp,
so a frame needs no rasteriser and all frames of a clip render in one batch of tensor ops.

Coordinates: the canvas spans y in [-1, 1] (top to bottom) and x in [-W/H, W/H]. Each person
is drawn in head units (u, v): origin at the face centre, rotated by the head roll and divided
by the head scale, so the face ellipse is about 0.34 x 0.44 whatever the zoom.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from .traits import Identity, Motion, Scene

Tensor = torch.Tensor
_WHITE = (0.96, 0.96, 0.95)


@dataclass(frozen=True)
class Figure:
    """One person placed in a clip: who they are, their own scene (clothes, pose, action),
    their motion, and the horizontal centre of their slot on the canvas."""

    identity: Identity
    scene: Scene
    motion: Motion
    slot_x: float = 0.0
    scale: float = 1.25


def _col(rgb, like: Tensor) -> Tensor:
    return torch.as_tensor(rgb, dtype=like.dtype, device=like.device)


def _ramp(d: Tensor, aa: Tensor | float) -> Tensor:
    """Coverage of a shape from its signed distance ``d`` (negative inside): a 1-px ramp."""
    return (0.5 - d / aa).clamp(0.0, 1.0)


def _ellipse_d(u: Tensor, v: Tensor, cu, cv, ru, rv, angle: float = 0.0) -> Tensor:
    """First-order signed distance to an ellipse (exact on the boundary's normal direction)."""
    du, dv = u - cu, v - cv
    if angle:
        c, s = math.cos(angle), math.sin(angle)
        du, dv = c * du + s * dv, -s * du + c * dv
    ru = torch.as_tensor(ru).clamp_min(1e-4) if isinstance(ru, Tensor) else max(ru, 1e-4)
    rv = torch.as_tensor(rv).clamp_min(1e-4) if isinstance(rv, Tensor) else max(rv, 1e-4)
    f = torch.sqrt((du / ru) ** 2 + (dv / rv) ** 2 + 1e-12)
    grad = torch.sqrt((du / ru**2) ** 2 + (dv / rv**2) ** 2 + 1e-12) / f
    return (f - 1.0) / grad.clamp_min(1e-3)


def _superellipse_d(u: Tensor, v: Tensor, cu, cv, ru, rv, p: float) -> Tensor:
    f = ((u - cu).abs() / ru) ** p + ((v - cv).abs() / rv) ** p
    return (
        (f.clamp_min(1e-12) ** (1.0 / p) - 1.0) * min(ru, rv)
        if not isinstance(ru, Tensor)
        else (f.clamp_min(1e-12) ** (1.0 / p) - 1.0)
        * torch.minimum(torch.as_tensor(ru), torch.as_tensor(rv))
    )


def _paint(img: Tensor, alpha: Tensor, colour: Tensor) -> None:
    """img (F, H, W, 3) <- alpha (F, H, W) over colour (3,) or (F, H, W, 3), in place."""
    img.lerp_(colour.expand_as(img) if colour.dim() == 1 else colour, alpha.unsqueeze(-1))


def _frame_param(values: list[float], like: Tensor) -> Tensor:
    return torch.tensor(values, dtype=like.dtype, device=like.device).view(-1, 1, 1)  # (F, 1, 1)


def _background(x: Tensor, y: Tensor, scene: Scene, frames: int) -> Tensor:
    base = _col(scene.background, x)
    img = base.expand(frames, *x.shape[-2:], 3).clone()  # (F, H, W, 3)
    pat = scene.background_pattern
    if pat == "striped":
        band = (torch.sin(x * 9.0) * 3).clamp(-0.5, 0.5) + 0.5
        _paint(img, 0.35 * band.expand(frames, -1, -1), base * 0.7)
    elif pat == "dotted":
        d = (
            torch.sqrt((torch.remainder(x, 0.4) - 0.2) ** 2 + (torch.remainder(y, 0.4) - 0.2) ** 2)
            - 0.06
        )
        _paint(img, 0.6 * _ramp(d, 2.0 / x.shape[-2]).expand(frames, -1, -1), base * 0.6 + 0.4)
    elif pat == "checked":
        chk = (torch.sin(x * 6.0) * torch.sin(y * 6.0) * 4).clamp(-0.5, 0.5) + 0.5
        _paint(img, 0.3 * chk.expand(frames, -1, -1), base * 0.65)
    elif pat == "room":
        aa = 2.0 / x.shape[-2]
        floor = _ramp(0.6 - y, aa).expand(frames, -1, -1)
        _paint(img, floor, _col((0.46, 0.33, 0.22), x))
        width = x.shape[-1] / x.shape[-2]
        win = _superellipse_d(x, y, -0.7 * width, -0.45, 0.22, 0.2, 8.0)
        _paint(img, _ramp(win - 0.02, aa).expand(frames, -1, -1), _col(_WHITE, x))
        _paint(img, _ramp(win + 0.02, aa).expand(frames, -1, -1), _col((0.72, 0.86, 1.0), x))
    return img


def _body(img, u, v, aa, ident: Identity, scene: Scene) -> None:
    neck = _ellipse_d(u, v, 0.0, 0.45, 0.12, 0.2)
    _paint(img, _ramp(neck, aa), _col(ident.skin, u) * 0.88)
    torso = _ellipse_d(u, v, 0.0, 1.0, 0.66, 0.48)
    cloth = _col(scene.clothing, u)
    _paint(img, _ramp(torso, aa), cloth)
    if scene.clothing_pattern == "striped":
        band = (torch.sin(v * 45.0) * 3).clamp(-0.5, 0.5) + 0.5
        _paint(img, _ramp(torso, aa) * band * 0.6, cloth * 0.55)
    elif scene.clothing_pattern == "dotted":
        dots = torch.sqrt(
            (torch.remainder(u, 0.14) - 0.07) ** 2 + (torch.remainder(v, 0.14) - 0.07) ** 2
        )
        _paint(img, _ramp(torso, aa) * _ramp(dots - 0.025, aa), cloth * 0.5 + 0.5)


def _hair_back(img, u, v, aa, ident: Identity, fw: float) -> None:
    hair = _col(ident.hair, u)
    style = ident.hair_style
    if style == "long":
        d = _ellipse_d(u, v, 0.0, 0.12, fw + 0.11, 0.66)
        _paint(img, _ramp(d, aa) * _ramp(v - 0.62, aa), hair * 0.9)
    elif style == "bob":
        d = _ellipse_d(u, v, 0.0, -0.02, fw + 0.09, 0.5)
        _paint(img, _ramp(d, aa) * _ramp(v - 0.28, aa), hair * 0.9)
    elif style == "ponytail":
        _paint(img, _ramp(_ellipse_d(u, v, fw + 0.07, 0.02, 0.07, 0.2, 0.35), aa), hair * 0.85)
    elif style == "curly":
        theta = torch.atan2(v + 0.05, u)
        bumps = 0.03 * torch.sin(theta * 11.0)
        d = _ellipse_d(u, v, 0.0, -0.05, fw + 0.1, 0.5) - bumps
        _paint(img, _ramp(d, aa) * _ramp(v - 0.12, aa), hair * 0.9)


def _face(img, u, v, aa, ident: Identity, fw: float, fh: float) -> Tensor:
    """Paints ears and the face; returns the face coverage (F, H, W) for later clipping."""
    skin = _col(ident.skin, u)
    for side in (-1.0, 1.0):
        ear = _ellipse_d(u, v, side * fw * 0.97, -0.02, 0.06 * ident.ear_size, 0.1 * ident.ear_size)
        _paint(img, _ramp(ear, aa), skin * 0.93)
    upper = _ellipse_d(u, v, 0.0, 0.0, fw, fh)
    lower = _superellipse_d(u, v, 0.0, 0.0, fw, fh * (1.0 + ident.chin), ident.jaw)
    d = torch.where(v < 0, upper, lower)
    face = _ramp(d, aa)
    _paint(img, face, skin)
    return face


def _feature_shift(yaw: Tensor, pitch: Tensor, fw: float, fh: float, depth: float):
    """Turning the head slides features sideways and nodding slides them vertically, more so
    for features that stand out further (the nose) than for flatter ones (eyes, mouth)."""
    return torch.sin(yaw) * fw * depth, torch.sin(pitch) * fh * depth * 0.6


def _marks(img, u, v, aa, ident: Identity, fw, fh, su, sv, face) -> None:
    skin = _col(ident.skin, u)
    if ident.freckles:
        for side in (-1.0, 1.0):
            for du, dv in ((0.13, 0.02), (0.17, 0.05), (0.1, 0.06), (0.2, 0.0), (0.15, 0.09)):
                d = _ellipse_d(u, v, side * du + su, dv + sv, 0.014, 0.014)
                _paint(img, 0.8 * _ramp(d, aa) * face, skin * 0.7)
    if ident.mole is not None:
        mu, mv = ident.mole
        d = _ellipse_d(u, v, mu * fw * 0.8 + su, mv * fh * 0.8 + sv, 0.02, 0.02)
        _paint(img, _ramp(d, aa) * face, _col((0.22, 0.13, 0.09), u))
    if ident.scar:
        d = _ellipse_d(u, v, 0.17 + su, 0.04 + sv, 0.075, 0.011, 0.9)
        _paint(img, _ramp(d, aa) * face, skin * _col((1.12, 0.72, 0.72), u))


def _facial_hair(img, u, v, aa, ident: Identity, mu, mv, face) -> None:
    hair = _col(ident.hair, u)
    kind = ident.facial_hair
    if kind in ("beard", "stubble"):
        region = face * _ramp(mv - 0.1 - v, aa * 2)  # lower face below the cheekbones
        _paint(
            img,
            region * (0.95 if kind == "beard" else 0.35),
            hair * (0.9 if kind == "beard" else 0.6),
        )
    if kind == "goatee":
        _paint(img, _ramp(_ellipse_d(u, v, mu, mv + 0.09, 0.06, 0.065), aa) * face, hair * 0.9)


def _mouth(img, u, v, aa, ident: Identity, mu, mv, open_: Tensor, expression: str) -> None:
    bend = {"smiling": 3.2, "surprised": 0.0, "neutral": 0.6}[expression]
    vv = v - mv + bend * (u - mu) ** 2  # bending the mouth line lifts the corners
    rx = 0.095 * ident.mouth_width * (0.8 if expression == "surprised" else 1.0)
    gap = 0.085 * open_ + (0.04 if expression == "surprised" else 0.0)
    lips = _ellipse_d(u, vv, mu, 0.0, rx, 0.024 * ident.lip_thickness + gap * 0.5)
    _paint(img, _ramp(lips, aa), _col(ident.lip, u))
    inner = _ellipse_d(u, vv, mu, 0.0, rx * 0.8, gap * 0.5 + 1e-3)
    inside = _ramp(inner, aa) * (gap > 0.004).float()
    _paint(img, inside, _col((0.22, 0.05, 0.07), u))
    teeth = _ellipse_d(u, vv, mu, -gap * 0.3, rx * 0.6, gap * 0.22 + 1e-3)
    _paint(img, inside * _ramp(teeth, aa), _col(_WHITE, u))
    line = _ellipse_d(u, vv, mu, 0.0, rx * 0.95, 0.005)
    _paint(img, 0.6 * _ramp(line, aa) * (gap <= 0.004).float(), _col(ident.lip, u) * 0.55)


def _eyes(img, u, v, aa, ident: Identity, fw, fh, yaw, pitch, eye_open, expression) -> list:
    centres = []
    su, sv = _feature_shift(yaw, pitch, fw, fh, 0.55)
    wide = 1.25 if expression == "surprised" else (0.85 if expression == "smiling" else 1.0)
    for side in (-1.0, 1.0):
        cu = side * 0.135 * ident.eye_spacing * fw / 0.34 + su
        cv = ident.eye_height * fh / 0.44 + sv
        squash = 1.0 - 0.4 * side * torch.sin(yaw)  # the eye on the far side of a turn narrows
        rx = 0.062 * ident.eye_size * squash
        ry = 0.062 * ident.eye_size * ident.eye_shape * eye_open * wide
        white = _ramp(_ellipse_d(u, v, cu, cv, rx, ry), aa)
        _paint(img, white, _col(_WHITE, u))
        iris_r = 0.036 * ident.eye_size
        iris = _ramp(_ellipse_d(u, v, cu, cv, iris_r * squash, iris_r), aa) * white
        _paint(img, iris, _col(ident.eye, u))
        pupil = _ramp(_ellipse_d(u, v, cu, cv, iris_r * 0.45 * squash, iris_r * 0.45), aa) * white
        _paint(img, pupil, _col((0.03, 0.03, 0.03), u))
        centres.append((cu, cv, side))
    return centres


def _brows(img, u, v, aa, ident: Identity, centres, expression) -> None:
    colour = (
        _col(ident.hair, u) * 0.75
        if ident.hair_style not in ("bald",)
        else _col((0.3, 0.2, 0.15), u)
    )
    raise_ = 0.035 if expression == "surprised" else 0.0
    for cu, cv, side in centres:
        d = _ellipse_d(
            u,
            v,
            cu,
            cv - 0.085 - raise_,
            0.075,
            0.014 * ident.brow_thickness,
            ident.brow_tilt * side,
        )
        _paint(img, _ramp(d, aa), colour)


def _nose(img, u, v, aa, ident: Identity, fw, fh, yaw, pitch) -> None:
    su, sv = _feature_shift(yaw, pitch, fw, fh, 0.85)
    skin = _col(ident.skin, u)
    cv = ident.eye_height * fh / 0.44 + 0.11 * ident.nose_length + sv
    ridge = _ellipse_d(u, v, su, cv, 0.028 * ident.nose_width, 0.075 * ident.nose_length)
    _paint(img, 0.7 * _ramp(ridge, aa), skin * 0.86)
    base = _ellipse_d(u, v, su, cv + 0.065 * ident.nose_length, 0.048 * ident.nose_width, 0.02)
    _paint(img, _ramp(base, aa), skin * 0.72)


def _hair_front(img, u, v, aa, ident: Identity, fw, fh) -> None:
    style = ident.hair_style
    hair = _col(ident.hair, u)
    hairline = -0.24 + ident.hairline + 0.12 * (u / fw) ** 2  # curves down toward the temples
    if style == "bald":
        for side in (-1.0, 1.0):  # a fringe of hair above the ears
            d = _ellipse_d(u, v, side * fw * 0.97, -0.12, 0.05, 0.09)
            _paint(img, 0.8 * _ramp(d, aa), hair)
        return
    rx, ry, top = fw + 0.035, fh + 0.045, -0.05
    bumps = 0.0
    if style == "curly":
        theta = torch.atan2(v - top, u)
        bumps = 0.035 * torch.sin(theta * 13.0)
        rx, ry = rx + 0.05, ry + 0.06
    elif style == "spiky":
        theta = torch.atan2(v - top, u)
        bumps = 0.07 * (torch.sin(theta * 9.0).abs() ** 3) * (v < top).float()
    cap = _ramp(_ellipse_d(u, v, 0.0, top, rx, ry) - bumps, aa)
    below = _ramp(v - hairline, aa)
    alpha = {"buzz cut": 0.55}.get(style, 1.0)
    _paint(img, alpha * cap * below, hair)
    if style in ("long", "bob", "ponytail", "curly"):
        for side in (-1.0, 1.0):  # locks that frame the face
            d = _ellipse_d(
                u, v, side * (fw - 0.01), 0.02, 0.05, 0.22 if style != "ponytail" else 0.12
            )
            _paint(img, _ramp(d, aa), hair * 0.95)


def _glasses(img, u, v, aa, ident: Identity, centres) -> None:
    if ident.glasses == "none":
        return
    colour = _col(ident.glasses_colour, u)
    t = 0.012
    for cu, cv, _ in centres:
        if ident.glasses == "round":
            d = _ellipse_d(u, v, cu, cv, 0.088, 0.085)
        else:
            d = _superellipse_d(u, v, cu, cv, 0.1, 0.072, 5.0)
        _paint(img, _ramp(d.abs() - t, aa), colour)
    (lu, lv, _), (ru, rv, _) = centres
    bridge = _ellipse_d(u, v, (lu + ru) / 2, (lv + rv) / 2 - 0.01, (ru - lu) / 2 - 0.08, 0.01)
    _paint(img, _ramp(bridge, aa), colour)


def _hat(img, u, v, aa, scene: Scene, fw, fh) -> None:
    if scene.hat == "none":
        return
    colour = _col(scene.hat_colour, u)
    top = -fh
    if scene.hat == "cap":
        _paint(
            img,
            _ramp(_ellipse_d(u, v, 0.0, top + 0.12, fw + 0.05, 0.22), aa)
            * _ramp(v - (top + 0.16), aa),
            colour,
        )
        _paint(img, _ramp(_ellipse_d(u, v, 0.16, top + 0.15, 0.3, 0.035), aa), colour * 0.8)
    elif scene.hat == "beanie":
        _paint(
            img,
            _ramp(_ellipse_d(u, v, 0.0, top + 0.16, fw + 0.06, 0.3), aa)
            * _ramp(v - (top + 0.22), aa),
            colour,
        )
        band = _ramp(_superellipse_d(u, v, 0.0, top + 0.18, fw + 0.06, 0.04, 6.0), aa)
        _paint(img, band, colour * 0.75)
    elif scene.hat == "top hat":
        _paint(img, _ramp(_superellipse_d(u, v, 0.0, top - 0.14, 0.24, 0.26, 8.0), aa), colour)
        _paint(img, _ramp(_ellipse_d(u, v, 0.0, top + 0.1, 0.42, 0.05), aa), colour * 0.8)


def _draw_figure(img: Tensor, x: Tensor, y: Tensor, fig: Figure, px: float) -> None:
    ident, scene, m = fig.identity, fig.scene, fig.motion
    like = x
    yaw, pitch, roll = (
        _frame_param(m.yaw, like),
        _frame_param(m.pitch, like),
        _frame_param(m.roll, like),
    )
    s = fig.scale * scene.zoom
    hx = fig.slot_x + scene.offset[0] + _frame_param(m.dx or [0.0] * len(m.yaw), like)
    hy = 0.12 + scene.offset[1] + _frame_param(m.dy or [0.0] * len(m.yaw), like)
    c, sn = torch.cos(roll), torch.sin(roll)
    u = (c * (x - hx) + sn * (y - hy)) / s  # head units, (F, H, W)
    v = (-sn * (x - hx) + c * (y - hy)) / s
    aa = px / s
    fw, fh = 0.34 * ident.face_width, 0.44 * ident.face_length
    _body(img, u, v, aa, ident, scene)
    _hair_back(img, u, v, aa, ident, fw)
    face = _face(img, u, v, aa, ident, fw, fh)
    msu, msv = _feature_shift(yaw, pitch, fw, fh, 0.6)
    mu, mv = msu, 0.2 * fh / 0.44 + 0.04 + msv
    _marks(img, u, v, aa, ident, fw, fh, msu, msv, face)
    _facial_hair(img, u, v, aa, ident, mu, mv, face)
    _nose(img, u, v, aa, ident, fw, fh, yaw, pitch)
    _mouth(img, u, v, aa, ident, mu, mv, _frame_param(m.mouth_open, like), scene.expression)
    if ident.facial_hair == "moustache":
        _paint(
            img, _ramp(_ellipse_d(u, v, mu, mv - 0.045, 0.1, 0.026), aa), _col(ident.hair, u) * 0.9
        )
    centres = _eyes(
        img, u, v, aa, ident, fw, fh, yaw, pitch, _frame_param(m.eye_open, like), scene.expression
    )
    _brows(img, u, v, aa, ident, centres, scene.expression)
    _hair_front(img, u, v, aa, ident, fw, fh)
    _glasses(img, u, v, aa, ident, centres)
    _hat(img, u, v, aa, scene, fw, fh)


def _light(img: Tensor, x: Tensor, scene: Scene) -> Tensor:
    width = x.shape[-1] / x.shape[-2]
    shade = scene.brightness * (1.0 + 0.16 * scene.light_direction * x / width)  # (1, H, W)
    tint = _col((1 + 0.05 * scene.warmth, 1.0, 1 - 0.05 * scene.warmth), x)
    return (img * shade.unsqueeze(-1) * tint).clamp(0.0, 1.0)


def render(
    figures: list[Figure], background: Scene, height: int = 64, width: int = 64
) -> np.ndarray:
    """Render a clip of one or more figures over ``background``'s backdrop and light.

    Returns uint8 frames of shape (F, H, W, 3); F is the length of the figures' motions.
    """
    frames = len(figures[0].motion.mouth_open)
    aspect = width / height
    ys = (torch.arange(height, dtype=torch.float32) + 0.5) / height * 2 - 1
    xs = ((torch.arange(width, dtype=torch.float32) + 0.5) / width * 2 - 1) * aspect
    y, x = torch.meshgrid(ys, xs, indexing="ij")
    x, y = x.unsqueeze(0), y.unsqueeze(0)  # (1, H, W)
    with torch.no_grad():
        img = _background(x, y, background, frames)
        for fig in figures:
            _draw_figure(img, x, y, fig, 2.0 / height)
        img = _light(img, x, background)
    return (img * 255.0 + 0.5).to(torch.uint8).numpy()
