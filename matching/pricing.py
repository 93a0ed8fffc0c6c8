"""Dual prices of an optimal flow on the candidate graph, and the missing edges they say would pay.

After the min-cost flow on a set of edges, node prices come from shortest paths to the sink in the
residual network (integer costs, the solver's metres): ``price_need[i]`` is what one more unit of
need ``i`` is worth (at most its penalty), ``price_offer[j]`` what one unit of offer ``j``'s
capacity is worth (0 while it has room left). Every edge of the graph then has reduced cost
``cost + price_offer - price_need >= 0``; an edge not in the graph with a negative reduced cost can
lower the objective, and one with none cannot. So a piece of the graph whose missing edges all
price non-negative is optimal over every feasible edge too (the linear programming optimality
condition), and adding only priced-in edges keeps each re-solve as small as it can be.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import numpy as np

from geo.index import SpatialIndex
from matching.candidates import radius_bands
from matching.columns import FloatArray, IntArray, Needs, Offers
from matching.solve import COST_UNITS_PER_KM

_INF = np.iinfo(np.int64).max // 4


class PricedEdges(NamedTuple):
    """Missing edges that price in (shape (e,) each) and whether they are all of them."""

    need: IntArray
    offer: IntArray
    distance_km: FloatArray
    exhaustive: bool


def prices(
    needs: Needs, offers: Offers, need: IntArray, offer: IntArray, dist: FloatArray, flow: IntArray
) -> tuple[IntArray, IntArray]:
    """Node prices (integer cost units) of an optimal ``flow`` over edges ``need``/``offer``/``dist``.

    Returns ``(price_need, price_offer)`` of shapes (n,) and (m,). Shortest distances to the sink in
    the residual network, found by label-correcting rounds over only the nodes whose label changed
    (vectorised; the residual network of an optimal flow has no negative cycle).
    """
    n, m = len(needs), len(offers)
    cost = np.rint(dist * COST_UNITS_PER_KM).astype(np.int64)
    penalty = np.rint(needs.penalty_km * COST_UNITS_PER_KM).astype(np.int64)
    served = np.bincount(need, weights=flow, minlength=n).astype(np.int64)
    used = np.bincount(offer, weights=flow, minlength=m).astype(np.int64)
    room = flow < np.minimum(needs.quantity[need], offers.capacity[offer])
    carrying = flow > 0
    sink = n + m
    # Residual arcs x -> y with cost c; labels are distances to the sink, so they travel backwards.
    tail = np.concatenate([need[room], n + offer[carrying], np.flatnonzero(served > 0)])
    head = np.concatenate([n + offer[room], need[carrying], np.full(int((served > 0).sum()), sink)])
    arc_cost = np.concatenate([cost[room], -cost[carrying], penalty[served > 0]])
    label = np.full(n + m + 1, _INF, dtype=np.int64)
    label[sink] = 0
    label[n + np.flatnonzero(used < offers.capacity)] = 0  # room left: straight on to the sink
    label[np.flatnonzero(served > 0)] = penalty[served > 0]
    by_head = np.argsort(head, kind="stable")
    tail, head, arc_cost = tail[by_head], head[by_head], arc_cost[by_head]
    start = np.zeros(n + m + 2, dtype=np.int64)
    np.cumsum(np.bincount(head, minlength=n + m + 1), out=start[1:])
    front = np.flatnonzero(label < _INF)
    front = front[front != sink]
    while front.size:
        first, count = start[front], start[front + 1] - start[front]
        total = int(count.sum())
        if total == 0:
            break
        offsets = np.repeat(first - (np.cumsum(count) - count), count)
        arcs = np.arange(total) + offsets
        cand = arc_cost[arcs] + np.repeat(label[front], count)
        x = tail[arcs]
        better = cand < label[x]
        if not better.any():
            break
        x, cand = x[better], cand[better]
        np.minimum.at(label, x, cand)
        front = np.unique(x)
    price_need = np.minimum(label[:n], penalty)  # a need with nothing served is worth its penalty
    price_offer = label[n : n + m]
    return price_need, price_offer


def priced_in_edges(
    needs: Needs,
    offers: Offers,
    price_need: IntArray,
    price_offer: IntArray,
    known: IntArray,
    k: int,
    *,
    max_k: int = 4096,
) -> PricedEdges:
    """Feasible edges missing from the graph with a negative reduced cost: all of them, up to ``max_k``.

    Needs worth something search every class of offers with the same radius band (powers of two)
    and price band (powers of two of km; offers with room left cost nothing), among the classes
    cheaper than the need is worth, within what it is worth above the class's cheapest price.
    Nearest offers of any price are not enough: where helpers are contested the ones that pay are
    those now serving needs worth less (a normal need where an urgent one waits), often far down
    the list behind dearer ones, and long-radius helpers behind short-radius ones. Offers then
    search the needs with units left unserved within what those are worth above the offer's price.
    Each search starts with the ``k`` nearest and asks again, four times as many, for the points
    whose ``k``-th nearest was still within their bound, up to ``max_k``: the nearest hits are
    mostly edges already in the graph, or offers out of their own radius, so a fixed ``k`` misses
    edges that pay (on the demo scenario it stopped 0.57 % above the optimum with none found).
    So below ``max_k`` the search is exhaustive: when it finds nothing, the flow is optimal over
    every feasible edge. Every hit is kept only if it is feasible and its reduced cost negative.
    ``known`` holds the sorted keys ``need * m + offer`` of the graph's edges.
    Returns the new edges sorted by (need, offer), no duplicates, and whether the search was
    exhaustive (no point still had hits in bound after ``max_k``).
    """
    m = len(offers)
    usable = np.flatnonzero(offers.is_available & (offers.category_mask != 0))
    parts_need: list[IntArray] = [np.empty(0, dtype=np.int64)]
    parts_offer: list[IntArray] = [np.empty(0, dtype=np.int64)]
    parts_km: list[FloatArray] = [np.empty(0, dtype=np.float64)]

    def keep(need: IntArray, offer: IntArray, dist: FloatArray) -> None:
        ok = (dist <= offers.radius_km[offer]) & (dist <= needs.max_km[need])
        ok &= np.rint(dist * COST_UNITS_PER_KM).astype(np.int64) + price_offer[offer] < price_need[need]
        need, offer, dist = need[ok], offer[ok], dist[ok]
        ok = offers.serves(offer, needs.category[need])
        if len(known):
            key = need * np.int64(max(m, 1)) + offer
            pos = np.minimum(np.searchsorted(known, key), len(known) - 1)
            ok &= known[pos] != key
        parts_need.append(need[ok])
        parts_offer.append(offer[ok])
        parts_km.append(dist[ok])

    exhaustive = True
    asking = np.flatnonzero(price_need > 0)
    if asking.size and usable.size:
        price_km = price_offer[usable] / COST_UNITS_PER_KM
        price_band = np.where(price_km > 0, np.floor(np.log2(np.maximum(price_km, 1e-3))) + 1, -64).astype(np.int64)
        radius_band = radius_bands(offers.radius_km[usable])
        cls = radius_band * 256 + price_band
        for c in np.unique(cls).tolist():
            rows = usable[cls == c]
            cheapest = int(price_offer[rows].min())
            q = asking[price_need[asking] > cheapest]
            if q.size == 0:
                continue
            bound_km = np.minimum(needs.max_km[q], (price_need[q] - cheapest) / COST_UNITS_PER_KM)
            bound_km = np.minimum(bound_km, float(offers.radius_km[rows].max()))
            tree = SpatialIndex(rows, offers.lat[rows], offers.lon[rows], offers.category_mask[rows])
            exhaustive &= _widening_knn(tree, needs.lat, needs.lon, needs.category, q, bound_km, k, max_k, keep)
    short = np.flatnonzero(price_need >= np.rint(needs.penalty_km * COST_UNITS_PER_KM))
    if short.size and usable.size:
        tree = SpatialIndex(short, needs.lat[short], needs.lon[short], np.int64(1) << needs.category[short])
        top_km = float((price_need[short] / COST_UNITS_PER_KM).max())
        for c in sorted({int(v) for v in np.unique(needs.category[short])}):
            serving = usable[((offers.category_mask[usable] >> c) & 1) == 1]
            reach_km = np.minimum(offers.radius_km[serving], top_km - price_offer[serving] / COST_UNITS_PER_KM)
            serving, reach_km = serving[reach_km > 0], reach_km[reach_km > 0]
            if serving.size == 0:
                continue
            category = np.full(len(offers), c, dtype=np.int64)
            exhaustive &= _widening_knn(
                tree, offers.lat, offers.lon, category, serving, reach_km, k, max_k, lambda o, n, km: keep(n, o, km)
            )
    need = np.concatenate(parts_need)
    offer = np.concatenate(parts_offer)
    dist = np.concatenate(parts_km)
    key = need * np.int64(max(m, 1)) + offer
    _, first = np.unique(key, return_index=True)
    return PricedEdges(need[first], offer[first], dist[first], exhaustive)


def _widening_knn(
    tree: SpatialIndex,
    lat: FloatArray,
    lon: FloatArray,
    category: IntArray,
    rows: IntArray,
    bound_km: FloatArray,
    k: int,
    max_k: int,
    take: Callable[[IntArray, IntArray, FloatArray], None],
) -> bool:
    """Every item of ``tree`` within ``bound_km`` (shape like ``rows``) of each query row, up to ``max_k``.

    Hands ``(row, item id, km)`` hits to ``take`` in batches: the ``k`` nearest, then for the rows
    whose last hit was still in bound the next ones, four times as many at a time. A later batch
    hands on everything from its predecessor's last distance outwards: items tied at that distance
    may come back in either batch or only in the later one, so some hits come twice. Returns False
    when some row still had hits in bound at ``max_k`` (the hits are then not all of them).
    """
    hi = k
    floor_km = np.full(len(rows), -np.inf)
    while rows.size:
        ids, d_km = tree.knn(lat[rows], lon[rows], category[rows], hi, max_km=bound_km)
        hit = (ids >= 0) & (d_km >= floor_km[:, None])
        take(np.repeat(rows, hi)[hit.ravel()], ids[hit], d_km[hit])
        more = ids[:, -1] >= 0
        if hi >= max_k:
            return not more.any()
        rows, bound_km, floor_km = rows[more], bound_km[more], d_km[more, -1]
        hi = min(4 * hi, max_k)
    return True


def dual_bound(
    needs: Needs,
    offers: Offers,
    price_need: IntArray,
    price_offer: IntArray,
    need: IntArray,
    offer: IntArray,
    dist: FloatArray,
) -> float:
    """A lower bound (km) on the objective over every feasible edge, from prices and the edges that price in.

    ``need``/``offer``/``dist`` must hold every feasible edge whose reduced cost under the prices
    is negative (the graph's edges and an exhaustive ``priced_in_edges``). Lowering each need's
    price by its most negative reduced cost makes every edge price non-negative, so those prices
    are feasible for the dual of the whole problem, and their dual objective
    ``Σ quantity × price_need - Σ capacity × price_offer`` bounds every assignment from below.
    """
    cost = np.rint(dist * COST_UNITS_PER_KM).astype(np.int64)
    reduced = cost + price_offer[offer] - price_need[need]
    lowest = np.zeros(len(needs), dtype=np.int64)
    np.minimum.at(lowest, need, reduced)
    lifted = price_need + lowest  # lowest <= 0
    value = np.dot(needs.quantity.astype(np.float64), lifted.astype(np.float64))
    value -= np.dot(offers.capacity.astype(np.float64), price_offer.astype(np.float64))
    return float(value) / COST_UNITS_PER_KM
