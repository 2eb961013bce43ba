#!/usr/bin/env python3
"""scikit-learn MiniBatchKMeans on the slice matrix dumped by

    logonet pretrain --kmeans-only --kmeans-subset 1 --clusterers 1 --k-min K --k-max K \
        --dump-slices slices.npy ...

printing inertia (sum of squared distances of every row to its nearest centre, the same definition as the Rust
side) and fit time (wall and process CPU), for the comparison in docs/PRETRAINING.md. Usage:

    python3 scripts/kmeans_sklearn_compare.py slices.npy K [BATCH [EPOCHS [SEEDS]]] [--reference]

BATCH (1024) and EPOCHS (20, scikit-learn's max_iter) are the Rust defaults; SEEDS (1) fits with
random_state 0..SEEDS-1 and prints each. --reference adds the reference's settings (batch_size 20, tol 0,
max_no_improvement 100, n_init 1 instead of its 50): slow.
"""
import sys
import time

import numpy as np
from sklearn.cluster import MiniBatchKMeans


def inertia(x: np.ndarray, c: np.ndarray) -> float:
    """Sum over rows of the squared distance to the nearest centre (GEMM form, row blocks, float64 sums)."""
    c2 = (c.astype(np.float64) ** 2).sum(1)
    total = 0.0
    for s in range(0, x.shape[0], 4096):
        xb = x[s:s + 4096].astype(np.float64)
        d = (xb ** 2).sum(1)[:, None] - 2.0 * xb @ c.T.astype(np.float64) + c2[None, :]
        total += float(np.maximum(d.min(1), 0.0).sum())
    return total


def main() -> None:
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    x = np.ascontiguousarray(np.load(args[0]).astype(np.float32))
    k = int(args[1])
    batch = int(args[2]) if len(args) > 2 else 1024
    epochs = int(args[3]) if len(args) > 3 else 20
    seeds = int(args[4]) if len(args) > 4 else 1
    runs = [("sklearn, our settings", dict(batch_size=batch, max_iter=epochs, n_init=1, max_no_improvement=100))]
    if "--reference" in sys.argv:
        runs.append(("sklearn, reference settings but n_init 1",
                     dict(batch_size=20, max_iter=epochs, n_init=1, max_no_improvement=100, tol=0.0)))
    for name, params in runs:
        for seed in range(seeds):
            t0, c0 = time.perf_counter(), time.process_time()
            km = MiniBatchKMeans(n_clusters=k, init="k-means++", reassignment_ratio=0.0, random_state=seed,
                                 **params)
            km.fit(x)
            wall, cpu = time.perf_counter() - t0, time.process_time() - c0
            print(f"{name}: seed={seed} n={x.shape[0]} d={x.shape[1]} k={k} "
                  f"inertia={inertia(x, km.cluster_centers_):.2f} fit_wall_s={wall:.2f} fit_cpu_s={cpu:.2f} "
                  f"n_steps={km.n_steps_}", flush=True)


if __name__ == "__main__":
    main()
