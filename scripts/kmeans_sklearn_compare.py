#!/usr/bin/env python3
"""Fit scikit-learn MiniBatchKMeans on the slice matrix dumped by
`logonet pretrain --kmeans-only --dump-slices slices.npy ...` and print inertia and time, for comparison with
the Rust clusterers (docs/PRETRAINING.md). Usage:

    python3 scripts/kmeans_sklearn_compare.py slices.npy K [BATCH] [EPOCHS]

Inertia is reported on the same matrix (sum of squared distances to the nearest centre), like the Rust side.
"""
import sys
import time

import numpy as np
from sklearn.cluster import MiniBatchKMeans


def main() -> None:
    x = np.load(sys.argv[1]).astype(np.float32)
    k = int(sys.argv[2])
    batch = int(sys.argv[3]) if len(sys.argv) > 3 else 1024
    epochs = int(sys.argv[4]) if len(sys.argv) > 4 else 20
    for name, params in [
        ("sklearn (our settings)", dict(batch_size=batch, max_iter=epochs, n_init=1, max_no_improvement=100)),
        ("sklearn (reference settings, n_init 1)", dict(batch_size=20, max_iter=epochs, n_init=1,
                                                        max_no_improvement=100, tol=0.0)),
    ]:
        t0 = time.perf_counter()
        km = MiniBatchKMeans(n_clusters=k, init="k-means++", reassignment_ratio=0.0, random_state=42, **params)
        km.fit(x)
        dt = time.perf_counter() - t0
        d = ((x[:, None, :] - km.cluster_centers_[None]) ** 2).sum(-1) if x.shape[0] * k < 2e6 else None
        inertia = float(d.min(1).sum()) if d is not None else float(-km.score(x))
        print(f"{name}: n={x.shape[0]} d={x.shape[1]} k={k} inertia={inertia:.2f} time_s={dt:.2f}")


if __name__ == "__main__":
    main()
