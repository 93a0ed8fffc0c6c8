"""Global, capacity-aware batch assignment of needs to offers."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from scipy.sparse.csgraph import connected_components

from geo.sphere import lat_lon_to_xyz
from matching.candidates import CandidateEdges, build_candidates
from matching.columns import FloatArray, IntArray, Needs, Offers
from matching.errors import InvalidInputError
from matching.solve import solve_exact, solve_large

SERVED = 0
NO_OFFER_IN_RANGE = 1  # no available offer of the need's category within both radii
ALL_IN_RANGE_AT_CAPACITY = 2  # offers in range exist, their capacity went to other needs
ONLY_TOO_FAR = 3  # offers in range are all farther than the cost of leaving the unit unserved

# Small components are solved together, block-diagonally, in calls of about this many units, so
# there is one LAPJVsp call per batch rather than one Python round trip per component.
_BATCH_UNITS = 2000


@dataclass(frozen=True, eq=False)
class Assignment:
    """The result of a batch. Rows shape (r,), sorted by (need, offer); per-need columns shape (n,).

    ``need_index``/``offer_index`` index the input columns; ``quantity`` units moved on the row;
    ``distance_km`` great-circle km of the row. ``served`` units served per need; ``reason`` 0 when
    fully served, else NO_OFFER_IN_RANGE (1), ALL_IN_RANGE_AT_CAPACITY (2) or ONLY_TOO_FAR (3).
    ``objective`` = Σ quantity × distance_km + Σ 1000 × w(urgency) × unserved units.
    """

    need_index: IntArray
    offer_index: IntArray
    quantity: IntArray
    distance_km: FloatArray
    served: IntArray
    reason: IntArray
    objective: float

    @property
    def served_units(self) -> int:
        """Total units served."""
        return int(self.served.sum())


def objective(needs: Needs, quantity: IntArray, distance_km: FloatArray, served: IntArray) -> float:
    """Σ quantity × distance_km over rows (shape (r,)) + Σ penalty × unserved units over needs."""
    travel = float(np.dot(quantity, distance_km))
    return travel + float(np.dot(needs.penalty_km, needs.quantity - served))


def match(
    needs: Needs,
    offers: Offers,
    *,
    k: int = 12,
    k_reverse: int = 4,
    exact_max_units: int = 20_000,
    chunk_units: int = 5000,
    passes: int = 6,
) -> Assignment:
    """Assign need units to offer units minimising travel plus urgency-weighted unserved units.

    Candidate edges come from the k nearest offers of each need and the ``k_reverse`` nearest needs
    of each offer. Connected pieces of at most ``exact_max_units`` units (need units plus offer
    units) are solved exactly; larger ones by exact re-solves of ``chunk_units``-sized chunks over
    ``passes`` passes. Deterministic for a given input.
    """
    if exact_max_units < 1 or chunk_units < 2 or passes < 1:
        raise InvalidInputError(
            f"exact_max_units = {exact_max_units}, chunk_units = {chunk_units} and passes = {passes} must be positive"
        )
    edges = build_candidates(needs, offers, k=k, k_reverse=k_reverse)
    penalty = needs.penalty_km
    worth = edges.distance_km < penalty[edges.need]
    need, offer, dist = edges.need[worth], edges.offer[worth], edges.distance_km[worth]
    flow = _solve(needs, offers, need, offer, dist, exact_max_units, chunk_units, passes)
    used = flow > 0
    served = np.bincount(need[used], weights=flow[used], minlength=len(needs)).astype(np.int64)
    reason = _reasons(needs, edges, need, served)
    return Assignment(
        need_index=need[used],
        offer_index=offer[used],
        quantity=flow[used],
        distance_km=dist[used],
        served=served,
        reason=reason,
        objective=objective(needs, flow[used], dist[used], served),
    )


def _solve(
    needs: Needs,
    offers: Offers,
    need: IntArray,
    offer: IntArray,
    dist: FloatArray,
    exact_max_units: int,
    chunk_units: int,
    passes: int,
) -> IntArray:
    n, m = len(needs), len(offers)
    flow = np.zeros(len(need), dtype=np.int64)
    if len(need) == 0:
        return flow
    graph = sp.coo_array((np.ones(len(need)), (need, n + offer)), shape=(n + m, n + m)).tocsr()
    n_comp, label = connected_components(graph, directed=False)
    units = np.bincount(label, weights=np.concatenate([needs.quantity, offers.capacity]), minlength=n_comp)
    edge_comp = label[need]
    order = np.argsort(edge_comp, kind="stable")
    starts = np.searchsorted(edge_comp[order], np.arange(n_comp + 1))
    demand, capacity, penalty = needs.quantity, offers.capacity, needs.penalty_km
    large = units > exact_max_units
    # Small components in label order, cut into batches of about _BATCH_UNITS units.
    small_edges = order[~large[edge_comp[order]]]
    small_units = np.where(large, 0, units)
    batch_of_comp = np.cumsum(small_units) // _BATCH_UNITS
    batch = batch_of_comp[edge_comp[small_edges]]
    for group in np.split(small_edges, np.flatnonzero(np.diff(batch)) + 1):
        if group.size:
            flow[group] = solve_exact(need[group], offer[group], dist[group], demand, capacity, penalty)
    if large.any():
        need_xyz = lat_lon_to_xyz(needs.lat, needs.lon)
        offer_xyz = lat_lon_to_xyz(offers.lat, offers.lon)
        for comp in np.flatnonzero(large).tolist():
            group = order[starts[comp] : starts[comp + 1]]
            flow[group] = solve_large(
                need[group],
                offer[group],
                dist[group],
                demand,
                capacity,
                penalty,
                need_xyz,
                offer_xyz,
                chunk_units=chunk_units,
                passes=passes,
            )
    return flow


def _reasons(needs: Needs, edges: CandidateEdges, worth_need: IntArray, served: IntArray) -> IntArray:
    worth_any = np.zeros(len(needs), dtype=bool)
    worth_any[worth_need] = True
    reason = np.where(worth_any, ALL_IN_RANGE_AT_CAPACITY, ONLY_TOO_FAR)
    reason = np.where(edges.in_range, reason, NO_OFFER_IN_RANGE)
    return np.where(served >= needs.quantity, SERVED, reason).astype(np.int64)
