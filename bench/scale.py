"""Benchmark: a 113,400-photo dataset (the full-size demo set six times over) opened with and without
the persisted index (core.data.index_store), against today's full header scan, in one run.

    .venv/bin/python bench/scale.py [--source data/bench-full] [--copies 6] [--root data/bench-scale]

The source set is built once with ``python -m core demo-data data/bench-full --people 2700
--eval-people 1800`` (several minutes); the scaled tree is made of HARD LINKS to its files (no new
image bytes: person folders renamed per copy, eval images prefixed), built once and reused. Page
cache warm for every figure (each is a second pass over the same files). Goals on this 2-core
machine: full first scan (with the index build) <= 10 s, reopening <= 1 s, a gallery page and a
class filter that cost the same on 18,900 and 113,400 photos.

Prints: today's full scan (``scan(use_index=False)``); the first scan with the index build; a reopen
(index hit, as ``python -m core scan`` and the pages do: ``roots.open_dataset``); a reopen after
touching one person folder (incremental: 7 headers); the index's memory (``memory_bytes``) and its
size on disk; what a page's ``st.cache_data`` copy of the index costs per rerun (a pickle round trip);
a gallery page (24 rows of one class) by ``class_rows`` and by a boolean filter, on both sizes.
"""

from __future__ import annotations

import argparse
import os
import pickle
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from core.data import datasets, index_store, roots  # noqa: E402

PAGE = 24


def ensure_source(source: Path, people: int, eval_people: int) -> None:
    if (source / "train" / "images").is_dir():
        return
    print(f"building the demo set in {source} (minutes, done once)...", flush=True)
    subprocess.run(
        [
            sys.executable,
            "-m",
            "core",
            "demo-data",
            str(source),
            "--people",
            str(people),
            "--eval-people",
            str(eval_people),
        ],
        cwd=REPO_ROOT,
        check=True,
    )


def build_scaled(source: Path, root: Path, copies: int) -> None:
    """``copies`` copies of the source's train/ and eval/ as hard links (renamed so every id is unique)."""
    if (root / ".complete").is_file():
        return
    print(f"linking {copies} copies of {source} into {root}...", flush=True)
    src_images, src_eval = source / "train" / "images", source / "eval"
    train_rows = (source / "train" / "train.csv").read_text().splitlines()
    info_rows = (src_eval / "info.csv").read_text().splitlines()
    out_train, out_eval = [train_rows[0]], [info_rows[0]]
    (root / "eval" / "images").mkdir(parents=True, exist_ok=True)
    for copy in range(copies):
        for person in sorted(os.listdir(src_images)):
            if person.startswith("."):
                continue
            target = root / "train" / "images" / f"{copy}{person}"
            target.mkdir(parents=True, exist_ok=True)
            for name in os.listdir(src_images / person):
                if not (target / name).exists():
                    os.link(src_images / person / name, target / name)
        out_train += [_renamed_train_row(row, copy) for row in train_rows[1:]]
        for row in info_rows[1:]:
            image_id, rest = row.split(",", 1)
            new_id = f"{copy}_{image_id}"
            if not (root / "eval" / "images" / new_id).exists():
                os.link(src_eval / "images" / image_id, root / "eval" / "images" / new_id)
            out_eval.append(f"{new_id},{rest}")
    (root / "train" / "train.csv").write_text("\n".join(out_train) + "\n")
    (root / "eval" / "info.csv").write_text("\n".join(out_eval) + "\n")
    (root / ".complete").write_text("")


def _renamed_train_row(row: str, copy: int) -> str:
    """train.csv's id,gender,race,age,path with the copy's prefix on the id and the folder."""
    fields = row.split(",")
    fields[0], fields[-1] = f"{copy}{fields[0]}", f"{copy}{fields[-1]}"
    return ",".join(fields)


def timed(fn):
    start = time.perf_counter()
    value = fn()
    return value, time.perf_counter() - start


def timed_cpu(fn):
    """(value, wall seconds, CPU seconds of this process): the machine is shared, CPU time varies less."""
    start, cpu = time.perf_counter(), time.process_time()
    value = fn()
    return value, time.perf_counter() - start, time.process_time() - cpu


def gallery_costs(index: datasets.DatasetIndex, repeats: int = 200) -> tuple[float, float]:
    """Mean ms of one gallery page of one class: by class_rows, and by a boolean filter."""
    label = int(index.frame["label"].mode()[0])
    index.class_rows(label, 0, PAGE)  # the grouping is made once per index (when it is loaded)
    _rows, fast = timed(lambda: [index.class_rows(label, 400, 400 + PAGE) for _ in range(repeats)])
    frame = index.frame
    _rows, slow = timed(lambda: [frame[frame["label"] == label].iloc[400 : 400 + PAGE] for _ in range(repeats)])
    return fast / repeats * 1000, slow / repeats * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, default=REPO_ROOT / "data" / "bench-full")
    parser.add_argument("--root", type=Path, default=REPO_ROOT / "data" / "bench-scale")
    parser.add_argument("--copies", type=int, default=6)
    parser.add_argument("--people", type=int, default=2700, help="people in the source set, if it is built now")
    parser.add_argument("--eval-people", type=int, default=1800)
    args = parser.parse_args()

    ensure_source(args.source, args.people, args.eval_people)
    build_scaled(args.source, args.root, args.copies)
    root = args.root.resolve()
    print(f"load average before: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    datasets.scan(root)  # page cache warm for every figure below

    with tempfile.TemporaryDirectory() as index_dir:
        full, t_full, c_full = timed_cpu(lambda: datasets.scan(root))
        n = len(full.frame)
        n_eval = len(full.eval.frame) if full.eval is not None else 0
        print(f"dataset:        {n:,} photos, {full.frame['group'].nunique():,} person folders, {n_eval:,} eval rows")
        print(f"full scan:      {t_full:6.2f} s   (CPU {c_full:.2f} s; today's path, scan(use_index=False))")
        _first, t_first, c_first = timed_cpu(lambda: datasets.scan(root, use_index=True, index_dir=index_dir))
        print(
            f"first scan:     {t_first:6.2f} s   (CPU {c_first:.2f} s; with the index build; goal <= 10 s: "
            f"{'met' if t_first <= 10 else 'NOT met'})"
        )
        reopens = [timed_cpu(lambda: roots.open_dataset(root, [root.parent], index_dir=index_dir)) for _ in range(3)]
        reopened = reopens[0][0]
        assert isinstance(reopened, datasets.DatasetIndex), reopened
        t_reopen = min(r[1] for r in reopens)
        walls = ", ".join(f"{r[1]:.2f}" for r in reopens)
        cpus = ", ".join(f"{r[2]:.2f}" for r in reopens)
        print(
            f"reopen:         {t_reopen:6.2f} s   (index hit, roots.open_dataset; 3 runs {walls} s, CPU {cpus} s; "
            f"goal <= 1 s: {'met' if t_reopen <= 1 else 'NOT met'}; {t_full / t_reopen:.0f}x faster than the full scan)"
        )
        person = root / "train" / "images" / reopened.frame["group"].iloc[n // 2]
        os.utime(person)
        _inc, t_inc, c_inc = timed_cpu(lambda: datasets.scan(root, use_index=True, index_dir=index_dir))
        print(
            f"after a change: {t_inc:6.2f} s   (CPU {c_inc:.2f} s; one person folder touched: it alone is read again)"
        )
        disk = sum(f.stat().st_size for f in index_store.IndexStore(index_dir).files_for(root) if f.exists())
        print(
            f"index memory:   {reopened.memory_bytes() / 2**20:6.1f} MiB in the server per open dataset "
            f"(frame {reopened.frame.memory_usage(deep=True).sum() / 2**20:.1f} MiB); "
            f"{disk / 2**20:.1f} MiB on disk"
        )
        _copy, t_copy = timed(lambda: pickle.loads(pickle.dumps(reopened)))
        print(
            f"cache copy:     {t_copy:6.2f} s   (what st.cache_data's copy of the index costs per rerun; "
            "st.cache_resource shares it)"
        )

    small = datasets.scan(args.source.resolve())
    for index in (small, reopened):
        fast, slow = gallery_costs(index)
        print(f"gallery page ({len(index.frame):,} photos): class_rows {fast:.3f} ms, boolean filter {slow:.3f} ms")


if __name__ == "__main__":
    main()
