"""Batch assignment quality: matching.match against the exact LP optimum and a nearest-first greedy.

For every layout and size the script builds n needs and n offers (quantity and capacity 1-3, 12
categories, offer radius 50 km, urgency 15 % critical / 25 % urgent / 60 % normal) and runs, in one
process:

- aidmatch: `matching.match(needs, offers)` (public API only), timed end to end;
- opt: the exact optimum, computed independently: all feasible need-offer pairs (per-category
  cKDTree pair search on unit vectors within the chord of the radius, then distance <= offer radius
  and <= need max_km), and the transportation LP min sum (d_e - penalty_i) x_e subject to
  sum_e x_e <= quantity_i per need, <= capacity_j per offer, x >= 0, solved by
  scipy.optimize.linprog (HiGHS, interior point + crossover by
  default, --lp-method) with a time limit (basic solutions are integral);
- greedy: needs by urgency (critical first) then id, each taking units from its nearest feasible
  offers that still have capacity.

Objective of every method: sum quantity x distance_km + sum 1000 x w(urgency) x unserved units,
w = 4 / 2 / 1. All assignments are checked (category, radius, capacity, quantity) and aidmatch's
reported objective against one recomputed here.

    .venv/bin/python benchmarks/assignment.py --sizes 2000 5000 10000 --layouts dense spread
    .venv/bin/python benchmarks/assignment.py --quick
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp
from scipy.optimize import linprog
from scipy.spatial import cKDTree

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from common import (
    LAYOUTS,
    N_CATEGORIES,
    check_assignment,
    fmt,
    machine_info,
    objective,
    penalty,
    save_loglog,
    to_matching,
    xyz,
)

import matching
from geo.sphere import EARTH_RADIUS_KM

OBJ_TOL = 1e-6  # relative


PRICED = {"auto": None, "priced": True, "widen": False}


def feasible_pairs(d: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All feasible (need, offer, km) pairs, sorted by need then distance."""
    nx, ox = xyz(d["need_lat"], d["need_lon"]), xyz(d["offer_lat"], d["offer_lon"])
    reach = np.minimum(d["offer_radius"].max(initial=0.0), d["need_max_km"].max(initial=0.0))
    chord = 2.0 * np.sin(min(reach, np.pi * EARTH_RADIUS_KM) / (2.0 * EARTH_RADIUS_KM)) * (1 + 1e-9)
    parts_i, parts_j, parts_v = [], [], []
    for c in range(int(d["need_cat"].max(initial=-1)) + 1):
        q = np.flatnonzero(d["need_cat"] == c)
        rows = np.flatnonzero((d["offer_mask"] >> c) & 1)
        if not len(q) or not len(rows):
            continue
        pairs = cKDTree(nx[q]).sparse_distance_matrix(cKDTree(ox[rows]), chord, output_type="ndarray")
        parts_i.append(q[pairs["i"]])
        parts_j.append(rows[pairs["j"]])
        parts_v.append(pairs["v"])
    need = np.concatenate(parts_i).astype(np.int64)
    offer = np.concatenate(parts_j).astype(np.int64)
    km = 2.0 * EARTH_RADIUS_KM * np.arcsin(np.minimum(np.concatenate(parts_v) / 2.0, 1.0))
    ok = (km <= d["offer_radius"][offer]) & (km <= d["need_max_km"][need]) & (km < penalty(d)[need])
    need, offer, km = need[ok], offer[ok], km[ok]
    order = np.lexsort((offer, km, need))
    return need[order], offer[order], km[order]


def solve_lp(
    d: dict[str, np.ndarray], need: np.ndarray, offer: np.ndarray, km: np.ndarray, time_limit: float, method: str
):
    """Exact optimum by LP; returns (flow per pair or None, status text, max fractional part)."""
    n, m, e = len(d["need_lat"]), len(d["offer_lat"]), len(need)
    a = sp.csr_array(
        (np.ones(2 * e), (np.concatenate([need, n + offer]), np.concatenate([np.arange(e), np.arange(e)]))),
        shape=(n + m, e),
    )
    b = np.concatenate([d["need_qty"], d["offer_cap"]]).astype(np.float64)
    res = linprog(
        km - penalty(d)[need], A_ub=a, b_ub=b, bounds=(0, None), method=method, options={"time_limit": time_limit}
    )
    if res.status != 0 or res.x is None:
        return None, f"LP status {res.status}: {res.message}", None
    flow = np.round(res.x).astype(np.int64)
    return flow, "optimal", float(np.max(np.abs(res.x - flow), initial=0.0))


def greedy(d: dict[str, np.ndarray], need: np.ndarray, offer: np.ndarray) -> np.ndarray:
    """Nearest-first greedy over pairs sorted by (need, distance); returns units per pair."""
    n = len(d["need_lat"])
    start = np.searchsorted(need, np.arange(n + 1))
    rem = d["offer_cap"].copy()
    qty = d["need_qty"]
    flow = np.zeros(len(need), dtype=np.int64)
    for i in np.lexsort((np.arange(n), d["need_urg"])).tolist():
        s, e = start[i], start[i + 1]
        if s == e:
            continue
        js = offer[s:e]
        cap = rem[js]
        before = np.cumsum(cap) - cap
        take = np.clip(qty[i] - before, 0, cap)
        rem[js] -= take
        flow[s:e] = take
    return flow


def summarise(d: dict[str, np.ndarray], need: np.ndarray, offer: np.ndarray, km: np.ndarray, flow: np.ndarray):
    used = flow > 0
    served = np.bincount(need[used], weights=flow[used], minlength=len(d["need_lat"])).astype(np.int64)
    bad = check_assignment(d, need[used], offer[used], flow[used])
    return int(served.sum()), objective(d, flow[used], km[used], served), bad


def solve_mcf_all_pairs(d: dict[str, np.ndarray], need: np.ndarray, offer: np.ndarray, km: np.ndarray):
    """Exact optimum over ALL feasible pairs by OR-Tools' min-cost flow, written here independently
    of matching/ (own network: source -> need at -penalty, need -> offer at distance in metres,
    offer -> sink, source -> sink bypass). Exact up to 1 m per unit."""
    from ortools.graph.python.min_cost_flow import SimpleMinCostFlow

    n, m = len(d["need_lat"]), len(d["offer_lat"])
    q = d["need_qty"].astype(np.int64)
    c = d["offer_cap"].astype(np.int64)
    s, t = n + m, n + m + 1
    total = int(q.sum())
    g = SimpleMinCostFlow()
    g.add_arcs_with_capacity_and_unit_cost(np.full(n, s), np.arange(n), q, -np.rint(penalty(d) * 1000).astype(np.int64))
    arcs = g.add_arcs_with_capacity_and_unit_cost(
        need.astype(np.int64), n + offer.astype(np.int64), q[need], np.rint(km * 1000).astype(np.int64)
    )
    g.add_arcs_with_capacity_and_unit_cost(np.arange(n, n + m), np.full(m, t), c, np.zeros(m, dtype=np.int64))
    g.add_arcs_with_capacity_and_unit_cost(np.array([s]), np.array([t]), np.array([total]), np.array([0]))
    g.set_nodes_supplies(np.array([s, t]), np.array([total, -total]))
    status = g.solve()
    if status != SimpleMinCostFlow.OPTIMAL:
        return None, f"min-cost flow status {status}", None
    return np.asarray(g.flows(arcs), dtype=np.int64), "optimal", 0.0


def run_one(layout: str, n: int, args: argparse.Namespace) -> dict[str, Any]:
    d = make_instance_cached(layout, n, args.seed)
    r: dict[str, Any] = {
        "layout": layout,
        "n": n,
        "need_units": int(d["need_qty"].sum()),
        "offer_units": int(d["offer_cap"].sum()),
        "notes": [],
        "bad": [],
    }
    # aidmatch
    t0 = time.perf_counter()
    needs, offers = to_matching(d)
    res = matching.match(needs, offers, max_exact_edges=args.max_exact_edges, priced_rounds=PRICED[args.rounds])
    r["aid_t"] = time.perf_counter() - t0
    r["aid_served"], r["aid_obj"] = res.served_units, float(res.objective)
    bad = check_assignment(d, res.need_index, res.offer_index, res.quantity)
    own = objective(d, res.quantity, res.distance_km, res.served)
    served_rows = np.bincount(res.need_index, weights=res.quantity, minlength=n)
    if abs(own - r["aid_obj"]) > OBJ_TOL * max(1.0, abs(own)) or not np.array_equal(served_rows, res.served):
        bad.append("reported objective/served disagrees with the rows")
    r["bad"] += [f"aidmatch: {b}" for b in bad]
    # all feasible pairs (shared by opt and greedy)
    t0 = time.perf_counter()
    need, offer, km = feasible_pairs(d)
    r["pairs_t"], r["pairs"] = time.perf_counter() - t0, len(need)
    # greedy
    t0 = time.perf_counter()
    gflow = greedy(d, need, offer)
    r["gr_t"] = time.perf_counter() - t0
    r["gr_served"], r["gr_obj"], bad = summarise(d, need, offer, km, gflow)
    r["bad"] += [f"greedy: {b}" for b in bad]
    # exact LP
    r["opt_t"] = r["opt_served"] = r["opt_obj"] = None
    if len(need) > args.lp_max_pairs:
        r["notes"].append(f"LP skipped: {len(need)} pairs > --lp-max-pairs {args.lp_max_pairs}")
    else:
        t0 = time.perf_counter()
        if args.opt == "mcf":
            flow, status, frac = solve_mcf_all_pairs(d, need, offer, km)
        else:
            flow, status, frac = solve_lp(d, need, offer, km, args.lp_time_limit, args.lp_method)
        t = time.perf_counter() - t0
        if flow is None:
            r["notes"].append(f"LP not solved in {t:.0f} s (--lp-time-limit {args.lp_time_limit:g}): {status}")
        else:
            r["opt_t"] = t
            r["opt_served"], r["opt_obj"], bad = summarise(d, need, offer, km, flow)
            r["bad"] += [f"LP: {b}" for b in bad]
            if frac > 1e-6:
                r["bad"].append(f"LP solution not integral (max fractional part {frac:.2e})")
            for name in ("aid", "gr"):
                if r[f"{name}_obj"] < r["opt_obj"] * (1 - OBJ_TOL):
                    r["bad"].append(f"{name} objective below the LP optimum")
    return r


_CACHE: dict[tuple[str, int, int], dict[str, np.ndarray]] = {}


def make_instance_cached(layout: str, n: int, seed: int) -> dict[str, np.ndarray]:
    from common import make_instance

    key = (layout, n, seed)
    if key not in _CACHE:
        _CACHE.clear()
        _CACHE[key] = make_instance(layout, n, seed)
    return _CACHE[key]


def pct(a: float | None, b: float | None, scale: float = 100.0) -> float | None:
    return None if a is None or b is None or b == 0 else (a / b - 1.0) * scale


def pfmt(x: float | None, width: int, digits: int) -> str:
    """A percentage right-aligned in width + 1 characters, or 'skip'."""
    return format(f"{x:.{digits}f}%" if x is not None else "skip", f">{width + 1}s")


def plot(rows: list[dict[str, Any]], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 5))
    for layout, marker in zip(sorted({r["layout"] for r in rows}), "os^", strict=False):
        for key, label, style in (
            ("aid_t", "aidmatch match", "-"),
            ("opt_t", "exact LP (HiGHS)", "--"),
            ("gr_t", "greedy loop", ":"),
        ):
            pts = [(r["n"], r[key]) for r in rows if r["layout"] == layout and r.get(key) is not None]
            if pts:
                xs, ys = zip(*pts, strict=True)
                ax.plot(xs, ys, marker + style, label=f"{layout}: {label}")
    save_loglog(fig, ax, path, "batch assignment: aidmatch vs exact LP vs greedy")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[2_000, 5_000, 10_000, 20_000])
    p.add_argument("--layouts", nargs="+", choices=sorted(LAYOUTS), default=["dense", "spread"])
    p.add_argument("--quick", action="store_true", help="2k only")
    p.add_argument("--lp-time-limit", type=float, default=60.0, help="HiGHS time limit per LP, seconds")
    p.add_argument("--lp-max-pairs", type=int, default=600_000, help="skip the LP above this many pairs")
    p.add_argument(
        "--lp-method",
        choices=["highs", "highs-ipm", "highs-ds"],
        default="highs-ipm",
        help="linprog method; interior point + crossover (basic, integral) was 3x faster than dual simplex",
    )
    p.add_argument(
        "--opt",
        choices=["lp", "mcf"],
        default="lp",
        help="exact optimum by the HiGHS LP (independent of matching/'s solver) or by OR-Tools min-cost flow "
        "over all pairs (reaches larger dense instances; shares the solver library)",
    )
    p.add_argument(
        "--max-exact-edges",
        type=int,
        default=16_000_000,
        help="passed to matching.match; 0 forces its nearest-candidates path (to measure that path)",
    )
    p.add_argument(
        "--rounds",
        choices=["auto", "priced", "widen"],
        default="auto",
        help="matching.match's priced_rounds: None (auto: priced on graphs up to PRICED_MAX_EDGES), True, False",
    )
    p.add_argument("--seed", type=int, default=20260101)
    p.add_argument("--plot", metavar="PATH", help="write a log-log PNG of time vs size")
    args = p.parse_args(argv)
    sizes = [2_000] if args.quick else args.sizes

    print("batch assignment quality benchmark")
    print(f"categories={N_CATEGORIES}, radius=50 km, quantity/capacity 1-3, seed={args.seed}, LP {args.lp_method}")
    if args.max_exact_edges != 16_000_000 or args.rounds != "auto":
        print(f"matching.match(max_exact_edges={args.max_exact_edges}, priced_rounds={PRICED[args.rounds]})")
    for layout in args.layouts:
        print(f"layout {layout}: {LAYOUTS[layout]}")
    for line in machine_info():
        print(line)
    print()

    rows = []
    for layout in args.layouts:
        for n in sizes:
            r = run_one(layout, n, args)
            rows.append(r)
            ok = "OK" if not r["bad"] else "FAIL: " + "; ".join(r["bad"])
            print(f"{layout} n={n}: {r['pairs']} feasible pairs, checks {ok}", *r["notes"], sep="\n  ", flush=True)

    print()
    print("times in seconds (wall). aid = matching.match; opt = exact LP (pairs search not included);")
    print("greedy = loop only (pairs search not included). gap = objective / opt objective - 1;")
    print("extra unserved = (unserved units / opt unserved units - 1)")
    header = (
        f"{'layout':>6} {'n':>6} {'units':>6} {'pairs':>8} {'pairs t':>7} {'aid t':>7} {'opt t':>7} {'greedy t':>8} "
        f"{'served aid':>10} {'opt':>6} {'greedy':>6} {'aid/opt':>8} {'aid gap':>8} {'gr gap':>8} "
        f"{'aid +unsrv':>10} {'gr +unsrv':>10}"
    )
    print(header)
    print("-" * len(header))
    for r in rows:
        opt_uns = None if r["opt_served"] is None else r["need_units"] - r["opt_served"]
        aid_uns, gr_uns = r["need_units"] - r["aid_served"], r["need_units"] - r["gr_served"]
        ratio = None if r["opt_served"] is None else r["aid_served"] / r["opt_served"]
        print(
            f"{r['layout']:>6} {r['n']:>6} {r['need_units']:>6} {r['pairs']:>8} {fmt(r['pairs_t'], '7.2f')} "
            f"{fmt(r['aid_t'], '7.2f')} {fmt(r['opt_t'], '7.2f')} {fmt(r['gr_t'], '8.2f')} "
            f"{r['aid_served']:>10} {fmt(r['opt_served'], '6.0f')} {r['gr_served']:>6} {fmt(ratio, '8.4f')} "
            f"{pfmt(pct(r['aid_obj'], r['opt_obj']), 7, 3)} {pfmt(pct(r['gr_obj'], r['opt_obj']), 7, 3)} "
            f"{pfmt(pct(aid_uns, opt_uns), 9, 2)} {pfmt(pct(gr_uns, opt_uns), 9, 2)}"
        )
    all_ok = all(not r["bad"] for r in rows)
    print()
    print(f"checks (category, radius, capacity, quantity, objective >= LP optimum): {'all OK' if all_ok else 'FAILED'}")
    if args.plot:
        plot(rows, args.plot)
    return 0 if all_ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
