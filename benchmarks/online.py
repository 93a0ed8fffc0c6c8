"""Online intake lookup: the k nearest capable offers for ONE new need against m live offers.

In one run, for the same random queries (one need at a time, as the intake path asks):

- aidmatch: `matching.nearest_capable(index, offers, remaining, lat, lon, category, k=5)` on a
  live `SpatialIndex` (per-category cKDTree on unit vectors);
- brute: numpy haversine from the need to every offer, masked by category, capacity and radius,
  `argpartition` for the k nearest (the obvious vectorised baseline);
- balltree: `sklearn.neighbors.BallTree(metric="haversine")` per category, queried for 4k
  neighbours and filtered like aidmatch (a common library choice; needs the bench extra).

Every aidmatch answer is checked against brute force. Prints median / p90 / p99 microseconds.

    .venv/bin/python benchmarks/online.py --offers 1000000 --queries 2000
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from common import N_CATEGORIES, machine_info

import matching
from geo.sphere import EARTH_RADIUS_KM
from matching.candidates import offer_index


def brute(offers: matching.Offers, remaining: np.ndarray, lat: float, lon: float, c: int, k: int) -> np.ndarray:
    lat1, lon1 = np.radians(lat), np.radians(lon)
    lat2, lon2 = np.radians(offers.lat), np.radians(offers.lon)
    h = np.sin((lat2 - lat1) / 2) ** 2 + np.cos(lat1) * np.cos(lat2) * np.sin((lon2 - lon1) / 2) ** 2
    d = 2 * EARTH_RADIUS_KM * np.arcsin(np.sqrt(np.clip(h, 0, 1)))
    ok = ((offers.category_mask >> c) & 1).astype(bool) & (remaining > 0) & (d <= offers.radius_km)
    d = np.where(ok, d, np.inf)
    part = np.argpartition(d, k)[:k]
    part = part[np.argsort(d[part], kind="stable")]
    return d[part]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--offers", type=int, default=1_000_000)
    p.add_argument("--queries", type=int, default=2000)
    p.add_argument("--k", type=int, default=5)
    p.add_argument("--seed", type=int, default=20260101)
    p.add_argument("--no-balltree", action="store_true")
    args = p.parse_args(argv)
    print("online nearest-capable lookup benchmark")
    for line in machine_info():
        print(line)
    rng = np.random.default_rng(args.seed)
    m = args.offers
    offers = matching.Offers(
        lat=rng.uniform(54.0, 57.0, m),
        lon=rng.uniform(37.0, 45.0, m),
        category_mask=(np.int64(1) << rng.integers(0, N_CATEGORIES, m))
        | (np.int64(1) << rng.integers(0, N_CATEGORIES, m)),
        capacity=rng.integers(1, 4, m),
        radius_km=rng.uniform(10.0, 80.0, m),
    )
    remaining = np.where(rng.random(m) < 0.3, 0, offers.capacity)  # 30 % of helpers are busy
    t = time.perf_counter()
    index = offer_index(offers)
    build_s = time.perf_counter() - t
    q_lat = rng.uniform(54.0, 57.0, args.queries)
    q_lon = rng.uniform(37.0, 45.0, args.queries)
    q_cat = rng.integers(0, N_CATEGORIES, args.queries)
    k = args.k

    # Each method in its own loop: interleaving a 1M-element brute-force pass between two lookups
    # would evict the trees from the CPU caches and time that instead.
    aid_us, brute_us, wrong = [], [], 0
    answers = []
    for i in range(args.queries):
        t = time.perf_counter()
        _, d = matching.nearest_capable(index, offers, remaining, q_lat[i], q_lon[i], int(q_cat[i]), k=k)
        aid_us.append((time.perf_counter() - t) * 1e6)
        answers.append(d[0])
    for i in range(args.queries):
        t = time.perf_counter()
        want = brute(offers, remaining, q_lat[i], q_lon[i], int(q_cat[i]), k)
        brute_us.append((time.perf_counter() - t) * 1e6)
        if not np.allclose(answers[i], want, atol=1e-6, equal_nan=False):
            wrong += 1

    ball_us: list[float] = []
    if not args.no_balltree:
        from sklearn.neighbors import BallTree

        trees = {}
        for c in range(N_CATEGORIES):
            rows = np.flatnonzero((offers.category_mask >> c) & 1)
            trees[c] = (
                BallTree(np.radians(np.column_stack([offers.lat[rows], offers.lon[rows]])), metric="haversine"),
                rows,
            )
        for i in range(args.queries):
            t = time.perf_counter()
            tree, rows = trees[int(q_cat[i])]
            dist, idx = tree.query(np.radians([[q_lat[i], q_lon[i]]]), k=4 * k)
            cand = rows[idx[0]]
            d_km = dist[0] * EARTH_RADIUS_KM
            ok = (remaining[cand] > 0) & (d_km <= offers.radius_km[cand])
            _ = cand[ok][:k]
            ball_us.append((time.perf_counter() - t) * 1e6)

    def stats(xs: list[float]) -> str:
        a = np.asarray(xs)
        return f"median {np.median(a):9.1f}  p90 {np.percentile(a, 90):9.1f}  p99 {np.percentile(a, 99):9.1f}"

    print(f"\n{m} offers, {N_CATEGORIES} categories, 1-2 per offer, 30 % at capacity, k = {k}, {args.queries} queries")
    print(f"index build: {build_s:.2f} s")
    print(f"aidmatch  us: {stats(aid_us)}")
    print(
        f"brute     us: {stats(brute_us)}   ratio brute/aidmatch (median) {np.median(brute_us) / np.median(aid_us):.1f}"
    )
    if ball_us:
        print(
            f"balltree  us: {stats(ball_us)}   ratio balltree/aidmatch (median) {np.median(ball_us) / np.median(aid_us):.1f}"
            "  (no wider retry when fewer than k qualify)"
        )
    print(f"check against brute force: {args.queries - wrong}/{args.queries} identical")
    return 1 if wrong else 0


if __name__ == "__main__":
    raise SystemExit(main())
