"""core.data.tasks: the one definition of tasks, class names and the 18-class encoding, and the check
that no other module in core/ or app/ defines them again."""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest

from core.data import tasks
from core.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
SCANNED = ("core", "app")
OWNER = ROOT / "core" / "data" / "tasks.py"  # the one module allowed to spell class names and the encoding


# ---- the API ------------------------------------------------------------------------------------------


def test_the_names_are_the_competitions():
    assert tasks.MASK_NAMES == ("Wear", "Incorrect", "Not wear")
    assert tasks.GENDER_NAMES == ("Male", "Female")
    assert tasks.AGE_NAMES == ("<30", "30-59", "60+")
    assert len(tasks.CLASS_NAMES) == 18
    assert tasks.CLASS_NAMES[0] == "Wear · Male · <30"
    assert tasks.CLASS_NAMES[10] == "Incorrect · Female · 30-59"
    assert tasks.CLASS_NAMES[17] == "Not wear · Female · 60+"


def test_encode_and_decode_round_trip():
    assert tasks.encode_class(1, 1, 1) == 10  # COMPETITION.md: mask * 6 + gender * 3 + age
    assert tasks.encode_class(2, 0, 2) == 14
    for label in range(18):
        assert tasks.encode_class(*tasks.decode_class(label)) == label
    labels = np.arange(18)
    parts = [tasks.decode_attribute(labels, name) for name in tasks.ATTRIBUTES]
    assert tasks.encode_attributes(*parts).tolist() == labels.tolist()
    assert [tasks.decode_class(label) for label in labels] == list(zip(*(p.tolist() for p in parts), strict=True))
    assert tasks.attribute_class_index("gender").tolist() == [0, 0, 0, 1, 1, 1] * 3
    with pytest.raises(ValueError, match="unknown attribute"):
        tasks.decode_attribute(labels, "hat")


def test_age_bands_at_their_edges():
    assert [tasks.age_band(a) for a in (18, 29, 30, 59, 60, 80)] == [0, 0, 1, 1, 2, 2]


def test_a_mask_layout_dataset_has_four_tasks():
    found = tasks.dataset_tasks(list(tasks.CLASS_NAMES), has_attributes=True)
    assert [t.name for t in found] == ["class", "mask", "gender", "age"]
    assert [t.num_classes for t in found] == [18, 3, 2, 3]
    assert found[0].is_competition_classes and not found[1].is_competition_classes
    assert [t.attribute for t in found] == [None, "mask", "gender", "age"]
    assert found[0].label == "all 18 classes" and found[1].label == "mask state (3 classes)"
    assert found[2].classes == tasks.GENDER_NAMES


def test_a_class_folder_dataset_has_one_task_over_its_own_classes():
    classes = [f"c{i}" for i in range(10)]
    (only,) = tasks.dataset_tasks(classes, has_attributes=False)
    assert only.name == "class" and only.classes == tuple(classes)
    assert only.label == "all 10 classes"
    assert not only.competition and only.attribute is None


def test_run_task_prefers_the_recorded_classes_then_the_competitions_then_numbers():
    recorded = tasks.run_task("class", ["cat", "dog"], 2)
    assert recorded.classes == ("cat", "dog") and not recorded.competition
    assert tasks.run_task("class", list(tasks.CLASS_NAMES), 18).is_competition_classes
    assert tasks.run_task("class", None, 18).classes == tasks.CLASS_NAMES  # older runs record no classes
    assert tasks.run_task(None, None, 18).name == "class"
    assert tasks.run_task("gender", ["a", "b", "c"], 2).classes == tasks.GENDER_NAMES  # a list that does not fit
    assert tasks.run_task("class", None, 4).classes == ("0", "1", "2", "3")
    assert tasks.run_task("mask", None, 5).classes == ("0", "1", "2", "3", "4")


def test_competition_task_checks_and_task_classes():
    assert tasks.is_competition_task("class", 18) and tasks.is_competition_task(None, 18)
    assert not tasks.is_competition_task("class", 10) and not tasks.is_competition_task("mask", 18)
    assert tasks.task_classes("age") == list(tasks.AGE_NAMES)
    assert tasks.check_task_name("mask") == "mask"
    with pytest.raises(ConfigError, match="task: 'hat' is not a task"):
        tasks.check_task_name("hat")
    with pytest.raises(ConfigError, match="unknown task 'hat'"):
        tasks.task_classes("hat")


# ---- one definition: nothing else in core/ or app/ spells class names or the encoding -------------


NAME_LITERALS = frozenset({*tasks.MASK_NAMES, *tasks.GENDER_NAMES, *tasks.AGE_NAMES, *tasks.CLASS_NAMES})


def _is_int(node: ast.AST, value: int) -> bool:
    return isinstance(node, ast.Constant) and type(node.value) is int and node.value == value


def _encodes(node: ast.AST) -> bool:
    """``mask * 6 + …`` (either side of the ``*``): the 18-class encoding."""
    if not (isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add)):
        return False
    return any(
        isinstance(side, ast.BinOp)
        and isinstance(side.op, ast.Mult)
        and (_is_int(side.left, 6) or _is_int(side.right, 6))
        for side in (node.left, node.right)
    )


def _decodes_gender(node: ast.AST) -> bool:
    """``(label // 3) % 2``: the gender digit of the encoding."""
    return (
        isinstance(node, ast.BinOp)
        and isinstance(node.op, ast.Mod)
        and _is_int(node.right, 2)
        and isinstance(node.left, ast.BinOp)
        and isinstance(node.left.op, ast.FloorDiv)
        and _is_int(node.left.right, 3)
    )


def _task_list(node: ast.AST) -> bool:
    """A literal collection of task names holding every attribute: a second list of tasks."""
    if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
        items = node.elts
    elif isinstance(node, ast.Dict):
        items = [k for k in node.keys if k is not None]
    else:
        return False
    values = [item.value for item in items if isinstance(item, ast.Constant)]
    if len(values) != len(items) or not all(isinstance(v, str) for v in values):
        return False
    return set(tasks.ATTRIBUTES) <= set(values) <= set(tasks.TASK_NAMES)


def class_name_offences(source: str, filename: str) -> list[str]:
    """Where ``source`` spells a class or attribute name, the 18-class encoding or a task list."""
    found = []
    for node in ast.walk(ast.parse(source, filename)):
        where = f"{filename}:{getattr(node, 'lineno', '?')}"
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in NAME_LITERALS:
            found.append(f"{where}: class name {node.value!r} (use core.data.tasks' names)")
        elif _encodes(node):
            found.append(f"{where}: the 18-class encoding '* 6 +' (use tasks.encode_class / encode_attributes)")
        elif _decodes_gender(node):
            found.append(f"{where}: the encoding's gender digit '// 3 % 2' (use tasks.decode_class / decode_attribute)")
        elif _task_list(node):
            found.append(f"{where}: a list of task names (use tasks.TASK_NAMES or DatasetIndex.tasks())")
    return found


def test_the_checker_finds_planted_definitions():
    planted = "\n".join(
        [
            'MASKS = ("Wear", "Incorrect", "Not wear")',  # line 1: three names
            "label = mask * 6 + gender * 3 + band",  # line 2
            "label = 6 * m + g * 3 + a",  # line 3
            "gender = (label // 3) % 2",  # line 4
            'TASKS = ("class", "mask", "gender", "age")',  # line 5
            'LABELS = {"mask": "mask (3)", "gender": "gender (2)", "age": "age (3)"}',  # line 6
            'title = "Wear · Male · <30"',  # line 7
        ]
    )
    found = class_name_offences(planted, "planted.py")
    assert [f.split(":")[1] for f in found].count("1") == 3
    assert {f.split(":")[1] for f in found} == {"1", "2", "3", "4", "5", "6", "7"}
    assert all(f.startswith("planted.py:") for f in found)


def test_the_checker_leaves_file_format_words_and_other_arithmetic_alone():
    innocent = "\n".join(
        [
            'GENDERS = ("male", "female")',  # how folder names spell it: a file format, not a class name
            'PHOTOS = ("mask1", "incorrect_mask", "normal")',
            'COLUMNS = ["path", "mask", "gender", "age_band", "age"]',  # frame columns, not a task list
            "y = r // 6 + r * 2 // 3",
            "w = x * 6",
            '"""Docs may say class = mask * 6 + gender * 3 + age and name "Wear · Male · <30"."""',
        ]
    )
    assert class_name_offences(innocent, "innocent.py") == []


def _scanned_files() -> list[Path]:
    files = [p for folder in SCANNED for p in sorted((ROOT / folder).rglob("*.py"))]
    return [p for p in files if p != OWNER]


def test_class_names_and_the_encoding_are_defined_only_in_tasks():
    files = _scanned_files()
    assert any(p.parts[-3:] == ("core", "data", "datasets.py") for p in files)  # the walk saw core/ …
    assert any(p.parent.name == "app_pages" for p in files)  # … and app/
    offences = [
        offence
        for path in files
        for offence in class_name_offences(path.read_text(encoding="utf-8"), str(path.relative_to(ROOT)))
    ]
    assert offences == [], "defined outside core/data/tasks.py:\n" + "\n".join(offences)
