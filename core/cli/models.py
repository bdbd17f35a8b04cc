"""``python -m core models``: the backbones this workbench builds, with facts for choosing one.

python -m core models                                   # every backbone: source, input size, top-1, cached
python -m core models --filter convnext --source timm   # a slice of the listing
python -m core models --filter resnet18 --facts --size 128 96   # + parameters and GFLOPs at that size
python -m core models --filter resnet18 --source torchvision --measure   # + images/s measured here (cached)
python -m core models --filter resnet18 --preprocessing --json          # + the weights' own input pipeline
"""

from __future__ import annotations

import argparse
import json

MAX_DETAILED = 20  # --facts/--measure build each listed model: refuse a listing that would take minutes


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Register ``models``."""
    p = sub.add_parser(
        "models",
        help="list the backbones (torchvision, timm, small_cnn) with facts for choosing one",
        description="List backbones usable as --model: small_cnn, torchvision names, timm:<name>. --facts, "
        "--measure and --preprocessing add per-model details (narrow the list with --filter first).",
    )
    p.add_argument("--json", action="store_true", help="print a JSON list instead of a table")
    p.add_argument("--filter", default="", metavar="TEXT", help="only names containing TEXT (case-insensitive)")
    p.add_argument(
        "--source",
        action="append",
        choices=("builtin", "torchvision", "timm"),
        help="only this source (repeatable; default all)",
    )
    p.add_argument("--facts", action="store_true", help="also parameters and GFLOPs (builds each model)")
    p.add_argument("--measure", action="store_true", help="also training/inference images/s on this machine")
    p.add_argument("--preprocessing", action="store_true", help="also the pretrained weights' input pipeline")
    p.add_argument(
        "--size",
        type=int,
        nargs=2,
        default=[224, 224],
        metavar=("H", "W"),
        help="image size for --facts and --measure (default 224 224)",
    )
    p.add_argument("--classes", type=int, default=1000, help="head size for --facts (default 1000, as ImageNet)")
    p.add_argument("--batch-size", type=int, default=16, dest="batch_size", help="batch for --measure (default 16)")
    p.set_defaults(func=run_models)


def run_models(args: argparse.Namespace) -> int:
    from core.errors import ConfigError
    from core.training import zoo

    rows = zoo.list_backbones(args.filter, tuple(args.source or zoo.SOURCES))
    detailed = args.facts or args.measure or args.preprocessing
    if detailed and len(rows) > MAX_DETAILED:
        raise ConfigError(
            f"--filter {args.filter!r} matches {len(rows)} backbones; details build each one: "
            f"narrow it to at most {MAX_DETAILED} (e.g. --filter resnet18 --source torchvision)"
        )
    for i, row in enumerate(rows):
        if args.facts:
            rows[i] = row = zoo.model_facts(row["name"], args.size, args.classes)
        if args.measure:
            speed = zoo.measure_speed(row["name"], row.get("img_size") or args.size, args.batch_size)
            row.update({k: speed[k] for k in ("train_images_per_s", "infer_images_per_s")})
        if args.preprocessing:
            row["preprocessing"] = zoo.preprocessing(row["name"])
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        print(format_table(rows))
    return 0


def format_table(rows: list[dict]) -> str:
    if not rows:
        return "no backbone matches"
    columns = [("name", "name"), ("source", "source"), ("input", "input_size"), ("fixed", "fixed_size"),
               ("top-1", "imagenet_top1"), ("weights", "cached")]  # fmt: skip
    if "params" in rows[0]:
        columns += [("params M", "params"), ("GFLOPs", "gflops")]
    if "train_images_per_s" in rows[0]:
        columns += [("train img/s", "train_images_per_s"), ("infer img/s", "infer_images_per_s")]
    cells = [[_cell(key, row) for _, key in columns] for row in rows]
    widths = [max(len(title), *(len(c[i]) for c in cells)) for i, (title, _) in enumerate(columns)]
    lines = ["  ".join(t.ljust(w) for (t, _), w in zip(columns, widths, strict=True))]
    lines += ["  ".join(c.ljust(w) for c, w in zip(cell, widths, strict=True)) for cell in cells]
    lines.append(f"{len(rows)} backbones; use a name as --model (timm names with the timm: prefix)")
    return "\n".join(lines)


def _cell(key: str, row: dict) -> str:
    value = row.get(key)
    if key == "cached":
        return "cached" if value else ("download" if row.get("pretrained") else "none")
    if key == "params" and value is not None:
        return f"{value / 1e6:.1f}"
    if isinstance(value, list):
        return "x".join(str(v) for v in value)
    return "-" if value is None else str(value)
