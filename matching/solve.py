"""Exact min-cost assignment on the candidate graph, by OR-Tools' min-cost flow.

The problem on a set of edges is a transportation problem: choose integer flows ``x[e] >= 0`` with
``sum over a need's edges <= demand`` and ``sum over an offer's edges <= capacity`` minimising
``sum x[e] * (distance[e] - penalty[need(e)])`` (every unit served saves its unserved penalty).

It is solved as one min-cost flow with non-negative costs: every need supplies its units; they
reach the sink through an offer (the candidate edges at their distance, then capacity) or
directly at the need's unserved penalty. OR-Tools' ``SimpleMinCostFlow`` (cost-scaling push-relabel, in
C++) solves it exactly with integer costs; distances are given in metres, so the optimum found is
optimal to within 1 m per unit. scipy has no min-cost flow: its LP (HiGHS) and LAPJVsp
(``min_weight_full_bipartite_matching``) took 5-50 s on dense 2,000 × 2,000 instances that this
solves in 0.1 s (see benchmarks/RESULTS.md).

The solver holds the GIL while it runs (two threads take as long as one after the other), so
``solve_groups`` spreads independent groups of edges over worker processes instead.
"""

from __future__ import annotations

import multiprocessing
import os
import sys
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

import numpy as np
from ortools.graph.python.min_cost_flow import SimpleMinCostFlow

from matching.columns import FloatArray, IntArray
from matching.errors import MatchingError

COST_UNITS_PER_KM = 1000  # integer costs in metres


class SolverError(MatchingError, RuntimeError):
    """The min-cost flow solver did not report an optimum."""


def solve_min_cost_flow(
    need: IntArray,
    offer: IntArray,
    cost_km: FloatArray,
    demand: IntArray,
    capacity: IntArray,
    penalty_km: FloatArray,
) -> IntArray:
    """Optimal integer flows, shape (e,), for edges ``need``/``offer``/``cost_km`` (shape (e,)).

    ``demand`` and ``penalty_km`` are indexed by need id, ``capacity`` by offer id (global arrays).
    Deterministic for a given input order.
    """
    e = len(need)
    if e == 0:
        return np.zeros(0, dtype=np.int64)
    uniq_need, local_need = np.unique(need, return_inverse=True)
    uniq_offer, local_offer = np.unique(offer, return_inverse=True)
    n, m = len(uniq_need), len(uniq_offer)
    q = demand[uniq_need].astype(np.int64)
    c = capacity[uniq_offer].astype(np.int64)
    sink = n + m
    total = int(q.sum())
    solver = SimpleMinCostFlow()
    arcs = solver.add_arcs_with_capacity_and_unit_cost(
        local_need.astype(np.int64),
        (n + local_offer).astype(np.int64),
        np.minimum(q[local_need], c[local_offer]),
        np.rint(cost_km * COST_UNITS_PER_KM).astype(np.int64),
    )
    solver.add_arcs_with_capacity_and_unit_cost(
        np.arange(n, n + m, dtype=np.int64), np.full(m, sink, dtype=np.int64), c, np.zeros(m, dtype=np.int64)
    )
    # A unit left unserved goes straight to the sink at its penalty.
    solver.add_arcs_with_capacity_and_unit_cost(
        np.arange(n, dtype=np.int64),
        np.full(n, sink, dtype=np.int64),
        q,
        np.rint(penalty_km[uniq_need] * COST_UNITS_PER_KM).astype(np.int64),
    )
    solver.set_nodes_supplies(
        np.concatenate([np.arange(n, dtype=np.int64), [sink]]), np.concatenate([q, [-total]]).astype(np.int64)
    )
    status = solver.solve()
    if status != SimpleMinCostFlow.OPTIMAL:
        raise SolverError(f"min-cost flow over {e} edges ended with status {status}")
    flow: IntArray = np.asarray(solver.flows(arcs), dtype=np.int64)
    return flow


# Worker processes see the per-node columns through these globals (set once per pool by the
# initializer, inherited on fork); only each group's edges travel to them.
_COLUMNS: tuple[IntArray, IntArray, FloatArray] | None = None
PARALLEL_MIN_EDGES = 400_000  # below this, starting worker processes costs more than it saves


def _init_worker(demand: IntArray, capacity: IntArray, penalty_km: FloatArray) -> None:
    global _COLUMNS
    _COLUMNS = (demand, capacity, penalty_km)


def _solve_in_worker(need: IntArray, offer: IntArray, cost_km: FloatArray) -> IntArray:
    assert _COLUMNS is not None
    return solve_min_cost_flow(need, offer, cost_km, *_COLUMNS)


def solve_groups(
    groups: list[IntArray],
    need: IntArray,
    offer: IntArray,
    cost_km: FloatArray,
    demand: IntArray,
    capacity: IntArray,
    penalty_km: FloatArray,
    *,
    workers: int | None = None,
) -> list[IntArray]:
    """Optimal flows of independent groups of edges: ``groups[g]`` indexes ``need``/``offer``/``cost_km``.

    No two groups may share a need or an offer. The OR-Tools solver holds the GIL, so with
    ``workers`` > 1 (None: one per CPU) and enough edges the groups are solved in that many
    forked processes, largest first. The answer is the same whichever way: each group is solved
    deterministically on its own.
    """
    n_workers = (os.cpu_count() or 1) if workers is None else workers
    sizes = [len(g) for g in groups]
    # Forking a process that has run threads (the k-d tree queries) is deprecated from 3.12 on.
    method = "fork" if sys.version_info < (3, 12) else "forkserver"
    parallel = (
        n_workers > 1
        and len(groups) > 1
        and sum(sizes) >= PARALLEL_MIN_EDGES
        and method in multiprocessing.get_all_start_methods()
    )
    if parallel:
        try:
            with ProcessPoolExecutor(
                max_workers=min(n_workers, len(groups)),
                mp_context=multiprocessing.get_context(method),
                initializer=_init_worker,
                initargs=(demand, capacity, penalty_km),
            ) as pool:
                futures = {
                    g: pool.submit(_solve_in_worker, need[groups[g]], offer[groups[g]], cost_km[groups[g]])
                    for g in sorted(range(len(groups)), key=lambda g: -sizes[g])
                }
                return [futures[g].result() for g in range(len(groups))]
        except BrokenProcessPool:
            pass  # a worker died (e.g. out of memory): solve here instead, same answer
    return [solve_min_cost_flow(need[g], offer[g], cost_km[g], demand, capacity, penalty_km) for g in groups]
