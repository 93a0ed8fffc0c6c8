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
"""

from __future__ import annotations

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
