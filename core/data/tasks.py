"""Tasks: the one definition of what a model predicts and what its classes are called.

Every other module asks here: which tasks a dataset supports, each task's class names, the
competition's 18-class encoding and its attribute split, and the label shown to people.

The mask-status competition (``../shared/COMPETITION.md``)::

    class = mask * 6 + gender * 3 + age
    mask:   0 wear, 1 incorrect, 2 not wear;  gender: 0 male, 1 female;  age: 0 <30, 1 30-59, 2 60+

A dataset in that layout supports four tasks: all 18 classes, or one attribute (mask, gender, age).
A class-folder or CSV-manifest dataset supports one task, ``class``, over its own classes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from core.errors import ConfigError

MASK_NAMES = ("Wear", "Incorrect", "Not wear")
MASK_WEAR, MASK_INCORRECT, MASK_NOT_WEAR = 0, 1, 2  # the mask digit's values, in MASK_NAMES order
GENDER_NAMES = ("Male", "Female")
AGE_NAMES = ("<30", "30-59", "60+")
ATTRIBUTES = ("mask", "gender", "age")  # in the order of the encoding's digits
ATTRIBUTE_NAMES: dict[str, tuple[str, ...]] = {"mask": MASK_NAMES, "gender": GENDER_NAMES, "age": AGE_NAMES}
ATTRIBUTE_COLUMNS = {"mask": "mask", "gender": "gender", "age": "age_band"}  # the DatasetIndex frame's columns
ATTRIBUTE_TITLES = {"mask": "mask state", "gender": "gender", "age": "age band"}
PERSON_ATTRIBUTES = ("gender", "age")  # the same on all of a person's photos (the mask state changes)
CLASS_NAMES: tuple[str, ...] = tuple(f"{m} · {g} · {a}" for m in MASK_NAMES for g in GENDER_NAMES for a in AGE_NAMES)
NUM_COMPETITION_CLASSES = len(CLASS_NAMES)

CLASS_TASK = "class"  # every dataset's own classes (the 18 competition classes for the mask layout)
TASK_NAMES = (CLASS_TASK, *ATTRIBUTES)  # every task name a run config may hold


# ---- the competition's encoding -----------------------------------------------------------------------


def encode_class(mask: int, gender: int, age_band: int) -> int:
    return int(mask) * 6 + int(gender) * 3 + int(age_band)


def decode_class(label: int) -> tuple[int, int, int]:
    """(mask, gender, age band) of one 18-class label."""
    label = int(label)
    return label // 6, (label // 3) % 2, label % 3


def age_band(age_years: int) -> int:
    """0: under 30, 1: 30 to 59, 2: 60 and over."""
    age_years = int(age_years)
    return 0 if age_years < 30 else (1 if age_years < 60 else 2)


def decode_attribute(labels: np.ndarray | list[int], attribute: str) -> np.ndarray:
    """The ``attribute`` value (mask 0-2, gender 0-1, age 0-2) of each 18-class label."""
    labels = np.asarray(labels, dtype=np.int64)
    if attribute == "mask":
        return labels // 6
    if attribute == "gender":
        return (labels // 3) % 2
    if attribute == "age":
        return labels % 3
    raise ValueError(f"unknown attribute {attribute!r}; expected one of {ATTRIBUTES}")


def encode_attributes(mask: np.ndarray, gender: np.ndarray, age: np.ndarray) -> np.ndarray:
    """18-class labels from arrays of attribute values."""
    return np.asarray(mask, dtype=np.int64) * 6 + np.asarray(gender, dtype=np.int64) * 3 + np.asarray(age, np.int64)


def attribute_class_index(attribute: str) -> np.ndarray:
    """For each of the 18 classes, its value of ``attribute`` (to sum class probabilities per value)."""
    return decode_attribute(np.arange(NUM_COMPETITION_CLASSES), attribute)


# ---- tasks ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Task:
    """One thing to predict: its name in configs, its class names in label order, and whether the
    competition's 18-class encoding applies (attribute views, person-level scoring)."""

    name: str
    classes: tuple[str, ...]
    competition: bool = False

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def is_competition_classes(self) -> bool:
        """True for the 18 mask × gender × age classes (attribute confusions and errors apply)."""
        return self.competition and self.name == CLASS_TASK

    @property
    def attribute(self) -> str | None:
        """The attribute this task predicts, for the competition's single-attribute tasks."""
        return self.name if self.name in ATTRIBUTES else None

    @property
    def label(self) -> str:
        """What people read: "all 18 classes", "mask state (3 classes)"."""
        if self.name == CLASS_TASK:
            return f"all {self.num_classes} classes"
        return f"{ATTRIBUTE_TITLES.get(self.name, self.name)} ({self.num_classes} classes)"


def competition_task(name: str) -> Task:
    """One of the competition layout's four tasks."""
    if name == CLASS_TASK:
        return Task(CLASS_TASK, CLASS_NAMES, competition=True)
    if name in ATTRIBUTE_NAMES:
        return Task(name, ATTRIBUTE_NAMES[name], competition=True)
    raise ConfigError(f"unknown task {name!r}; choose one of {', '.join(TASK_NAMES)}")


def competition_tasks() -> list[Task]:
    return [competition_task(name) for name in TASK_NAMES]


def dataset_tasks(classes: list[str] | tuple[str, ...], has_attributes: bool) -> list[Task]:
    """The tasks a dataset supports: the competition layout's four, or its own classes alone."""
    if has_attributes:
        return competition_tasks()
    return [Task(CLASS_TASK, tuple(classes))]


def check_task_name(name: object) -> str:
    """A task name a config may hold; ConfigError naming the field otherwise."""
    if name not in TASK_NAMES:
        raise ConfigError(f"task: {name!r} is not a task; choose one of {', '.join(TASK_NAMES)}")
    return str(name)


def run_task(name: str | None, classes: list[str] | tuple[str, ...] | None, num_classes: int) -> Task:
    """The task of a run, from its config's ``task`` and ``classes`` and its predictions' class count.

    A run records its class list; older runs and imported checkpoints may not, and then the
    competition's names are used when the count fits, else numbered classes ("0", "1", …).
    """
    name = name or CLASS_TASK
    if classes and len(classes) == num_classes:
        competition = _is_competition_list(name, tuple(str(c) for c in classes))
        return Task(name, tuple(str(c) for c in classes), competition=competition)
    if name in TASK_NAMES:
        known = competition_task(name)
        if known.num_classes == num_classes:
            return known
    return Task(name, tuple(str(i) for i in range(num_classes)))


def _is_competition_list(name: str, classes: tuple[str, ...]) -> bool:
    try:
        return competition_task(name).classes == classes
    except ConfigError:
        return False


def is_competition_task(task: str | None, num_classes: int) -> bool:
    """True for predictions over the 18 mask × gender × age classes (attribute views and person-level
    scoring apply); a run's task may be unset (older runs), which means its own classes."""
    return task in (None, CLASS_TASK) and num_classes == NUM_COMPETITION_CLASSES


def task_classes(name: str) -> list[str]:
    """Class names of one of the competition layout's tasks (the default for imported checkpoints)."""
    return list(competition_task(name).classes)
