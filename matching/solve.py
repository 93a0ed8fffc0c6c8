"""Min-cost assignment on the candidate graph: exact on small pieces, local-exact passes on large ones.

The problem on a set of edges is a transportation problem: choose integer flows ``x[e] >= 0`` with
``sum over a need's edges <= demand`` and ``sum over an offer's edges <= capacity`` minimising
``sum x[e] * (distance[e] - penalty[need(e)])`` (every unit served saves its unserved penalty).

*Exact*: each need is expanded into ``demand`` unit rows and each offer into ``capacity`` unit
columns, plus one private "unserved" column per unit row at the penalty cost, and the sparse
assignment is solved by ``scipy.sparse.csgraph.min_weight_full_bipartite_matching`` (LAPJVsp).
When the unit expansion would be too large (big quantities times big capacities) the same problem
goes to HiGHS dual simplex, whose basic solutions of a transportation problem are integral.

*Large*: nodes are ordered along a Morton curve of their unit vectors and cut into chunks of
about ``chunk_units`` units; each chunk is re-solved exactly with the flows on edges leaving the
chunk held fixed. Every chunk solve can only lower the objective; several passes with shifted
cuts and rotated curves repair the chunk borders.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from numpy.typing import NDArray
from scipy.optimize import linprog
from scipy.sparse.csgraph import min_weight_full_bipartite_matching

from matching.columns import FloatArray, IntArray

NDArrayU64 = NDArray[np.uint64]

# LAPJVsp touches every column when it augments a row, so expanded problems above this many
# unit-edges per unit go to the LP instead.
_MAX_EXPANSION_PER_UNIT = 64


def solve_exact(
    need: IntArray,
    offer: IntArray,
    cost_km: FloatArray,
    demand: IntArray,
    capacity: IntArray,
    penalty_km: FloatArray,
) -> IntArray:
    """Optimal integer flows, shape (e,), for edges ``need``/``offer``/``cost_km`` (shape (e,)).

    ``demand`` and ``penalty_km`` are indexed by need id, ``capacity`` by offer id (global arrays).
    """
    e = len(need)
    if e == 0:
        return np.zeros(0, dtype=np.int64)
    uniq_need, local_need = np.unique(need, return_inverse=True)
    uniq_offer, local_offer = np.unique(offer, return_inverse=True)
    q = demand[uniq_need]
    c = capacity[uniq_offer]
    reps = q[local_need] * c[local_offer]
    n_units = int(q.sum()) + int(c.sum())
    if int(reps.sum()) > _MAX_EXPANSION_PER_UNIT * max(n_units, 1):
        return _solve_lp(local_need, local_offer, cost_km - penalty_km[need], q, c)
    need_start = np.concatenate([[0], np.cumsum(q)])
    offer_start = np.concatenate([[0], np.cumsum(c)])
    n_rows, n_cols = int(need_start[-1]), int(offer_start[-1])
    if n_rows == 0 or n_cols == 0:
        return np.zeros(e, dtype=np.int64)
    edge_of = np.repeat(np.arange(e), reps)
    offset = np.arange(len(edge_of)) - np.repeat(np.cumsum(reps) - reps, reps)
    width = c[local_offer][edge_of]
    rows = need_start[local_need][edge_of] + offset // width
    cols = offer_start[local_offer][edge_of] + offset % width
    unit_need = np.repeat(np.arange(len(q)), q)
    unit_offer = np.repeat(np.arange(len(c)), c)
    # Every row is matched exactly once (real or unserved column), so adding 1 to every weight
    # changes no optimum and keeps zero distances from reading as missing edges.
    weights = np.concatenate([cost_km[edge_of], penalty_km[uniq_need][unit_need]]) + 1.0
    matrix = sp.csr_array(
        (
            weights,
            (np.concatenate([rows, np.arange(n_rows)]), np.concatenate([cols, n_cols + np.arange(n_rows)])),
        ),
        shape=(n_rows, n_cols + n_rows),
    )
    row_ind, col_ind = min_weight_full_bipartite_matching(matrix)
    real = col_ind < n_cols
    pair = unit_need[row_ind[real]] * np.int64(len(c)) + unit_offer[col_ind[real]]
    edge_key = local_need * np.int64(len(c)) + local_offer
    order = np.argsort(edge_key)
    pos = order[np.searchsorted(edge_key[order], pair)]
    return np.bincount(pos, minlength=e).astype(np.int64)


def _solve_lp(local_need: IntArray, local_offer: IntArray, gain: FloatArray, q: IntArray, c: IntArray) -> IntArray:
    e = len(local_need)
    cols = np.arange(e)
    a_ub = sp.vstack(
        [
            sp.csr_array((np.ones(e), (local_need, cols)), shape=(len(q), e)),
            sp.csr_array((np.ones(e), (local_offer, cols)), shape=(len(c), e)),
        ]
    ).tocsr()
    result = linprog(gain, A_ub=a_ub, b_ub=np.concatenate([q, c]), bounds=(0, None), method="highs-ds")
    if result.status != 0:  # pragma: no cover - a transportation LP with x = 0 feasible is never infeasible
        raise RuntimeError(f"HiGHS failed on a transportation problem: {result.message}")
    flow: IntArray = np.rint(np.asarray(result.x, dtype=np.float64)).astype(np.int64)
    return flow


def _spread_bits(v: NDArrayU64) -> NDArrayU64:
    """Put the low 21 bits of v at every third bit position."""
    v = v & np.uint64(0x1FFFFF)
    v = (v | (v << np.uint64(32))) & np.uint64(0x1F00000000FFFF)
    v = (v | (v << np.uint64(16))) & np.uint64(0x1F0000FF0000FF)
    v = (v | (v << np.uint64(8))) & np.uint64(0x100F00F00F00F00F)
    v = (v | (v << np.uint64(4))) & np.uint64(0x10C30C30C30C30C3)
    return (v | (v << np.uint64(2))) & np.uint64(0x1249249249249249)


def morton_key(xyz: FloatArray, axes: tuple[int, int, int] = (0, 1, 2)) -> NDArrayU64:
    """Morton (Z-order) keys, shape (n,), of points of shape (n, 3) in [-1, 1]^3."""
    cells = np.clip(((xyz + 1.0) * 0.5 * (1 << 21)).astype(np.int64), 0, (1 << 21) - 1).astype(np.uint64)
    a, b, c = (cells[:, i] for i in axes)
    key: NDArrayU64 = (_spread_bits(a) << np.uint64(2)) | (_spread_bits(b) << np.uint64(1)) | _spread_bits(c)
    return key


def solve_large(
    need: IntArray,
    offer: IntArray,
    cost_km: FloatArray,
    demand: IntArray,
    capacity: IntArray,
    penalty_km: FloatArray,
    need_xyz: FloatArray,
    offer_xyz: FloatArray,
    *,
    chunk_units: int,
    passes: int,
) -> IntArray:
    """Near-optimal flows, shape (e,), for one large connected piece (see the module docstring).

    ``need_xyz``/``offer_xyz`` are unit vectors indexed by need / offer id (global arrays).
    """
    e = len(need)
    flow = np.zeros(e, dtype=np.int64)
    nodes_need = np.unique(need)
    nodes_offer = np.unique(offer)
    n_need = len(nodes_need)
    node_xyz = np.concatenate([need_xyz[nodes_need], offer_xyz[nodes_offer]])
    node_units = np.concatenate([demand[nodes_need], capacity[nodes_offer]])
    local_need = np.searchsorted(nodes_need, need)
    local_offer = n_need + np.searchsorted(nodes_offer, offer)
    curves = [(0, 1, 2), (1, 2, 0), (2, 0, 1)]
    for p in range(passes):
        order = np.argsort(morton_key(node_xyz, curves[p % 3]), kind="stable")
        cum = np.empty(len(order), dtype=np.int64)
        cum[order] = np.cumsum(node_units[order])
        shift = (p * chunk_units) // max(passes, 1)
        chunk = (cum + shift) // chunk_units
        edge_chunk = chunk[local_need]
        internal = edge_chunk == chunk[local_offer]
        outside = ~internal
        used_need = np.bincount(need[outside], weights=flow[outside], minlength=len(demand)).astype(np.int64)
        used_offer = np.bincount(offer[outside], weights=flow[outside], minlength=len(capacity)).astype(np.int64)
        free_need = demand - used_need
        free_offer = capacity - used_offer
        inside = np.flatnonzero(internal)
        inside = inside[np.argsort(edge_chunk[inside], kind="stable")]
        bounds = np.flatnonzero(np.diff(edge_chunk[inside])) + 1
        for group in np.split(inside, bounds):
            if group.size:
                flow[group] = solve_exact(need[group], offer[group], cost_km[group], free_need, free_offer, penalty_km)
    return flow
