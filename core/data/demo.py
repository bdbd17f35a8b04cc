"""The embedded demo dataset: synthetic portraits in the mask-status competition's exact layout.

``generate(out, people=300, eval_people=200, seed=0)`` writes::

    out/train/train.csv                       id,gender,race,age,path
    out/train/images/<id>_<gender>_Asian_<age>/mask1..mask5, incorrect_mask, normal (+ ._ twins)
    out/eval/info.csv                         ImageID,ans  (ans = 0, as the competition ships it)
    out/eval/images/<40 hex>.jpg

Each photo is a 384 x 512 portrait drawn with Pillow. The labels are visible cues a small CNN learns
at 128 x 96 or even 64 x 48: the mask covers nose and mouth (wear), sits below the nose or on the chin
(incorrect) or is absent (not wear); women mostly have long hair falling to the shoulders, men short
hair and sometimes a beard; age shows as forehead lines and greying hair (white at 60). Backgrounds,
skin tones, head position, scale, tilt, lighting, grain and focus vary so augmentation matters.

It reproduces the real data's quirks: the real class proportions (people by gender and age band, so
the 18 image classes follow the real table), ages 18-60 with only 60 in the top band, mixed
``.jpg``/``.jpeg``/``.png`` inside a folder, ``._`` AppleDouble twins beside files and folders, an id
with a suffix (``001498-1`` style), one id used by two folders, and with ``label_noise`` planted
label errors of the three real kinds, listed in a truth CSV.

Same seed, same bytes: every person draws from its own RNG seeded from (seed, split, index), so the
result does not depend on the number of worker processes or their scheduling, and no file holds a
timestamp. The dataset is written into a temp folder beside ``out`` and renamed at the end, so an
interrupted run leaves no half dataset.
"""

from __future__ import annotations

import csv
import functools
import hashlib
import io
import math
import multiprocessing
import os
import random
import shutil
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageChops, ImageDraw, ImageFilter

from core.errors import DatasetError
from core.fsutil import atomic_write_text

WIDTH, HEIGHT = 384, 512
PHOTOS = ("mask1", "mask2", "mask3", "mask4", "mask5", "incorrect_mask", "normal")
WEAR, INCORRECT, NOT_WEAR = 0, 1, 2
GENDERS = ("male", "female")
# People in the real training set per (gender, age band); images per class follow from 7 photos each.
REAL_PEOPLE = {(0, 0): 549, (0, 1): 410, (0, 2): 83, (1, 0): 732, (1, 1): 817, (1, 2): 109}
NOISE_KINDS = ("mask_swap", "gender", "age")  # the order they are planted in
TRUTH_COLUMNS = ("path", "kind", "true_label", "given_label")
EVAL_TRUTH_COLUMNS = ("ImageID", "ans", "mask", "gender", "age", "person")
# The first bytes of a real AppleDouble file ("._name"): magic, version, "Mac OS X" filler.
APPLE_DOUBLE = b"\x00\x05\x16\x07\x00\x02\x00\x00Mac OS X        \x00\x02" + bytes(64)
SMALL_RUN = 24  # below this many people a process pool costs more than it saves

ProgressFn = Callable[[int, int], None]


def class_index(mask: int, gender: int, band: int) -> int:
    return mask * 6 + gender * 3 + band


def age_band(age: int) -> int:
    return 0 if age < 30 else 1 if age < 60 else 2


def photo_state(photo: str) -> int:
    return WEAR if photo.startswith("mask") else INCORRECT if photo == "incorrect_mask" else NOT_WEAR


def eval_truth_path(truth: str | os.PathLike) -> Path:
    """Where the eval set's true labels go when a truth file is asked for: ``<stem>_eval.csv`` beside it."""
    truth = Path(truth)
    return truth.with_name(f"{truth.stem}_eval{truth.suffix or '.csv'}")


# --------------------------------------------------------------------------------------------------
# Planning (main process): who is who, file names, quirks and planted label errors.


@dataclass(frozen=True)
class Shot:
    relpath: str  # file path relative to the dataset root
    state: int  # mask state drawn in the picture (WEAR, INCORRECT, NOT_WEAR)
    variant: int  # which of the person's masks (0..4) is worn


@dataclass(frozen=True)
class PersonPlan:
    key: str  # seed material of this person's RNG: "<seed>/<split>/<index>"
    gender: int  # true gender, drawn in the picture
    age: int  # true age, drawn in the picture
    shots: tuple[Shot, ...]
    folder: str = ""  # relpath of the person folder (train); gets a ._ twin beside it
    apple_double: bool = False  # write ._ twins beside every file


@dataclass(frozen=True)
class TrainPerson:
    person_id: str  # "000123" or "001498-1"
    given_gender: int
    given_age: int
    true_gender: int
    true_age: int
    noise: str = ""  # "", "gender", "age" or "mask_swap"

    @property
    def folder(self) -> str:
        return f"{self.person_id}_{GENDERS[self.given_gender]}_Asian_{self.given_age}"


def _rng(key: str) -> np.random.Generator:
    digest = hashlib.sha256(key.encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


def allocate_cells(people: int) -> list[tuple[int, int]]:
    """(gender, band) for ``people`` people in the real proportions, each cell at least once when possible.

    Largest-remainder rounding of the real shares; with six people or more every cell gets one so
    all 18 classes exist even in a tiny test set.
    """
    total = sum(REAL_PEOPLE.values())
    quota = {cell: people * n / total for cell, n in REAL_PEOPLE.items()}
    floor_min = 1 if people >= len(REAL_PEOPLE) else 0
    count = {cell: max(floor_min, math.floor(q)) for cell, q in quota.items()}
    while sum(count.values()) > people:
        cell = max((c for c in count if count[c] > floor_min), key=lambda c: count[c] - quota[c])
        count[cell] -= 1
    while sum(count.values()) < people:
        cell = max(count, key=lambda c: quota[c] - count[c])
        count[cell] += 1
    return [cell for cell, n in count.items() for _ in range(n)]


def _age_in_band(rng: random.Random, band: int) -> int:
    return rng.randint(18, 29) if band == 0 else rng.randint(30, 59) if band == 1 else 60


def _boundary_error(rng: random.Random, band: int) -> tuple[int, int]:
    """(true age, given age) one year apart across a band boundary, as the real mistakes are."""
    if band == 0:
        return 29, 30
    if band == 2:
        return 60, 59
    return (30, 29) if rng.random() < 0.5 else (59, 60)


def _noise_plan(rng: random.Random, people: int, rate: float) -> dict[int, str]:
    """Person index -> kind of planted error, so that about ``rate`` of the train images are wrong.

    Kinds take turns (a swap costs 2 photos, a wrong gender or age 7) until the target is reached, so
    every kind appears once the target passes 9 photos and the overshoot is at most 6 photos.
    """
    target = round(rate * people * len(PHOTOS))
    if rate > 0 and target == 0:
        target = 1
    cost = {"gender": len(PHOTOS), "age": len(PHOTOS), "mask_swap": 2}
    order = list(range(people))
    rng.shuffle(order)
    plan: dict[int, str] = {}
    planted = 0
    for step, index in enumerate(order):
        if planted >= target:
            break
        kind = NOISE_KINDS[step % len(NOISE_KINDS)]
        plan[index] = kind
        planted += cost[kind]
    return plan


def plan_train(people: int, seed: int, label_noise: float) -> list[TrainPerson]:
    rng = random.Random(f"demo/{seed}/train-plan")
    cells = allocate_cells(people)
    rng.shuffle(cells)
    id_space = max(7000, 3 * people)
    ids = sorted(rng.sample(range(1, id_space), people))
    noise = _noise_plan(rng, people, label_noise)
    persons: list[TrainPerson] = []
    for index, ((gender, band), number) in enumerate(zip(cells, ids, strict=True)):
        age = _age_in_band(rng, band)
        kind = noise.get(index, "")
        given_gender, given_age, true_age = gender, age, age
        if kind == "gender":
            given_gender = 1 - gender
        elif kind == "age":
            true_age, given_age = _boundary_error(rng, band)
        persons.append(TrainPerson(f"{number:06d}", given_gender, given_age, gender, true_age, kind))
    return _add_id_quirks(persons)


def _add_id_quirks(persons: list[TrainPerson]) -> list[TrainPerson]:
    """One id with a suffix ("001498-1") and one id shared by two folders, as in the real data."""
    if len(persons) >= 2:
        middle = len(persons) // 2
        p = persons[middle]
        persons[middle] = TrainPerson(f"{p.person_id}-1", p.given_gender, p.given_age, p.true_gender, p.true_age, p.noise)
    if len(persons) >= 4:
        # The real twin folders differ only by age (003397_female_Asian_20 / _19): reuse the id of the
        # nearest earlier person whose folder name would still differ.
        last = persons[-1]
        for other in reversed(persons[:-2]):
            if "-" in other.person_id:
                continue
            twin = TrainPerson(other.person_id, last.given_gender, last.given_age, last.true_gender, last.true_age, last.noise)
            if twin.folder != other.folder:
                persons[-1] = twin
                break
    return persons


def _extension(rng: random.Random) -> str:
    r = rng.random()
    return ".png" if r < 0.03 else ".jpeg" if r < 0.05 else ".jpg"


def train_plans(persons: list[TrainPerson], seed: int) -> list[PersonPlan]:
    rng = random.Random(f"demo/{seed}/train-files")
    plans = []
    for index, person in enumerate(persons):
        exts = [_extension(rng) for _ in PHOTOS]
        if index == 0:  # guarantee the mix inside one folder, even in a tiny set
            exts[1], exts[6] = ".png", ".jpeg"
        shots = []
        for photo, ext, variant in zip(PHOTOS, exts, (0, 1, 2, 3, 4, 0, 0), strict=True):
            state = photo_state(photo)
            if person.noise == "mask_swap" and state != WEAR:
                state = NOT_WEAR if state == INCORRECT else INCORRECT
            shots.append(Shot(f"train/images/{person.folder}/{photo}{ext}", state, variant))
        plans.append(
            PersonPlan(f"{seed}/train/{index}", person.true_gender, person.true_age, tuple(shots),
                       folder=f"train/images/{person.folder}", apple_double=True)
        )  # fmt: skip
    return plans


@dataclass(frozen=True)
class EvalImage:
    image_id: str
    label: int
    mask: int
    gender: int
    age: int
    person: int


def plan_eval(eval_people: int, seed: int) -> tuple[list[PersonPlan], list[EvalImage]]:
    rng = random.Random(f"demo/{seed}/eval-plan")
    cells = allocate_cells(eval_people)
    rng.shuffle(cells)
    plans, images = [], []
    for index, (gender, band) in enumerate(cells):
        age = _age_in_band(rng, band)
        shots = []
        for photo, variant in zip(PHOTOS, (0, 1, 2, 3, 4, 0, 0), strict=True):
            image_id = f"{rng.getrandbits(160):040x}.jpg"
            state = photo_state(photo)
            shots.append(Shot(f"eval/images/{image_id}", state, variant))
            images.append(EvalImage(image_id, class_index(state, gender, band), state, gender, age, index))
        plans.append(PersonPlan(f"{seed}/eval/{index}", gender, age, tuple(shots)))
    rng.shuffle(images)  # info.csv lists photos in no particular order, as the competition's does
    return plans, images


# --------------------------------------------------------------------------------------------------
# Drawing (worker processes).

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
    return Pose(look.cx + rng.uniform(-14, 14), look.cy + rng.uniform(-12, 12), look.fw * k, look.fh * k,
                math.radians(rng.uniform(-8, 8)))  # fmt: skip


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
    if state != NOT_WEAR:
        colour, pattern = look.masks[variant]
        # Wear: from the bridge of the nose to under the chin. Incorrect: below the nose, or on the chin.
        top = 0.0 if state == WEAR else (0.33 if incorrect_style == 0 else 0.68)
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


def render_person(plan: PersonPlan) -> list[tuple[str, bytes]]:
    """The person's photos as (relpath, encoded bytes); pure function of the plan."""
    rng = _rng(plan.key)
    look = _make_look(rng, plan.gender, plan.age)
    incorrect_style = int(rng.random() < 0.35)
    files = []
    for shot in plan.shots:
        img = look.background.copy()
        _draw_person(img, look, _pose(look, rng), shot.state, shot.variant, incorrect_style)
        img = _light(img, rng)
        files.append((shot.relpath, _encode(img, Path(shot.relpath).suffix.lower(), rng)))
    return files


def _write_person(args: tuple[PersonPlan, str]) -> int:
    plan, root = args
    base = Path(root)
    for relpath, data in render_person(plan):
        path = base / relpath
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        if plan.apple_double:
            (path.parent / f"._{path.name}").write_bytes(APPLE_DOUBLE)
    if plan.folder:
        folder = base / plan.folder
        (folder.parent / f"._{folder.name}").write_bytes(APPLE_DOUBLE)
    return len(plan.shots)


# --------------------------------------------------------------------------------------------------
# Entry point.


def _write_csv(path: Path, header: Iterable[str], rows: Iterable[Iterable[object]]) -> None:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(buf.getvalue(), encoding="utf-8")


def truth_rows(persons: list[TrainPerson], plans: list[PersonPlan]) -> list[tuple[str, str, int, int]]:
    """One row per image whose given label differs from what it shows: (path, kind, true, given)."""
    rows = []
    for person, plan in zip(persons, plans, strict=True):
        if not person.noise:
            continue
        for shot in plan.shots:
            given_state = photo_state(Path(shot.relpath).stem)
            true = class_index(shot.state, person.true_gender, age_band(person.true_age))
            given = class_index(given_state, person.given_gender, age_band(person.given_age))
            if true != given:
                rows.append((shot.relpath, person.noise, true, given))
    return rows


def _check_args(out: Path, people: int, eval_people: int, label_noise: float) -> None:
    if people < 1:
        raise DatasetError(f"--people {people}: the demo needs at least 1 training person")
    if eval_people < 0:
        raise DatasetError(f"--eval-people {eval_people}: must be 0 or more")
    if not 0.0 <= label_noise <= 0.5:
        raise DatasetError(f"--label-noise {label_noise}: give a rate between 0 and 0.5 (e.g. 0.01 for 1%)")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise DatasetError(f"{out} already exists and is not empty; remove it or choose another folder")


def generate(
    out: str | os.PathLike,
    people: int = 300,
    eval_people: int = 200,
    seed: int = 0,
    label_noise: float = 0.0,
    truth: str | os.PathLike | None = None,
    progress: ProgressFn | None = None,
    workers: int | None = None,
) -> Path:
    """Write the demo dataset into the new folder ``out`` and return its resolved path.

    ``label_noise`` is the share of training images given a wrong label (planted as whole persons
    with the wrong gender, persons on the wrong side of an age boundary, and swapped incorrect_mask /
    normal photos). ``truth``, when given, receives a CSV (path, kind, true_label, given_label; labels
    are class indices 0..17) of exactly those images, and ``eval_truth_path(truth)`` the eval set's
    true labels. ``progress(done_images, total_images)`` is called as people are drawn. ``workers``
    processes draw in parallel (default: the CPU count); the bytes do not depend on it.
    """
    out = Path(out).resolve()
    _check_args(out, people, eval_people, label_noise)
    persons = plan_train(people, seed, label_noise)
    plans = train_plans(persons, seed)
    eval_plans, eval_images = plan_eval(eval_people, seed)
    all_plans = plans + eval_plans
    total = sum(len(p.shots) for p in all_plans)

    try:
        _write_dataset(out, persons, all_plans, eval_images, progress, total, workers)
        if truth is not None:
            _write_truth(Path(truth), persons, plans, eval_images)
    except OSError as err:
        raise DatasetError(
            f"{err.filename or out}: could not write the demo dataset ({err.strerror or err}); "
            "check that the folder is writable and the disk has space"
        ) from err
    return out


def _write_dataset(out: Path, persons: list[TrainPerson], plans: list[PersonPlan], eval_images: list[EvalImage],
                   progress: ProgressFn | None, total: int, workers: int | None) -> None:  # fmt: skip
    """Draw everything into a temp folder beside ``out`` and rename it into place at the end."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.partial-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tmp.mkdir()
        _draw_all(plans, tmp, progress, total, workers)
        _write_csv(
            tmp / "train" / "train.csv",
            ("id", "gender", "race", "age", "path"),
            ((p.person_id, GENDERS[p.given_gender], "Asian", p.given_age, p.folder) for p in persons),
        )
        _write_csv(tmp / "eval" / "info.csv", ("ImageID", "ans"), ((im.image_id, 0) for im in eval_images))
        (tmp / "eval" / "images").mkdir(parents=True, exist_ok=True)
        if out.exists():  # an empty folder made beforehand (checked by the caller)
            out.rmdir()
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _write_truth(truth: Path, persons, plans, eval_images: list[EvalImage]) -> None:
    rows = truth_rows(persons, plans)
    lines = [",".join(TRUTH_COLUMNS)] + [f"{p},{k},{t},{g}" for p, k, t, g in rows]
    atomic_write_text(truth, "\n".join(lines) + "\n")
    eval_lines = [",".join(EVAL_TRUTH_COLUMNS)] + [
        f"{im.image_id},{im.label},{im.mask},{im.gender},{im.age},{im.person}" for im in eval_images
    ]
    atomic_write_text(eval_truth_path(truth), "\n".join(eval_lines) + "\n")


def _draw_all(plans: list[PersonPlan], root: Path, progress: ProgressFn | None, total: int, workers: int | None) -> None:
    workers = workers or os.cpu_count() or 1
    jobs = [(plan, str(root)) for plan in plans]
    done = 0
    if progress:
        progress(0, total)
    if workers <= 1 or len(plans) < SMALL_RUN:
        results: Iterable[int] = map(_write_person, jobs)
        for n in results:
            done += n
            if progress:
                progress(done, total)
        return
    # spawn, not fork: the caller may be a threaded server (Streamlit) or hold torch's thread pools.
    with multiprocessing.get_context("spawn").Pool(min(workers, len(plans))) as pool:
        for n in pool.imap_unordered(_write_person, jobs, chunksize=4):
            done += n
            if progress:
                progress(done, total)
