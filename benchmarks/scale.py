"""End-to-end scale of the batch matcher: arrays in -> assignment out at 10k, 100k, 1M needs x offers.

For each size the script draws n needs and n offers (default layout `region`: 40 Gaussian clusters
in central Russia as in knn.py; quantity and capacity 1-3, 12 categories, offer radius 50 km), then
times, separately, building `matching.Needs`/`matching.Offers` from the arrays (validation), the
candidate stage alone (`matching.batch.candidate_graph(needs, offers)`: every feasible pair up to
16 M of them, else the spread graph, as `match` builds it), and `matching.match(needs, offers)`
(which builds its own candidates; --time-budget-s passes match's time_budget_s, as the service's
batch does with 40). End to end = columns + match. The assignment is checked
(category, radius, capacity, quantity). Sizes run in increasing order; once a size's match takes
longer than --stop-after seconds, larger sizes are skipped (a run cannot be interrupted safely, so
the limit only stops the next one).

    .venv/bin/python benchmarks/scale.py --sizes 10000 100000 1000000 --plot benchmarks/scale.png
    .venv/bin/python benchmarks/scale.py --quick
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from common import LAYOUTS, N_CATEGORIES, check_assignment, fmt, machine_info, make_instance, save_loglog, to_matching

import matching
from matching.batch import candidate_graph

TARGET_S = 5.0  # issue 3: 1M x 1M end to end on this 2-core machine


def run_one(layout: str, n: int, seed: int, time_budget_s: float | None = None) -> dict[str, Any]:
    d = make_instance(layout, n, seed)
    t0 = time.perf_counter()
    needs, offers = to_matching(d)
    t1 = time.perf_counter()
    edges, _ = candidate_graph(needs, offers)
    t2 = time.perf_counter()
    n_edges = len(edges.need)
    del edges
    t3 = time.perf_counter()
    res = matching.match(needs, offers, time_budget_s=time_budget_s)
    t4 = time.perf_counter()
    bad = check_assignment(d, res.need_index, res.offer_index, res.quantity)
    if not np.array_equal(np.bincount(res.need_index, weights=res.quantity, minlength=n), res.served):
        bad.append("served disagrees with the rows")
    need_units = int(d["need_qty"].sum())
    return {
        "n": n,
        "cols_t": t1 - t0,
        "cand_t": t2 - t1,
        "match_t": t4 - t3,
        "e2e_t": (t1 - t0) + (t4 - t3),
        "edges": n_edges,
        "need_units": need_units,
        "offer_units": int(d["offer_cap"].sum()),
        "served": res.served_units,
        "served_pct": 100.0 * res.served_units / need_units,
        "objective": float(res.objective),
        "complete": res.complete,
        "gap_bound": res.gap_bound,
        "bad": bad,
    }


def plot(rows: list[dict[str, Any]], path: str, layout: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 5))
    for key, label, style in (
        ("e2e_t", "end to end (columns + match)", "o-"),
        ("match_t", "matching.match", "s--"),
        ("cand_t", "candidate graph alone", "^:"),
    ):
        xs, ys = zip(*[(r["n"], r[key]) for r in rows], strict=True)
        ax.plot(xs, ys, style, label=label)
    ax.axhline(TARGET_S, color="grey", lw=0.8, ls="--", label=f"target {TARGET_S:g} s at 1M")
    save_loglog(fig, ax, path, f"batch matcher end to end, layout {layout}, {N_CATEGORIES} categories, 50 km")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    p.add_argument("--max-size", type=int, default=10**9, help="skip sizes above this")
    p.add_argument("--stop-after", type=float, default=120.0, help="skip larger sizes once a match took this long")
    p.add_argument("--layout", choices=sorted(LAYOUTS), default="region")
    p.add_argument("--quick", action="store_true", help="10k only")
    p.add_argument("--seed", type=int, default=20260101)
    p.add_argument("--plot", metavar="PATH", help="write a log-log PNG of time vs size")
    p.add_argument("--time-budget-s", type=float, help="match's time_budget_s (the service passes 40)")
    args = p.parse_args(argv)
    sizes = [10_000] if args.quick else sorted(s for s in args.sizes if s <= args.max_size)

    print("batch matcher end-to-end scale benchmark")
    print(f"layout {args.layout}: {LAYOUTS[args.layout]}")
    print(f"categories={N_CATEGORIES}, radius=50 km, quantity/capacity 1-3, seed={args.seed}")
    for line in machine_info():
        print(line)
    print()

    rows: list[dict[str, Any]] = []
    for i, n in enumerate(sizes):
        r = run_one(args.layout, n, args.seed, args.time_budget_s)
        rows.append(r)
        ok = "OK" if not r["bad"] else "FAIL: " + "; ".join(r["bad"])
        print(
            f"n={n}: match {r['match_t']:.2f} s, served {r['served']}/{r['need_units']}, "
            f"objective {r['objective']:.0f}, gap_bound {r['gap_bound']}, complete {r['complete']}, checks {ok}",
            flush=True,
        )
        if r["match_t"] > args.stop_after and i + 1 < len(sizes):
            print(f"  match took > --stop-after {args.stop_after:g} s: skipping sizes {sizes[i + 1 :]}")
            break

    print()
    print("times in seconds (wall); end to end = columns (Needs/Offers validation) + match;")
    print("candidates = candidate_graph timed on its own, as match builds it (match repeats it inside)")
    header = (
        f"{'n':>9} {'columns':>8} {'candid.':>8} {'match':>8} {'end2end':>8} {'edges':>9} "
        f"{'need units':>10} {'served':>9} {'served %':>8}"
    )
    print(header)
    print("-" * len(header))
    for r in rows:
        print(
            f"{r['n']:>9} {fmt(r['cols_t'], '8.3f')} {fmt(r['cand_t'], '8.3f')} {fmt(r['match_t'], '8.3f')} "
            f"{fmt(r['e2e_t'], '8.3f')} {r['edges']:>9} {r['need_units']:>10} {r['served']:>9} "
            f"{r['served_pct']:>8.2f}"
        )
    all_ok = all(not r["bad"] for r in rows)
    print()
    print(f"checks (category, radius, capacity, quantity): {'all OK' if all_ok else 'FAILED'}")
    if args.plot:
        plot(rows, args.plot, args.layout)
    return 0 if all_ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
