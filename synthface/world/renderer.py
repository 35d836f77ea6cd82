"""Procedural cartoon faces with known demographics and identity.

Every face is a stack of anti-aliased shapes described by signed distances, evaluated on
the pixel grid for a whole batch at once (numpy, no loops over pixels). Geometry is
expressed in "face units" (1 unit = the canonical eye distance) so the renderer works at
any resolution. The canonical layout is FFHQ's: eyes at (0.375, 0.4725) and (0.625, 0.4725)
of the image, mouth centre at (0.5, 0.7475), which is where NVIDIA's alignment script puts
them. Alignment code written for FFHQ-aligned generator output therefore applies unchanged.

An *identity* is a dict of per-face parameters (geometry and colours) drawn conditionally
on its attributes (`group`, `gender`, `age`); a *nuisance* dict holds what changes from one
image of that person to the next (pose, expression, lighting, background, glasses).
"""

from __future__ import annotations

import numpy as np

from ..align import FFHQ_LANDMARKS  # noqa: F401  (the layout this renderer draws)

GROUPS = ("group1", "group2", "group3")
GENDERS = ("female", "male")
AGE_RANGE = (18.0, 80.0)

FACE_CENTRE = (0.5, 0.4725)  # midpoint of the eyes
FACE_UNIT = 0.25             # eye distance as a fraction of the image side

# Per-group statistics. The groups overlap in every single cue (as real groups do); only the
# combination separates them. Skin "tone" is a melanin-like scalar mapped to a colour ramp.
_GROUP_STATS = {
    #            tone mu, sd  hue shift  eye_h mu  nose_w mu  lip mu  curl  (a, b) hair-colour mixture
    "group1": dict(tone=(0.30, 0.07), hue=+1.0, eye_h=0.62, nose_w=0.95, lip=0.95, curl=(0.0, 0.12),
                   hair=((0.06, 0.05, 0.05), 0.85), iris=((0.22, 0.13, 0.07), 0.95)),
    "group2": dict(tone=(0.78, 0.08), hue=0.0, eye_h=0.95, nose_w=1.30, lip=1.40, curl=(0.75, 0.95),
                   hair=((0.05, 0.04, 0.04), 0.9), iris=((0.18, 0.10, 0.05), 0.97)),
    "group3": dict(tone=(0.14, 0.07), hue=-1.0, eye_h=0.98, nose_w=1.00, lip=0.90, curl=(0.1, 0.5),
                   hair=((0.35, 0.22, 0.12), 0.35), iris=((0.25, 0.45, 0.65), 0.4)),
}
_HAIR_PALETTE = np.array([  # light-brown, blond, red, dark-brown
    [0.42, 0.28, 0.16], [0.80, 0.66, 0.40], [0.62, 0.28, 0.12], [0.20, 0.13, 0.08]])
_IRIS_PALETTE = np.array([[0.25, 0.45, 0.70], [0.30, 0.50, 0.30], [0.35, 0.22, 0.10], [0.45, 0.42, 0.35]])


# --------------------------------------------------------------------------- sampling

def draw_identities(rng: np.random.Generator, group, gender, age) -> dict:
    """Identity parameters for a batch, conditioned on attributes (arrays of group/gender
    indices and ages in years)."""
    group = np.asarray(group, dtype=np.int64)
    gender = np.asarray(gender, dtype=np.int64)
    age = np.asarray(age, dtype=np.float64)
    n = len(group)
    male = gender == 1
    old = np.clip((age - 40.0) / 35.0, 0, 1)           # 0 below 40, 1 at 75+
    p = {"group": group, "gender": gender, "age": age}

    def per_group(key, i=None):
        vals = [_GROUP_STATS[g][key] for g in GROUPS]
        vals = [v if i is None else v[i] for v in vals]
        return np.asarray(vals, dtype=np.float64)[group]

    tone = rng.normal(per_group("tone", 0), per_group("tone", 1))
    p["tone"] = np.clip(tone, 0.0, 1.0)
    p["hue"] = per_group("hue") * 0.5 + rng.normal(0, 0.35, n)
    p["redness"] = rng.normal(0.0, 1.0, n)
    # head and jaw: men wider with a squarer jaw
    p["head_a"] = rng.normal(np.where(male, 1.08, 0.99), 0.05)
    p["head_b"] = rng.normal(np.where(male, 1.50, 1.42), 0.06)
    p["jaw"] = np.clip(rng.normal(np.where(male, 0.12, 0.36), 0.07), -0.05, 0.6)
    p["head_dy"] = rng.normal(0.1, 0.04, n)
    # eyes
    p["eye_sep"] = rng.normal(0.0, 0.04, n)
    p["eye_v"] = rng.normal(0.0, 0.04, n)
    p["eye_w"] = rng.normal(1.0, 0.09, n)
    p["eye_h"] = np.clip(rng.normal(per_group("eye_h"), 0.08), 0.4, 1.3)
    p["eye_tilt"] = rng.normal(np.where(group == 0, 0.10, 0.0), 0.06)
    dark_iris = rng.random(n) < per_group("iris", 1)
    iris = _IRIS_PALETTE[rng.integers(0, len(_IRIS_PALETTE), n)]
    base_iris = np.asarray([_GROUP_STATS[g]["iris"][0] for g in GROUPS])[group]
    p["iris"] = np.clip(np.where(dark_iris[:, None], base_iris, iris) + rng.normal(0, 0.04, (n, 3)), 0, 1)
    # brows: thicker, lower and flatter for men
    p["brow_thick"] = np.clip(rng.normal(np.where(male, 1.45, 0.80), 0.18), 0.4, 2.2)
    p["brow_v"] = rng.normal(np.where(male, -0.30, -0.36), 0.04)
    p["brow_tilt"] = rng.normal(np.where(male, 0.0, 0.12), 0.08)
    p["brow_w"] = rng.normal(1.0, 0.08, n)
    # nose, mouth
    p["nose_w"] = np.clip(rng.normal(per_group("nose_w"), 0.12), 0.6, 1.8)
    p["nose_len"] = rng.normal(np.where(male, 1.05, 0.95), 0.08)
    p["mouth_w"] = rng.normal(1.0, 0.08, n)
    p["mouth_v"] = rng.normal(1.06, 0.04, n)
    p["lip"] = np.clip(rng.normal(per_group("lip"), 0.15), 0.5, 2.0)
    p["lipstick"] = (~male) & (rng.random(n) < 0.55)
    # ears
    p["ear_size"] = rng.normal(1.0, 0.1, n)
    # hair: length, colour, curl, hairline; men mostly short, women mostly long
    long_hair = np.where(male, rng.random(n) < 0.08, rng.random(n) < 0.88)
    p["hair_len"] = np.where(long_hair, rng.uniform(0.45, 1.0, n), rng.uniform(0.0, 0.15, n))
    p["curl"] = np.clip(rng.uniform(per_group("curl", 0), per_group("curl", 1)), 0, 1)
    p["volume"] = np.where(group == 1, rng.uniform(0.0, 0.35, n), rng.uniform(0.0, 0.12, n))
    dark_hair = rng.random(n) < per_group("hair", 1)
    palette = _HAIR_PALETTE[rng.integers(0, len(_HAIR_PALETTE), n)]
    base_hair = np.asarray([_GROUP_STATS[g]["hair"][0] for g in GROUPS])[group]
    hair = np.where(dark_hair[:, None], base_hair, palette) * rng.uniform(0.8, 1.2, (n, 1))
    grey = old * rng.uniform(0.3, 1.0, n)
    p["hair_rgb"] = np.clip(hair * (1 - grey[:, None]) + 0.72 * grey[:, None], 0, 1)
    p["hairline"] = rng.normal(-0.72, 0.06, n) - np.where(male, old * rng.uniform(0.0, 0.6, n), 0.0)
    p["fringe"] = np.where(rng.random(n) < 0.35, rng.uniform(0.1, 0.35, n), 0.0)
    p["part"] = rng.uniform(-0.5, 0.5, n)
    bald = male & (rng.random(n) < 0.5 * old)
    p["hair_len"] = np.where(bald, 0.0, p["hair_len"])
    p["bald"] = bald
    # facial hair (men only): 0 none, 1 moustache, 2 beard, 3 both; density 0.35 stubble .. 1
    p["beard"] = np.where(male & (rng.random(n) < 0.45), rng.integers(1, 4, n), 0)
    p["beard_density"] = rng.uniform(0.35, 1.0, n)
    # age marks and personal marks
    p["wrinkles"] = np.clip(old * rng.uniform(0.5, 1.1, n), 0, 1)
    p["mole"] = rng.random(n) < 0.3
    p["mole_uv"] = np.stack([rng.uniform(-0.7, 0.7, n), rng.uniform(0.2, 1.2, n)], 1)
    p["freckles"] = (group == 2) & (rng.random(n) < 0.2)
    p["glasses_habit"] = rng.random(n) < 0.2
    return p


def draw_nuisance(rng: np.random.Generator, n: int, glasses_habit=None, strength: float = 1.0) -> dict:
    """What varies between images of one person; `strength` scales pose and expression."""
    s = float(strength)
    q = {}
    q["yaw"] = rng.normal(0, 0.16 * s, n)
    q["roll"] = rng.normal(0, 0.07 * s, n)
    q["shift"] = rng.normal(0, 0.02 * s, (n, 2))
    q["scale"] = np.exp(rng.normal(0, 0.04 * s, n))
    q["smile"] = np.clip(rng.normal(0.3, 0.45 * s, n), -0.5, 1.2)
    q["mouth_open"] = np.where(rng.random(n) < 0.25 * s, rng.uniform(0.2, 1.0, n), 0.0)
    q["blink"] = np.where(rng.random(n) < 0.05 * s, rng.uniform(0.5, 0.9, n), 0.0)
    q["brow_raise"] = rng.normal(0, 0.04 * s, n)
    q["gaze"] = rng.normal(0, 0.03 * s, (n, 2))
    ang = rng.uniform(0, 2 * np.pi, n)
    q["light"] = np.stack([np.cos(ang), np.sin(ang)], 1) * rng.uniform(0.0, 0.35 * s, (n, 1))
    q["brightness"] = np.exp(rng.normal(0, 0.08 * s, n))
    q["bg_top"] = rng.uniform(0.15, 0.95, (n, 3))
    q["bg_bottom"] = np.clip(q["bg_top"] * rng.uniform(0.5, 1.1, (n, 1)) + rng.normal(0, 0.1, (n, 3)), 0, 1)
    q["shirt"] = rng.uniform(0.05, 0.9, (n, 3))
    habit = np.zeros(n, bool) if glasses_habit is None else np.asarray(glasses_habit, bool)
    q["glasses"] = np.where(habit, rng.random(n) < 0.8, rng.random(n) < 0.05)
    q["glasses_rgb"] = np.where(rng.random((n, 1)) < 0.7, 0.08, rng.uniform(0.1, 0.7, (n, 3)))
    return q


# --------------------------------------------------------------------------- drawing helpers

def _col(x):
    """(B,) or (B,3) parameters -> broadcastable against (B,H,W[,3])."""
    x = np.asarray(x, dtype=np.float32)
    return x.reshape(x.shape[0], 1, 1, *x.shape[1:])


def _ellipse(u, v, cu, cv, a, b):
    """Approximate signed distance to an axis-aligned ellipse (exact on circles)."""
    r = np.sqrt(((u - cu) / a) ** 2 + ((v - cv) / b) ** 2)
    return (r - 1.0) * np.minimum(a, b)


def _box(u, v, cu, cv, hw, hh, radius=0.0):
    du = np.abs(u - cu) - hw + radius
    dv = np.abs(v - cv) - hh + radius
    outside = np.sqrt(np.maximum(du, 0) ** 2 + np.maximum(dv, 0) ** 2)
    return outside + np.minimum(np.maximum(du, dv), 0) - radius


class _Canvas:
    """RGB accumulator for a batch; `paint` composites a colour with an SDF's coverage."""

    def __init__(self, rgb, px):
        self.rgb = rgb
        self.px = px  # one pixel in face units, (B,1,1)

    def cover(self, sdf, soft=1.0):
        return np.clip(0.5 - sdf / (self.px * soft), 0.0, 1.0)

    def paint(self, sdf, colour, opacity=1.0, soft=1.0):
        a = self.cover(sdf, soft) * opacity
        self.rgb += a[..., None] * (np.broadcast_to(colour, self.rgb.shape) - self.rgb)
        return a


# --------------------------------------------------------------------------- renderer

def skin_rgb(tone, hue, redness):
    """Melanin-like tone in [0, 1] -> RGB; hue > 0 is yellower, < 0 pinker."""
    light = np.array([0.97, 0.84, 0.74])
    dark = np.array([0.36, 0.22, 0.14])
    t = np.asarray(tone)[:, None]
    rgb = light * (1 - t) + dark * t
    rgb = rgb + np.asarray(hue)[:, None] * np.array([0.0, 0.025, -0.04]) * (1 - t)
    rgb = rgb + np.asarray(redness)[:, None] * np.array([0.015, -0.01, -0.005])
    return np.clip(rgb, 0, 1)


class _Face:
    """What every layer of a batch of faces shares: face coordinates (U, V) of the pixel grid after
    the image's shift, scale and roll; the camera's yaw; the identity's colours and head shape."""

    def __init__(self, p: dict, q: dict, size: int):
        y, x = (np.mgrid[0:size, 0:size].astype(np.float32) + 0.5) / size
        self.y = y
        # image -> face coordinates: undo shift, scale and roll
        scale = _col(q["scale"])
        xs = (x[None] - FACE_CENTRE[0] - _col(q["shift"][:, 0])) / (FACE_UNIT * scale)
        ys = (y[None] - FACE_CENTRE[1] - _col(q["shift"][:, 1])) / (FACE_UNIT * scale)
        cr, sr = np.cos(_col(q["roll"])), np.sin(_col(q["roll"]))
        self.U = cr * xs + sr * ys
        self.V = -sr * xs + cr * ys
        self.px = 1.0 / (size * FACE_UNIT * scale)
        self.yaw = _col(q["yaw"])
        self.skin = _col(skin_rgb(p["tone"], p["hue"], p["redness"]))
        self.skin_shadow = self.skin * 0.78
        self.hair = _col(p["hair_rgb"])
        self.curl = _col(p["curl"])
        self.head_a, self.head_b = _col(p["head_a"]), _col(p["head_b"])
        self.head_cv = _col(p["head_dy"])
        self.Uh = self.at_depth(0.15)  # the head's outline
        self.Ue = self.at_depth(0.35)  # eyes and glasses
        self.Um = self.at_depth(0.55)  # mouth and moustache
        self.hair_len = _col(p["hair_len"])
        self.volume = _col(p["volume"])
        self.has_long = _col((p["hair_len"] > 0.3).astype(np.float32))
        U, V = self.U, self.V
        waves = 0.28 * self.curl * np.sin(14 * U + 3 * np.sin(6 * V)) * np.sin(14 * V)
        self.hair_tex = self.hair * (1 + waves)[..., None]

    def at_depth(self, depth):
        """u seen from a yawed camera: points nearer the camera move further."""
        return self.U + self.yaw * depth


def _background(f: _Face, q: dict) -> np.ndarray:
    """A vertical gradient, float32 [B, H, W, 3]."""
    t = f.y[None, ..., None]
    rgb = _col(q["bg_top"]) * (1 - t) + _col(q["bg_bottom"]) * t
    return rgb.astype(np.float32)


def _draw_behind_head(cv: _Canvas, f: _Face, p: dict, q: dict) -> None:
    """Shoulders, neck, long hair behind the head, and the ears (the far one hides as the head turns)."""
    U, V, Uh, head_a, head_cv = f.U, f.V, f.Uh, f.head_a, f.head_cv
    cv.paint(_ellipse(U, V, 0, 3.45, 2.3, 1.35), _col(q["shirt"]))
    neck_w = _col(np.where(p["gender"] == 1, 0.52, 0.42))
    cv.paint(_box(Uh, V, 0, 2.0, neck_w, 1.0, 0.1), f.skin_shadow)
    hl, vol = f.hair_len, f.volume
    wave = 0.05 * f.curl * np.sin(9.0 * V + 3.0 * U)
    back_bottom = head_cv - 0.2 + 2.4 * hl
    back = _box(Uh, V, 0, (back_bottom - 1.55) / 2, head_a + 0.2 + vol * 0.5, (back_bottom + 1.55) / 2, 0.5)
    back = back + wave + 9.0 * (1 - f.has_long)
    cv.paint(back, f.hair_tex)
    for side in (-1, 1):
        vis = np.clip(1 - side * f.yaw * 2.5, 0.2, 1.2)
        ear = _ellipse(Uh, V, side * (head_a - 0.02) + f.yaw * 0.15, head_cv + 0.05,
                       0.17 * _col(p["ear_size"]) * vis, 0.3 * _col(p["ear_size"]))
        cv.paint(ear, f.skin_shadow)


def _draw_head(cv: _Canvas, f: _Face, p: dict, q: dict) -> tuple[np.ndarray, np.ndarray]:
    """The head (an ellipse whose lower half narrows toward the chin) lit from the image's light
    direction, darker toward the edges; returns its signed distance and its coverage."""
    Uh, V, head_a, head_b, head_cv = f.Uh, f.V, f.head_a, f.head_b, f.head_cv
    jaw = _col(p["jaw"])
    below = np.clip((V - head_cv) / head_b, 0, 1)
    width = head_a * (1 - jaw * below ** 1.6)
    head = (np.sqrt((Uh / width) ** 2 + ((V - head_cv) / head_b) ** 2) - 1) * width
    head_cov = cv.paint(head, f.skin)
    lx, ly = _col(q["light"][:, 0]), _col(q["light"][:, 1])
    shade = 1 + lx * Uh / head_a + ly * (V - head_cv) / head_b
    cv.rgb *= (1 + (shade - 1) * head_cov)[..., None]
    return head, head_cov


def _draw_skin_marks(cv: _Canvas, f: _Face, p: dict, head_cov: np.ndarray) -> None:
    """Freckles, the mole, forehead lines and nasolabial folds."""
    U, V, skin = f.U, f.V, f.skin
    fr = _col(p["freckles"].astype(np.float32))
    spots = (np.sin(23 * U) * np.sin(19 * V + 2 * U) > 0.85) & (np.abs(V - 0.45) < 0.25) & (np.abs(U) > 0.25)
    cv.rgb -= (0.12 * fr * spots * head_cov)[..., None] * skin
    mole = _ellipse(f.at_depth(0.3), V, _col(p["mole_uv"][:, 0]), _col(p["mole_uv"][:, 1]), 0.05, 0.05)
    cv.paint(mole + 9 * (1 - _col(p["mole"].astype(np.float32))), skin * 0.45)
    wr = _col(p["wrinkles"])
    Uf = f.at_depth(0.4)
    for k, v0 in enumerate((-0.62, -0.78, -0.94)):
        line = np.abs(V - v0 - 0.06 * Uf ** 2) - 0.012
        line = np.maximum(line, np.abs(Uf) - 0.55 + 0.1 * k)
        cv.paint(line, skin * 0.6, opacity=0.8 * wr, soft=1.5)
    for side in (-1, 1):
        fold = _ellipse(Uf, V, side * 0.22, 0.95, 0.22, 0.42)
        fold = np.maximum(np.abs(fold) - 0.012, np.maximum(side * (side * 0.22 - Uf), 0.6 - V))
        cv.paint(fold, skin * 0.62, opacity=0.9 * wr, soft=1.5)


def _draw_facial_hair(cv: _Canvas, f: _Face, p: dict, head: np.ndarray) -> None:
    """Beard and moustache (drawn before the mouth so the lips stay visible)."""
    V = f.V
    beard = p["beard"]
    dens = _col(p["beard_density"])
    has_beard = _col(((beard == 2) | (beard == 3)).astype(np.float32))
    has_moust = _col(((beard == 1) | (beard == 3)).astype(np.float32))
    beard_sdf = np.maximum(head - 0.0, 0.62 - V + 0.25 * (f.Uh / f.head_a) ** 2)
    cv.paint(beard_sdf, f.hair, opacity=has_beard * dens, soft=2.0)
    moust = _ellipse(f.Um, V, 0, _col(p["mouth_v"]) - 0.14, 0.36 * _col(p["mouth_w"]), 0.08)
    cv.paint(moust, f.hair, opacity=has_moust * dens, soft=1.5)


def _draw_front_hair(cv: _Canvas, f: _Face, p: dict) -> None:
    """A cap above the hairline, side locks for long hair, and the fringe."""
    Uh, V, head_a, head_cv, vol = f.Uh, f.V, f.head_a, f.head_cv, f.volume
    hairline = _col(p["hairline"]) + _col(p["fringe"]) + 0.16 * (Uh / head_a) ** 2
    bumps = 0.06 * f.curl * np.sin(16 * np.arctan2(V - head_cv, Uh))
    cap_outer = _ellipse(Uh, V, 0, head_cv - 0.04 - vol * 0.3, head_a + 0.09 + vol, f.head_b + 0.06 + vol * 0.4) + bumps
    cap = np.maximum(cap_outer, V - hairline)
    part = _col(p["part"])
    sides = np.maximum(cap_outer, np.maximum(V - (head_cv - 0.2 + 1.6 * f.hair_len),
                                             0.84 * head_a - np.abs(Uh - 0.05 * part)))
    sides = sides + 9.0 * (1 - f.has_long)
    front = np.minimum(cap, sides) + 9.0 * _col(p["bald"].astype(np.float32))
    cv.paint(front, f.hair_tex)


def _draw_eyes(cv: _Canvas, f: _Face, p: dict, q: dict) -> None:
    """Whites, irises and pupils following the gaze, upper lids (with lashes for women), brows."""
    V, Ue = f.V, f.Ue
    eye_w, eye_h = _col(p["eye_w"]), _col(p["eye_h"])
    open_ = np.clip(1 - _col(q["blink"]) - 0.25 * np.maximum(_col(q["smile"]) - 0.6, 0), 0.08, 1)
    ev = _col(p["eye_v"])
    female = _col((p["gender"] == 0).astype(np.float32))
    for side in (-1, 1):
        cu = side * (0.5 + _col(p["eye_sep"]))
        tilt = _col(p["eye_tilt"]) * side
        du, dv = Ue - cu, V - ev
        dv = dv + tilt * du
        white = _ellipse(du, dv, 0, 0, 0.2 * eye_w, 0.105 * eye_h * open_)
        cv.paint(white, np.float32(0.95))
        gu = _col(q["gaze"][:, 0]) - f.yaw * 0.15
        gv = _col(q["gaze"][:, 1])
        iris = np.maximum(_ellipse(du, dv, gu, gv, 0.085, 0.085), white)
        cv.paint(iris, _col(p["iris"]))
        pupil = np.maximum(_ellipse(du, dv, gu, gv, 0.038, 0.038), white)
        cv.paint(pupil, np.float32(0.03))
        lid = np.maximum(np.abs(white) - 0.012 - 0.018 * female, dv)  # upper lid line, lashes for women
        cv.paint(lid, f.skin * 0.25, soft=1.2)
        bu = du - side * 0.02
        bv = V - (ev + _col(p["brow_v"]) - _col(q["brow_raise"])) + _col(p["brow_tilt"]) * (side * bu) * 0.5
        bv = bv + 0.22 * (bu / 0.25) ** 2 * 0.25
        brow = _ellipse(bu, bv, 0, 0, 0.26 * _col(p["brow_w"]), 0.035 * _col(p["brow_thick"]))
        cv.paint(brow, f.hair * 0.85)


def _draw_nose(cv: _Canvas, f: _Face, p: dict, q: dict) -> None:
    """Bridge shadow on the light's far side, tip and nostrils."""
    V, skin = f.V, f.skin
    Un = f.at_depth(0.7)
    nw = _col(p["nose_w"])
    nl = _col(p["nose_len"])
    tip_v = 0.55 * nl
    lx = _col(q["light"][:, 0])
    cv.paint(_ellipse(Un, V, 0.05 - 0.1 * lx, tip_v - 0.25, 0.05, 0.28 * nl), f.skin_shadow, opacity=0.5, soft=3)
    cv.paint(_ellipse(Un, V, 0, tip_v, 0.13 * nw, 0.09), skin * 0.86, soft=1.5)
    for side in (-1, 1):
        cv.paint(_ellipse(Un, V, side * 0.085 * nw, tip_v + 0.04, 0.04 * nw, 0.025), skin * 0.35)


def _draw_mouth(cv: _Canvas, f: _Face, p: dict, q: dict) -> None:
    """Lips that bend with the smile; an open mouth shows the dark inside and the teeth."""
    Um, skin = f.Um, f.skin
    mw = _col(p["mouth_w"])
    smile = _col(q["smile"])
    mo = _col(q["mouth_open"])
    du = Um / (0.36 * mw)
    dv = f.V - _col(p["mouth_v"]) + smile * 0.12 * (du ** 2 - 0.3)
    lip_rgb = np.where(_col(p["lipstick"])[..., None], np.array([0.70, 0.12, 0.18], np.float32),
                       skin * np.array([0.85, 0.62, 0.62], np.float32))
    lip_h = 0.055 * _col(p["lip"])
    cv.paint(_ellipse(Um, dv, 0, 0, 0.36 * mw, lip_h + 0.06 * mo), lip_rgb)
    inner_h = np.maximum(0.11 * mo, 0.008)
    inner = _ellipse(Um, dv, 0, 0.005, 0.3 * mw, inner_h)
    cv.paint(inner, np.float32(0.18) * skin)
    teeth = np.maximum(inner, dv - 0.02 + 0.0 * inner_h)
    cv.paint(teeth, np.float32(0.92), opacity=(mo > 0.05).astype(np.float32))


def _draw_glasses(cv: _Canvas, f: _Face, p: dict, q: dict) -> None:
    """Two rims and the bridge, for the images that have glasses on."""
    Ue, V = f.Ue, f.V
    ev = _col(p["eye_v"])
    gl = _col(q["glasses"].astype(np.float32))
    grgb = _col(q["glasses_rgb"])
    for side in (-1, 1):
        ring = np.abs(_ellipse(Ue, V, side * (0.5 + _col(p["eye_sep"])), ev, 0.26, 0.2)) - 0.028
        cv.paint(ring, grgb, opacity=gl)
    bridge = _box(Ue, V + 0.04 * Ue ** 2, 0, ev - 0.04, 0.26, 0.022)
    cv.paint(bridge, grgb, opacity=gl)


def render(identity: dict, nuisance: dict, size: int = 64) -> np.ndarray:
    """Render a batch: identity and nuisance dicts of equal batch size -> uint8 [B, size, size, 3].
    The layers are painted back to front on one canvas; each step reads the shared geometry."""
    p, q = identity, nuisance
    f = _Face(p, q, size)
    cv = _Canvas(_background(f, q), f.px)
    _draw_behind_head(cv, f, p, q)
    head, head_cov = _draw_head(cv, f, p, q)
    _draw_skin_marks(cv, f, p, head_cov)
    _draw_facial_hair(cv, f, p, head)
    _draw_front_hair(cv, f, p)
    _draw_eyes(cv, f, p, q)
    _draw_nose(cv, f, p, q)
    _draw_mouth(cv, f, p, q)
    _draw_glasses(cv, f, p, q)
    cv.rgb *= _col(q["brightness"])[..., None]  # global exposure
    return (np.clip(cv.rgb, 0, 1) * 255 + 0.5).astype(np.uint8)


def landmarks(identity: dict, nuisance: dict, size: int) -> np.ndarray:
    """The 5 ArcFace-style points (eyes, nose tip, mouth corners) in pixels, [B, 5, 2]."""
    p, q = identity, nuisance
    B = len(p["group"])
    yaw = q["yaw"]
    sep = 0.5 + p["eye_sep"]
    mw = 0.36 * p["mouth_w"]
    pts = np.stack([
        np.stack([-sep + yaw * 0.35, p["eye_v"]], 1),
        np.stack([sep + yaw * 0.35, p["eye_v"]], 1),
        np.stack([yaw * 0.7, 0.55 * p["nose_len"]], 1),
        np.stack([-mw + yaw * 0.55, p["mouth_v"] - q["smile"] * 0.12 * 0.7], 1),
        np.stack([mw + yaw * 0.55, p["mouth_v"] - q["smile"] * 0.12 * 0.7], 1),
    ], 1)  # face units, [B, 5, 2]
    cr, sr = np.cos(q["roll"])[:, None], np.sin(q["roll"])[:, None]
    u, v = pts[..., 0], pts[..., 1]
    xs = cr * u - sr * v
    ys = sr * u + cr * v
    s = FACE_UNIT * q["scale"][:, None]
    x = FACE_CENTRE[0] + q["shift"][:, 0:1] + xs * s
    y = FACE_CENTRE[1] + q["shift"][:, 1:2] + ys * s
    assert x.shape == (B, 5)
    return np.stack([x, y], -1) * size
