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

from core.data.demo_draw import draw_photos
from core.data.tasks import MASK_INCORRECT, MASK_NOT_WEAR, MASK_WEAR, age_band, encode_class
from core.errors import DatasetError
from core.fsutil import atomic_write_text

PHOTOS = ("mask1", "mask2", "mask3", "mask4", "mask5", "incorrect_mask", "normal")
GENDERS = ("male", "female")  # how folder names and train.csv spell the gender, in the encoding's order
# People in the real training set per (gender, age band); images per class follow from 7 photos each.
REAL_PEOPLE = {(0, 0): 549, (0, 1): 410, (0, 2): 83, (1, 0): 732, (1, 1): 817, (1, 2): 109}
NOISE_KINDS = ("mask_swap", "gender", "age")  # the order they are planted in
TRUTH_COLUMNS = ("path", "kind", "true_label", "given_label")
EVAL_TRUTH_COLUMNS = ("ImageID", "ans", "mask", "gender", "age", "person")
# The first bytes of a real AppleDouble file ("._name"): magic, version, "Mac OS X" filler.
APPLE_DOUBLE = b"\x00\x05\x16\x07\x00\x02\x00\x00Mac OS X        \x00\x02" + bytes(64)
SMALL_RUN = 24  # below this many people a process pool costs more than it saves

ProgressFn = Callable[[int, int], None]


def photo_state(photo: str) -> int:
    return MASK_WEAR if photo.startswith("mask") else MASK_INCORRECT if photo == "incorrect_mask" else MASK_NOT_WEAR


def eval_truth_path(truth: str | os.PathLike) -> Path:
    """Where the eval set's true labels go when a truth file is asked for: ``<stem>_eval.csv`` beside it."""
    truth = Path(truth)
    return truth.with_name(f"{truth.stem}_eval{truth.suffix or '.csv'}")


# --------------------------------------------------------------------------------------------------
# Planning (main process): who is who, file names, quirks and planted label errors.


@dataclass(frozen=True)
class Shot:
    relpath: str  # file path relative to the dataset root
    state: int  # mask state drawn in the picture (MASK_WEAR, MASK_INCORRECT, MASK_NOT_WEAR)
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
        persons[middle] = TrainPerson(
            f"{p.person_id}-1", p.given_gender, p.given_age, p.true_gender, p.true_age, p.noise
        )
    if len(persons) >= 4:
        # The real twin folders differ only by age (003397_female_Asian_20 / _19): reuse the id of the
        # nearest earlier person whose folder name would still differ.
        last = persons[-1]
        for other in reversed(persons[:-2]):
            if "-" in other.person_id:
                continue
            twin = TrainPerson(
                other.person_id, last.given_gender, last.given_age, last.true_gender, last.true_age, last.noise
            )
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
            if person.noise == "mask_swap" and state != MASK_WEAR:
                state = MASK_NOT_WEAR if state == MASK_INCORRECT else MASK_INCORRECT
            shots.append(Shot(f"train/images/{person.folder}/{photo}{ext}", state, variant))
        plans.append(
            PersonPlan(
                f"{seed}/train/{index}",
                person.true_gender,
                person.true_age,
                tuple(shots),
                folder=f"train/images/{person.folder}",
                apple_double=True,
            )
        )
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
            images.append(EvalImage(image_id, encode_class(state, gender, band), state, gender, age, index))
        plans.append(PersonPlan(f"{seed}/eval/{index}", gender, age, tuple(shots)))
    rng.shuffle(images)  # info.csv lists photos in no particular order, as the competition's does
    return plans, images


# --------------------------------------------------------------------------------------------------
# Drawing (worker processes): the pictures themselves are core.data.demo_draw's.


def render_person(plan: PersonPlan) -> list[tuple[str, bytes]]:
    """The person's photos as (relpath, encoded bytes); pure function of the plan."""
    shots = [(shot.state, shot.variant, Path(shot.relpath).suffix.lower()) for shot in plan.shots]
    photos = draw_photos(_rng(plan.key), plan.gender, plan.age, shots)
    return [(shot.relpath, data) for shot, data in zip(plan.shots, photos, strict=True)]


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
            true = encode_class(shot.state, person.true_gender, age_band(person.true_age))
            given = encode_class(given_state, person.given_gender, age_band(person.given_age))
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


def _write_dataset(
    out: Path,
    persons: list[TrainPerson],
    plans: list[PersonPlan],
    eval_images: list[EvalImage],
    progress: ProgressFn | None,
    total: int,
    workers: int | None,
) -> None:
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


def _draw_all(
    plans: list[PersonPlan], root: Path, progress: ProgressFn | None, total: int, workers: int | None
) -> None:
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
