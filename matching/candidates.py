"""The candidate graph: feasible (need, offer) edges found with the per-category trees."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.spatial import cKDTree

from geo.index import SpatialIndex
from geo.sphere import chord_to_km, km_to_chord, lat_lon_to_xyz
from matching.columns import BoolArray, FloatArray, IntArray, Needs, Offers
from matching.errors import InvalidInputError


@dataclass(frozen=True, eq=False)
class CandidateEdges:
    """Feasible edges, sorted by (need, offer), no duplicates; shapes (e,) unless noted.

    ``in_range`` shape (n_needs,): the need has at least one feasible offer (category, both radii,
    availability), whatever its capacity.
    """

    need: IntArray
    offer: IntArray
    distance_km: FloatArray
    in_range: BoolArray


def offer_index(offers: Offers) -> SpatialIndex:
    """A SpatialIndex over the available offers; item ids are offer row indices."""
    rows = np.flatnonzero(offers.is_available & (offers.category_mask != 0))
    return SpatialIndex(rows, offers.lat[rows], offers.lon[rows], offers.category_mask[rows])


def build_candidates(needs: Needs, offers: Offers, *, k: int = 12, k_reverse: int = 4) -> CandidateEdges:
    """Edges from each need to its k nearest capable offers and from each offer to its k_reverse
    nearest needs of every category it serves, keeping only feasible ones.

    Needs whose k nearest offers are all infeasible (a near helper with a short radius hides a far
    one with a long radius) are searched again by radius, so ``in_range`` is exact.
    """
    if k < 1 or k_reverse < 0:
        raise InvalidInputError(f"k = {k} must be >= 1 and k_reverse = {k_reverse} >= 0")
    n = len(needs)
    parts_need: list[IntArray] = [np.empty(0, dtype=np.int64)]
    parts_offer: list[IntArray] = [np.empty(0, dtype=np.int64)]
    parts_km: list[FloatArray] = [np.empty(0, dtype=np.float64)]
    usable = offers.is_available & (offers.category_mask != 0)
    if n and usable.any():
        offers_tree = offer_index(offers)
        reach_km = float(offers.radius_km[usable].max())
        bound_km = np.minimum(needs.max_km, reach_km)
        ids, d_km = offers_tree.knn(needs.lat, needs.lon, needs.category, k, max_km=bound_km)
        rows = np.repeat(np.arange(n, dtype=np.int64), k)
        parts_need.append(rows)
        parts_offer.append(ids.ravel())
        parts_km.append(d_km.ravel())
        full = np.isfinite(d_km[:, -1])

        if k_reverse:
            needs_tree = SpatialIndex(np.arange(n, dtype=np.int64), needs.lat, needs.lon, np.int64(1) << needs.category)
            union = int(np.bitwise_or.reduce(offers.category_mask[usable]))
            present = np.zeros(64, dtype=bool)
            present[np.unique(needs.category)] = True
            for c in range(63):
                if not ((union >> c) & 1 and present[c]):
                    continue
                serving = np.flatnonzero(usable & (((offers.category_mask >> c) & 1) == 1))
                nid, nd_km = needs_tree.knn(
                    offers.lat[serving], offers.lon[serving], c, k_reverse, max_km=offers.radius_km[serving]
                )
                parts_need.append(nid.ravel())
                parts_offer.append(np.repeat(serving, k_reverse))
                parts_km.append(nd_km.ravel())

        need, offer, dist = _feasible(needs, offers, parts_need, parts_offer, parts_km)
        has_edge = np.zeros(n, dtype=bool)
        has_edge[need] = True
        retry = np.flatnonzero(full & ~has_edge)
        if retry.size:
            offsets, rid, rd_km = offers_tree.within(
                needs.lat[retry], needs.lon[retry], needs.category[retry], bound_km[retry]
            )
            rneed = np.repeat(retry, np.diff(offsets))
            ok = rd_km <= offers.radius_km[rid]
            # Keep the k nearest feasible ones; within() lists each need's answers nearest first.
            rneed, rid, rd_km = rneed[ok], rid[ok], rd_km[ok]
            start = np.searchsorted(rneed, rneed, side="left")
            rank = np.arange(len(rneed)) - start
            keep = rank < k
            need, offer, dist = _feasible(needs, offers, [need, rneed[keep]], [offer, rid[keep]], [dist, rd_km[keep]])
    else:
        need, offer, dist = _feasible(needs, offers, parts_need, parts_offer, parts_km)
    in_range = np.zeros(n, dtype=bool)
    in_range[need] = True
    return CandidateEdges(need=need, offer=offer, distance_km=dist, in_range=in_range)


def all_feasible_edges(needs: Needs, offers: Offers, *, max_edges: int) -> CandidateEdges | None:
    """Every feasible edge, or None when there would be more than ``max_edges`` of them.

    Counting comes first (compiled ``query_ball_point(return_length=True)`` per category), so a
    dense instance over the budget costs little. Offers are grouped by radius so each group's
    pair search (``sparse_distance_matrix``) uses a bound close to its own radii.
    """
    n = len(needs)
    usable = offers.is_available & (offers.category_mask != 0)
    need_xyz = lat_lon_to_xyz(needs.lat, needs.lon)
    offer_xyz = lat_lon_to_xyz(offers.lat, offers.lon)
    plans: list[tuple[cKDTree, IntArray, IntArray]] = []
    total = 0
    for c in np.unique(needs.category).tolist():
        serving = np.flatnonzero(usable & (((offers.category_mask >> c) & 1) == 1))
        if serving.size == 0:
            continue
        members = np.flatnonzero(needs.category == c)
        tree = cKDTree(need_xyz[members])
        chord = km_to_chord(offers.radius_km[serving]) * (1.0 + 1e-9)
        total += int(tree.query_ball_point(offer_xyz[serving], chord, return_length=True, workers=-1).sum())
        if total > max_edges:
            return None
        plans.append((tree, members, serving))
    parts_need: list[IntArray] = [np.empty(0, dtype=np.int64)]
    parts_offer: list[IntArray] = [np.empty(0, dtype=np.int64)]
    parts_km: list[FloatArray] = [np.empty(0, dtype=np.float64)]
    for tree, members, serving in plans:
        # Radius bands: within a band the pair search bound is the band's largest radius.
        radius = offers.radius_km[serving]
        band = np.floor(np.log2(np.maximum(radius, 1e-3)) * 4).astype(np.int64)
        for b in np.unique(band).tolist():
            group = serving[band == b]
            bound = float(km_to_chord(offers.radius_km[group].max())) * (1.0 + 1e-9)
            pairs = cKDTree(offer_xyz[group]).sparse_distance_matrix(tree, bound, output_type="ndarray")
            o = group[pairs["i"]]
            i = members[pairs["j"]]
            d_km = chord_to_km(pairs["v"])
            ok = (d_km <= offers.radius_km[o]) & (d_km <= needs.max_km[i])
            parts_need.append(i[ok])
            parts_offer.append(o[ok])
            parts_km.append(d_km[ok])
    need = np.concatenate(parts_need)
    offer = np.concatenate(parts_offer)
    dist = np.concatenate(parts_km)
    order = np.lexsort((offer, need))
    need, offer, dist = need[order], offer[order], dist[order]
    in_range = np.zeros(n, dtype=bool)
    in_range[need] = True
    return CandidateEdges(need=need, offer=offer, distance_km=dist, in_range=in_range)


def _feasible(
    needs: Needs,
    offers: Offers,
    parts_need: list[IntArray],
    parts_offer: list[IntArray],
    parts_km: list[FloatArray],
) -> tuple[IntArray, IntArray, FloatArray]:
    need = np.concatenate(parts_need)
    offer = np.concatenate(parts_offer)
    dist = np.concatenate(parts_km)
    ok = (need >= 0) & (offer >= 0)
    need, offer, dist = need[ok], offer[ok], dist[ok]
    ok = (dist <= offers.radius_km[offer]) & (dist <= needs.max_km[need]) & offers.serves(offer, needs.category[need])
    ok &= offers.is_available[offer]
    need, offer, dist = need[ok], offer[ok], dist[ok]
    key = need * np.int64(max(len(offers), 1)) + offer
    _, first = np.unique(key, return_index=True)
    return need[first], offer[first], dist[first]
