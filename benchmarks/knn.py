"""Benchmark of the k-nearest stage: geo.index.SpatialIndex against BallTree and brute-force numpy.

Needs (queries, one category each) and offers (indexed, 1-3 categories each) are drawn from a few
dozen Gaussian clusters in central Russia. For every size the script times aidmatch (build, query,
total), sklearn's BallTree with the haversine metric built per category, and brute-force numpy
haversine per category (small sizes only), checks on a sample of queries that all methods give the
same k distances, and prints a table of times and ratios.

    .venv/bin/python benchmarks/knn.py --sizes 10000 100000 1000000 --plot benchmarks/knn.png
    .venv/bin/python benchmarks/knn.py --quick
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from common import fmt, machine_info, save_loglog

from geo.index import SpatialIndex
from geo.sphere import EARTH_RADIUS_KM

N_CATEGORIES = 12
K = 5
N_CLUSTERS = 40
KM_PER_DEG = np.pi * EARTH_RADIUS_KM / 180.0
TOLERANCE_KM = 1e-6


# --------------------------------------------------------------------------------------------- data


def make_data(n: int, seed: int) -> dict[str, np.ndarray]:
    """n needs and n offers around N_CLUSTERS Gaussian clusters (sigma 5-20 km), lat 54-57, lon 37-45."""
    rng = np.random.default_rng(seed)
    c_lat = rng.uniform(54.0, 57.0, N_CLUSTERS)
    c_lon = rng.uniform(37.0, 45.0, N_CLUSTERS)
    c_sigma_km = rng.uniform(5.0, 20.0, N_CLUSTERS)
    weights = rng.pareto(1.5, N_CLUSTERS) + 1.0
    weights /= weights.sum()

    def points(m: int) -> tuple[np.ndarray, np.ndarray]:
        c = rng.choice(N_CLUSTERS, size=m, p=weights)
        sig = c_sigma_km[c]
        lat = c_lat[c] + rng.normal(0.0, 1.0, m) * sig / KM_PER_DEG
        lon = c_lon[c] + rng.normal(0.0, 1.0, m) * sig / (KM_PER_DEG * np.cos(np.radians(c_lat[c])))
        return lat, lon

    need_lat, need_lon = points(n)
    offer_lat, offer_lon = points(n)
    cat_p = 1.0 / np.arange(1, N_CATEGORIES + 1) ** 0.5  # some categories are more common
    cat_p /= cat_p.sum()
    need_cat = rng.choice(N_CATEGORIES, size=n, p=cat_p).astype(np.int64)
    n_cats = rng.integers(1, 4, size=n)
    mask = np.zeros(n, dtype=np.int64)
    for j in range(3):
        picked = rng.choice(N_CATEGORIES, size=n, p=cat_p).astype(np.int64)
        mask |= np.where(j < n_cats, np.int64(1) << picked, 0)
    # Duplicate picks collapse, so an offer has 1-3 distinct categories.
    return {
        "need_lat": need_lat,
        "need_lon": need_lon,
        "need_cat": need_cat,
        "offer_ids": np.arange(n, dtype=np.int64),
        "offer_lat": offer_lat,
        "offer_lon": offer_lon,
        "offer_mask": mask,
    }


# ----------------------------------------------------------------------------------------- methods


def run_aidmatch(d: dict[str, np.ndarray]) -> tuple[float, float, np.ndarray]:
    t0 = time.perf_counter()
    index = SpatialIndex(d["offer_ids"], d["offer_lat"], d["offer_lon"], d["offer_mask"])
    t1 = time.perf_counter()
    _, dist = index.knn(d["need_lat"], d["need_lon"], d["need_cat"], K)
    t2 = time.perf_counter()
    return t1 - t0, t2 - t1, dist


def run_balltree(d: dict[str, np.ndarray]) -> tuple[float, float, np.ndarray]:
    from sklearn.neighbors import BallTree

    need_rad = np.radians(np.column_stack([d["need_lat"], d["need_lon"]]))
    offer_rad = np.radians(np.column_stack([d["offer_lat"], d["offer_lon"]]))
    dist = np.full((len(need_rad), K), np.inf)
    build = query = 0.0
    for c in range(N_CATEGORIES):
        q = np.flatnonzero(d["need_cat"] == c)
        rows = np.flatnonzero((d["offer_mask"] >> c) & 1)
        if not len(q) or len(rows) < K:
            continue
        t0 = time.perf_counter()
        tree = BallTree(offer_rad[rows], metric="haversine")
        t1 = time.perf_counter()
        dd, _ = tree.query(need_rad[q], k=K)
        t2 = time.perf_counter()
        dist[q] = dd * EARTH_RADIUS_KM
        build += t1 - t0
        query += t2 - t1
    return build, query, dist


def haversine_km(lat1: np.ndarray, lon1: np.ndarray, lat2: np.ndarray, lon2: np.ndarray) -> np.ndarray:
    """Great-circle km between (n,1) and (1,m) radian arrays, shape (n, m)."""
    s = np.sin((lat2 - lat1) * 0.5) ** 2 + np.cos(lat1) * np.cos(lat2) * np.sin((lon2 - lon1) * 0.5) ** 2
    return 2.0 * EARTH_RADIUS_KM * np.arcsin(np.sqrt(np.minimum(s, 1.0)))


def brute_knn(d: dict[str, np.ndarray], queries: np.ndarray, pairs_per_chunk: int = 4_000_000) -> np.ndarray:
    """k smallest haversine distances (km, sorted) for the given need rows, per category, in chunks."""
    nlat, nlon = np.radians(d["need_lat"]), np.radians(d["need_lon"])
    olat, olon = np.radians(d["offer_lat"]), np.radians(d["offer_lon"])
    dist = np.full((len(queries), K), np.inf)
    cats = d["need_cat"][queries]
    for c in np.unique(cats).tolist():
        qpos = np.flatnonzero(cats == c)
        rows = np.flatnonzero((d["offer_mask"] >> c) & 1)
        if len(rows) < K:
            continue
        la2, lo2 = olat[rows][None, :], olon[rows][None, :]
        step = max(1, pairs_per_chunk // len(rows))
        for s in range(0, len(qpos), step):
            qp = qpos[s : s + step]
            qi = queries[qp]
            dd = haversine_km(nlat[qi, None], nlon[qi, None], la2, lo2)
            part = np.partition(dd, K - 1, axis=1)[:, :K]
            dist[qp] = np.sort(part, axis=1)
    return dist


def run_brute(d: dict[str, np.ndarray]) -> tuple[float, float, np.ndarray]:
    t0 = time.perf_counter()
    dist = brute_knn(d, np.arange(len(d["need_cat"])))
    return 0.0, time.perf_counter() - t0, dist


def best_of(fn: Callable[[dict[str, np.ndarray]], Any], d: dict[str, np.ndarray], repeat: int) -> Any:
    runs = [fn(d) for _ in range(repeat)]
    return min(runs, key=lambda r: r[0] + r[1])


# ------------------------------------------------------------------------------------------- report


def plot(rows: list[dict[str, Any]], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 5))
    for key, label, style in (
        ("aid_total", "aidmatch SpatialIndex (build + query)", "o-"),
        ("aid_query", "aidmatch query only", "o--"),
        ("bt_total", "sklearn BallTree haversine (build + query)", "s-"),
        ("brute_total", "brute-force numpy haversine", "^-"),
    ):
        pts = [(r["n"], r[key]) for r in rows if r.get(key) is not None]
        if pts:
            xs, ys = zip(*pts, strict=True)
            ax.plot(xs, ys, style, label=label)
    save_loglog(fig, ax, path, f"k-nearest stage, k={K}, {N_CATEGORIES} categories")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    p.add_argument("--quick", action="store_true", help="10k only")
    p.add_argument("--brute-max", type=int, default=20_000, help="largest n for the full brute-force run")
    p.add_argument("--balltree-max", type=int, default=10**9, help="largest n for the BallTree run")
    p.add_argument("--check", type=int, default=500, help="queries sampled for the correctness check")
    p.add_argument("--repeat", type=int, default=1, help="runs per method and size; the best is kept")
    p.add_argument("--seed", type=int, default=20260101)
    p.add_argument("--plot", metavar="PATH", help="write a log-log PNG of time vs size")
    args = p.parse_args(argv)
    sizes = [10_000] if args.quick else args.sizes

    print("k-nearest stage benchmark")
    print(f"k={K}, categories={N_CATEGORIES}, clusters={N_CLUSTERS}, seed={args.seed}, repeat={args.repeat}")
    for line in machine_info(
        cores_note="aidmatch's cKDTree queries use workers=-1; BallTree and brute use one core", with_sklearn=True
    ):
        print(line)
    print()

    rows: list[dict[str, Any]] = []
    all_ok = True
    for n in sizes:
        d = make_data(n, args.seed)
        aid_b, aid_q, aid_d = best_of(run_aidmatch, d, args.repeat)
        row: dict[str, Any] = {"n": n, "aid_build": aid_b, "aid_query": aid_q, "aid_total": aid_b + aid_q}
        notes = []
        bt_d = brute_d = None
        if n <= args.balltree_max:
            bt_b, bt_q, bt_d = best_of(run_balltree, d, args.repeat)
            row["bt_total"] = bt_b + bt_q
        else:
            notes.append(f"BallTree skipped (n > --balltree-max {args.balltree_max})")
        if n <= args.brute_max:
            _, br_q, brute_d = best_of(run_brute, d, args.repeat)
            row["brute_total"] = br_q
        else:
            notes.append(f"full brute force skipped (n > --brute-max {args.brute_max})")

        # Correctness: a sample of queries checked against brute force (always) and BallTree.
        rng = np.random.default_rng(args.seed + n)
        sample = np.sort(rng.choice(n, size=min(args.check, n), replace=False))
        ref = brute_d[sample] if brute_d is not None else brute_knn(d, sample)
        err_brute = float(np.max(np.abs(aid_d[sample] - ref)))
        checks = [f"max |aidmatch - brute| = {err_brute:.2e} km"]
        ok = err_brute <= TOLERANCE_KM
        if bt_d is not None:
            err_bt = float(np.max(np.abs(aid_d[sample] - bt_d[sample])))
            checks.append(f"max |aidmatch - BallTree| = {err_bt:.2e} km")
            ok = ok and err_bt <= TOLERANCE_KM
        all_ok = all_ok and ok
        row["check"] = f"n={n}: {len(sample)} sampled queries, " + ", ".join(checks) + (" OK" if ok else " FAIL")
        row["notes"] = notes
        rows.append(row)
        print(row["check"], *notes, sep="\n  ", flush=True)

    print()
    header = (
        f"{'n':>9} {'aid build':>9} {'aid query':>9} {'aid total':>9} {'BallTree':>9} {'brute':>9} "
        f"{'BT/aid':>7} {'brute/aid':>9}"
    )
    print("times in seconds (wall); ratios = baseline total / aidmatch total")
    print(header)
    print("-" * len(header))
    for r in rows:
        bt, br = r.get("bt_total"), r.get("brute_total")
        print(
            f"{r['n']:>9} {fmt(r['aid_build'])} {fmt(r['aid_query'])} {fmt(r['aid_total'])} {fmt(bt)} {fmt(br)} "
            f"{fmt(bt / r['aid_total'] if bt else None, '7.1f')} {fmt(br / r['aid_total'] if br else None, '9.1f')}"
        )
    print()
    print(f"correctness (tolerance {TOLERANCE_KM:g} km): {'all OK' if all_ok else 'FAILED'}")
    if args.plot:
        plot(rows, args.plot)
    return 0 if all_ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
