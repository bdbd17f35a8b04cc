"""Drawing the demo's synthetic portraits: one person's look, each photo's pose, face, hair, mask,
lighting and sensor grain, encoded as JPEG or PNG.

The label cues a small CNN must learn are drawn here (see core.data.demo): where the mask sits (wear,
incorrect, not wear), long or short hair and beards (gender), forehead lines and grey hair (age band).
Everything random comes from the generator passed in, so the same generator gives the same bytes.
"""

from __future__ import annotations

import functools
import io
import math
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageChops, ImageDraw, ImageFilter

from core.data.tasks import MASK_NOT_WEAR, MASK_WEAR, age_band

WIDTH, HEIGHT = 384, 512


def draw_photos(rng: np.random.Generator, gender: int, age: int, shots: Iterable[tuple[int, int, str]]) -> list[bytes]:
    """One person's photos, encoded; ``shots`` gives each photo's (mask state, which of the person's
    five masks, file suffix). The person looks the same in every photo; pose and light change."""
    look = _make_look(rng, gender, age)
    incorrect_style = int(rng.random() < 0.35)  # below the nose, or on the chin: one habit per person
    photos = []
    for state, variant, suffix in shots:
        img = look.background.copy()
        _draw_person(img, look, _pose(look, rng), state, variant, incorrect_style)
        img = _light(img, rng)
        photos.append(_encode(img, suffix, rng))
    return photos


SKIN_TONES = ((255, 224, 196), (241, 194, 161), (224, 172, 128), (198, 134, 94), (161, 102, 64), (110, 70, 45))
HAIR_COLOURS = ((20, 17, 15), (45, 30, 20), (75, 50, 30), (110, 70, 40), (60, 40, 35), (140, 95, 60))
# Mostly the white, black, blue and grey masks of the real photos; no skin-like tones, so a mask
# stands out from the face even at 64 x 48.
MASK_COLOURS = (
    (240, 240, 242), (236, 240, 248), (160, 196, 234), (28, 28, 32), (128, 130, 140),
    (230, 150, 185), (40, 52, 100), (110, 170, 140),
)  # fmt: skip
SHIRT_COLOURS = ((40, 40, 45), (220, 220, 225), (60, 80, 140), (140, 40, 50), (90, 110, 80), (180, 150, 110))


def _mix(a: Iterable[float], b: Iterable[float], t: float) -> tuple[int, int, int]:
    return tuple(int(round(x + (y - x) * t)) for x, y in zip(a, b, strict=True))  # type: ignore[return-value]


def _jitter(rng: np.random.Generator, colour: tuple[int, ...], amount: int) -> tuple[int, int, int]:
    return tuple(int(np.clip(c + rng.integers(-amount, amount + 1), 0, 255)) for c in colour)  # type: ignore[return-value]


@dataclass
class Look:
    """One person's appearance: the same across their seven photos."""

    cx: float
    cy: float
    fw: float  # face half-width in pixels
    fh: float  # face half-height
    skin: tuple[int, int, int]
    hair: tuple[int, int, int]
    long_hair: bool
    bald: bool
    beard: int  # 0 none, 1 moustache, 2 full beard
    wrinkles: int  # forehead lines
    glasses: bool
    shirt: tuple[int, int, int]
    masks: list[tuple[tuple[int, int, int], int]]  # (colour, pattern) for mask1..mask5
    background: Image.Image


def _greyness(rng: np.random.Generator, age: int) -> float:
    """How grey the hair is: none under 30, growing through the middle band, white at 60.

    The 60-year-olds are white-haired so the smallest classes (male, 60) stay learnable.
    """
    band = age_band(age)
    if band == 0:
        return 0.0
    if band == 1:
        return float(np.clip((age - 30) / 40 + rng.uniform(0.05, 0.25), 0.0, 0.7))
    return float(rng.uniform(0.8, 1.0))


def _make_look(rng: np.random.Generator, gender: int, age: int) -> Look:
    band = age_band(age)
    scale = rng.uniform(0.8, 1.18)
    skin = _jitter(rng, SKIN_TONES[rng.integers(len(SKIN_TONES))], 12)
    base_hair = HAIR_COLOURS[rng.integers(len(HAIR_COLOURS))]
    hair = _mix(base_hair, (215, 215, 218), _greyness(rng, age))
    wrinkles = 0 if band == 0 else (2 if age < 45 else 3) if band == 1 else 4
    # Masks far enough from the skin tone that they read as a mask, not a shadow, at 64 x 48.
    palette = [c for c in MASK_COLOURS if sum(abs(a - b) for a, b in zip(c, skin, strict=True)) > 150]
    masks = [(_jitter(rng, palette[rng.integers(len(palette))], 8), int(rng.integers(0, 4))) for _ in range(5)]
    return Look(
        cx=WIDTH / 2 + rng.uniform(-35, 35),
        cy=HEIGHT * 0.46 + rng.uniform(-30, 30),
        fw=72 * scale * rng.uniform(0.92, 1.08),
        fh=95 * scale,
        skin=skin,
        hair=hair,
        long_hair=gender == 1 and rng.random() < 0.92,
        bald=gender == 0 and band == 2 and rng.random() < 0.5,
        beard=0 if gender == 1 else int(rng.choice([0, 0, 0, 1, 2])),
        wrinkles=wrinkles,
        glasses=rng.random() < 0.25,
        shirt=_jitter(rng, SHIRT_COLOURS[rng.integers(len(SHIRT_COLOURS))], 20),
        masks=masks,
        background=_background(rng),
    )


def _background(rng: np.random.Generator) -> Image.Image:
    """A room-like backdrop: a vertical gradient with a few soft blocks (doors, windows, furniture)."""
    top = tuple(int(v) for v in rng.integers(40, 240, 3))
    bottom = _jitter(rng, _mix(top, (90, 90, 90), rng.uniform(0.1, 0.6)), 25)
    ramp = np.linspace(0.0, 1.0, HEIGHT, dtype=np.float32)[:, None, None]
    arr = np.array(top, np.float32) * (1 - ramp) + np.array(bottom, np.float32) * ramp
    img = Image.fromarray(np.broadcast_to(arr, (HEIGHT, WIDTH, 3)).astype(np.uint8))
    draw = ImageDraw.Draw(img)
    for _ in range(int(rng.integers(0, 4))):
        x0, y0 = int(rng.integers(-50, WIDTH)), int(rng.integers(-50, HEIGHT // 2))
        w, h = int(rng.integers(40, 220)), int(rng.integers(60, 400))
        draw.rectangle((x0, y0, x0 + w, y0 + h), fill=tuple(int(v) for v in rng.integers(30, 250, 3)))
    return img.filter(ImageFilter.BoxBlur(2))


@dataclass(frozen=True)
class Pose:
    """Where the face sits in one photo: centre, half-sizes and tilt (radians)."""

    cx: float
    cy: float
    fw: float
    fh: float
    angle: float

    def p(self, u: float, v: float) -> tuple[float, float]:
        """Face coordinates (u, v in -1..1 across the face, v down) -> pixel, tilted with the head."""
        x, y = u * self.fw, v * self.fh
        c, s = math.cos(self.angle), math.sin(self.angle)
        return (self.cx + c * x - s * y, self.cy + s * x + c * y)

    def box(self, u0: float, v0: float, u1: float, v1: float) -> tuple[float, float, float, float]:
        """An axis-aligned ellipse box whose centre follows the tilt (Pillow cannot rotate ellipses)."""
        x, y = self.p((u0 + u1) / 2, (v0 + v1) / 2)
        hw, hh = (u1 - u0) / 2 * self.fw, (v1 - v0) / 2 * self.fh
        return (x - hw, y - hh, x + hw, y + hh)

    def quad(self, u0: float, v0: float, u1: float, v1: float) -> list[tuple[float, float]]:
        return [self.p(u0, v0), self.p(u1, v0), self.p(u1, v1), self.p(u0, v1)]


def _pose(look: Look, rng: np.random.Generator) -> Pose:
    """This photo's small head movement: tilt, distance and position change between the seven shots."""
    k = rng.uniform(0.94, 1.06)
    return Pose(
        look.cx + rng.uniform(-14, 14),
        look.cy + rng.uniform(-12, 12),
        look.fw * k,
        look.fh * k,
        math.radians(rng.uniform(-8, 8)),
    )


def _draw_person(img: Image.Image, look: Look, pose: Pose, state: int, variant: int, incorrect_style: int) -> None:
    """Torso, hair, face and mask, drawn in face coordinates so the whole head tilts together."""
    d = ImageDraw.Draw(img)
    p, box, quad = pose.p, pose.box, pose.quad
    tilt = math.degrees(pose.angle)
    fw = pose.fw
    shade = _mix(look.skin, (60, 30, 20), 0.3)
    # Long hair falls behind the shoulders: drawn first so the face and torso cover its middle.
    if look.long_hair:
        d.ellipse(box(-1.3, -1.3, 1.3, 0.6), fill=look.hair)
        d.polygon(quad(-1.3, -0.4, 1.3, 2.1), fill=look.hair)
    d.polygon(quad(-0.35, 0.7, 0.35, 1.6), fill=shade)  # neck
    d.ellipse(box(-2.6, 1.25, 2.6, 4.0), fill=look.shirt)  # shoulders
    if look.long_hair:  # strands over the shoulders
        d.polygon(quad(-1.3, 0.2, -0.85, 2.0), fill=look.hair)
        d.polygon(quad(0.85, 0.2, 1.3, 2.0), fill=look.hair)
    if not look.bald:
        d.ellipse(box(-1.12, -1.28, 1.12, 0.3), fill=look.hair)  # back of the head
    else:
        d.ellipse(box(-1.08, -0.6, 1.08, 0.25), fill=look.hair)  # a fringe of hair around the sides
    d.ellipse(box(-1.14, -0.3, -0.86, 0.15), fill=look.skin)  # ears
    d.ellipse(box(0.86, -0.3, 1.14, 0.15), fill=look.skin)
    d.ellipse(box(-1.0, -1.0, 1.0, 1.0), fill=look.skin)  # face
    if not look.bald:  # a cap of hair over the top of the forehead
        d.chord(box(-1.04, -1.22, 1.04, -0.3 if look.long_hair else -0.5), 180 + tilt, 360 + tilt, fill=look.hair)
    line = _mix(look.skin, (40, 20, 10), 0.6)
    width = max(3, int(fw * 0.045))
    for i in range(look.wrinkles):  # forehead lines
        v = -0.6 + i * 0.08
        d.line([p(-0.45, v + 0.03), p(0, v), p(0.45, v + 0.03)], fill=line, width=width, joint="curve")
    if look.wrinkles >= 3:  # crow's feet and nasolabial folds
        for s in (-1, 1):
            d.line((*p(s * 0.62, -0.12), *p(s * 0.75, -0.2)), fill=line, width=width)
            d.line((*p(s * 0.62, -0.08), *p(s * 0.76, -0.04)), fill=line, width=width)
            d.line((*p(s * 0.22, 0.22), *p(s * 0.4, 0.55)), fill=line, width=width)
    brow = look.hair if not look.bald else _mix(look.hair, (80, 80, 80), 0.4)
    for s in (-1, 1):  # eyes and eyebrows
        d.ellipse(box(s * 0.4 - 0.16, -0.21, s * 0.4 + 0.16, -0.09), fill=(245, 245, 245))
        d.ellipse(box(s * 0.4 - 0.07, -0.21, s * 0.4 + 0.07, -0.09), fill=(35, 25, 20))
        d.line((*p(s * 0.2, -0.33), *p(s * 0.6, -0.36)), fill=brow, width=max(3, int(fw * 0.07)))
    nose = _mix(look.skin, (60, 30, 20), 0.45)  # darker than the cheeks: "nose visible" is the incorrect-mask cue
    d.polygon([p(-0.05, -0.12), p(0.05, -0.12), p(0.2, 0.28), p(-0.2, 0.28)], fill=nose)
    d.ellipse(box(-0.14, 0.2, -0.04, 0.28), fill=(60, 35, 30))
    d.ellipse(box(0.04, 0.2, 0.14, 0.28), fill=(60, 35, 30))
    lips = _mix(look.skin, (160, 30, 45), 0.7)
    beard = _mix(look.hair, (30, 25, 20), 0.3)
    if look.beard == 2:
        d.chord(box(-0.95, -0.2, 0.95, 1.08), 20 + tilt, 160 + tilt, fill=beard)
    if look.beard >= 1:
        d.chord(box(-0.38, 0.3, 0.38, 0.5), 180 + tilt, 360 + tilt, fill=beard)
    d.chord(box(-0.34, 0.36, 0.34, 0.66), tilt, 180 + tilt, fill=lips)  # mouth
    d.line((*p(-0.34, 0.51), *p(0.34, 0.51)), fill=(60, 20, 25), width=max(3, int(fw * 0.05)))
    if look.glasses:
        for s in (-1, 1):
            d.ellipse(box(s * 0.4 - 0.25, -0.28, s * 0.4 + 0.25, -0.02), outline=(25, 25, 25), width=width)
        d.line((*p(-0.15, -0.16), *p(0.15, -0.16)), fill=(25, 25, 25), width=width)
    if state != MASK_NOT_WEAR:
        colour, pattern = look.masks[variant]
        # Wear: from the bridge of the nose to under the chin. Incorrect: below the nose, or on the chin.
        top = 0.0 if state == MASK_WEAR else (0.33 if incorrect_style == 0 else 0.68)
        _draw_mask(d, p, top, colour, pattern, width)


def _draw_mask(d: ImageDraw.ImageDraw, p, top: float, colour, pattern: int, width: int) -> None:
    bottom = top + 1.08
    # A little wider than the face, so the mask also changes the head's outline.
    outline = [p(-1.1, top), p(1.1, top), p(1.04, top + 0.7), p(0.55, bottom), p(-0.55, bottom), p(-1.04, top + 0.7)]
    edge = _mix(colour, (0, 0, 0), 0.45) if sum(colour) > 200 else _mix(colour, (255, 255, 255), 0.45)
    d.polygon(outline, fill=colour, outline=edge, width=2 * width)  # the rim casts a visible edge on the face
    for s in (-1, 1):  # ear loops
        d.line((*p(s * 1.06, top + 0.08), *p(s * 1.12, -0.1)), fill=edge, width=2 * width)
    if pattern == 1:  # pleats
        for k in (0.3, 0.55, 0.8):
            d.line((*p(-0.9, top + k), *p(0.9, top + k)), fill=edge, width=width)
    elif pattern == 2:  # a seam down the middle (KF94 style)
        d.line((*p(0, top), *p(0, bottom)), fill=edge, width=width)
    elif pattern == 3:  # dots
        for i in range(-3, 4):
            for j in (0.25, 0.5, 0.75):
                x, y = p(i * 0.22, top + j)
                d.ellipse((x - 3, y - 3, x + 3, y + 3), fill=edge)


GRAIN_LEVELS = (3, 6, 10)  # standard deviations of the sensor grain textures


@functools.cache
def _grain(sigma: int) -> Image.Image:
    """A fixed grain texture, larger than a photo, centred on 64; each photo crops it at a random offset.

    Made once per process from a fixed seed, so it costs nothing per photo and stays deterministic.
    """
    rng = np.random.default_rng(sigma)
    noise = np.clip(64 + rng.standard_normal((HEIGHT + 128, WIDTH + 128), dtype=np.float32) * sigma, 0, 128)
    return Image.fromarray(noise.astype(np.uint8)).convert("RGB")


@functools.cache
def _black() -> Image.Image:
    return Image.new("RGB", (WIDTH, HEIGHT))


def _light(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Exposure and colour cast, uneven lighting, sensor grain and sometimes soft focus."""
    gains = rng.uniform(0.85, 1.3) * rng.uniform(0.9, 1.1, 3)
    lut = np.minimum(np.arange(256)[None, :] * gains[:, None], 255).astype(np.int64)
    img = img.point(lut.ravel().tolist())
    # A light falling off across the frame in a random direction (a linear ramp of brightness).
    phi = rng.uniform(0, 2 * math.pi)
    strength = rng.uniform(0.0, 0.35)
    ys = np.linspace(-1, 1, HEIGHT, dtype=np.float32)[:, None]
    xs = np.linspace(-1, 1, WIDTH, dtype=np.float32)[None, :]
    ramp = 1 - strength * (1 + (xs * math.cos(phi) + ys * math.sin(phi)) / math.sqrt(2)) / 2
    shade = Image.fromarray((ramp * 255).astype(np.uint8))
    img = Image.composite(img, _black(), shade)  # img * shade / 255, without an RGB copy of the shade
    grain = _grain(GRAIN_LEVELS[int(rng.integers(len(GRAIN_LEVELS)))])
    x0, y0 = int(rng.integers(0, 128)), int(rng.integers(0, 128))
    img = ImageChops.add(img, grain.crop((x0, y0, x0 + WIDTH, y0 + HEIGHT)), offset=-64)
    if rng.random() < 0.3:  # out of focus: a cheap blur by halving and restoring the size
        img = img.reduce(2).resize((WIDTH, HEIGHT), Image.Resampling.BILINEAR)
    return img


def _encode(img: Image.Image, suffix: str, rng: np.random.Generator) -> bytes:
    buf = io.BytesIO()
    if suffix == ".png":
        img.save(buf, format="PNG", compress_level=1)
    else:
        img.save(buf, format="JPEG", quality=int(rng.integers(78, 96)))
    return buf.getvalue()
