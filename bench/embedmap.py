"""The embedding map at full size: small_cnn features of every training photo of the full-size demo set
(18,900), the 2-D map, and the Review page's figure for it (plotly WebGL), timed in one run.

    .venv/bin/python bench/embedmap.py [--data data/bench-full] [--limit N]

The figure time is building it and serialising it as Streamlit sends it (the browser's own drawing of
WebGL points is not included). Baseline: the same features mapped with PCA (the small-set fallback).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from bench.explain import make_run  # noqa: E402
from core.data import datasets  # noqa: E402
from core.evaluation import embeddings, infer  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(REPO_ROOT / "data" / "bench-full"))
    parser.add_argument("--limit", type=int, default=None)
    args = parser.parse_args()
    paths = datasets.scan(args.data).frame["path"].tolist()[: args.limit]
    with tempfile.TemporaryDirectory(prefix="bench-embedmap-") as tmp:
        member = infer.load_run(make_run(Path(tmp), "small_cnn"), "cpu")
        started = time.perf_counter()
        result = embeddings.compute_embeddings(member, paths)
        features = result.features.astype(np.float16)
        print(f"features: {len(paths)} photos x {features.shape[1]} in {time.perf_counter() - started:.1f} s")
    embeddings.project_2d(np.random.default_rng(0).normal(size=(60, 8)).astype(np.float32), method="umap")
    timings = {}
    for method in ("pca", "umap"):
        started = time.perf_counter()
        xy = embeddings.project_2d(features, method=method)
        timings[method] = time.perf_counter() - started
        print(f"2-D map ({method}): {timings[method]:.1f} s")
    import plotly.express as px

    points = pd.DataFrame({"x": xy[:, 0], "y": xy[:, 1], "class": result.frame["pred"].astype(str)})
    started = time.perf_counter()
    fig = px.scatter(points, x="x", y="y", color="class", render_mode="webgl")
    payload = fig.to_json()
    print(f"page figure: {len(points)} WebGL points built and serialised in {time.perf_counter() - started:.2f} s "
          f"({len(payload) / 2**20:.1f} MiB)")  # fmt: skip
    print(f"UMAP / PCA time: {timings['umap'] / max(timings['pca'], 1e-9):.0f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
