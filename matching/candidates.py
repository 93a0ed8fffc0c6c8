"""The candidate graph: feasible (need, offer) edges found with the per-category trees."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.spatial import cKDTree

from geo.index import SpatialIndex
from geo.sphere import EARTH_RADIUS_KM, chord_to_km, km_to_chord, lat_lon_to_xyz, tree_bound
from matching.columns import NORMAL, BoolArray, FloatArray, IntArray, Needs, Offers
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


_FARTHEST_KM = float(np.pi * EARTH_RADIUS_KM)  # every point on Earth is this close to every other


def radius_bands(radius_km: FloatArray, per_doubling: int = 1) -> IntArray:
    """Band of each radius (shape like it): ``per_doubling`` bands per doubling of the radius.

    Radii below 1 m share the lowest band; radii past the farthest two points of the Earth can be
    apart (infinite ones included) share the highest, since they all reach everywhere.
    """
    clipped = np.clip(np.asarray(radius_km, dtype=np.float64), 1e-3, _FARTHEST_KM)
    band: IntArray = np.floor(per_doubling * np.log2(clipped)).astype(np.int64)
    return band


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

        need, offer, dist = _with_retry(
            needs, offers, offers_tree, bound_km, full, k, parts_need, parts_offer, parts_km
        )
    else:
        need, offer, dist = _feasible(needs, offers, parts_need, parts_offer, parts_km)
    in_range = np.zeros(n, dtype=bool)
    in_range[need] = True
    return CandidateEdges(need=need, offer=offer, distance_km=dist, in_range=in_range)


def _with_retry(
    needs: Needs,
    offers: Offers,
    offers_tree: SpatialIndex | None,
    bound_km: FloatArray,
    full: BoolArray,
    k: int,
    parts_need: list[IntArray],
    parts_offer: list[IntArray],
    parts_km: list[FloatArray],
) -> tuple[IntArray, IntArray, FloatArray]:
    """The feasible edges of the parts; needs left without one although their ``full`` k-nearest
    answer may have hidden a feasible offer get their k nearest feasible ones by a radius search."""
    n = len(needs)
    need, offer, dist = _feasible(needs, offers, parts_need, parts_offer, parts_km)
    has_edge = np.zeros(n, dtype=bool)
    has_edge[need] = True
    retry = np.flatnonzero(full & ~has_edge)
    if retry.size:
        if offers_tree is None:
            offers_tree = offer_index(offers)
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
    return need, offer, dist


_GROUP_SEPARATION = 8.0  # a fourth coordinate this far apart: points of different groups never meet
_SALTS = (0x9E3779B97F4A7C15, 0xC2B2AE3D27D4EB4F, 0x165667B19E3779F9, 0x27D4EB2F165667C5)


def _groups(ids: IntArray, groups: int, salt: int) -> IntArray:
    """A deterministic pseudo-random group in [0, groups) for each id (multiplicative hashing)."""
    h = (ids.astype(np.uint64) * np.uint64(salt)) >> np.uint64(40)
    out: IntArray = (h % np.uint64(groups)).astype(np.int64)
    return out


def _knn_parts(
    tree_xyz: FloatArray,
    tree_rows: IntArray,
    query_xyz: FloatArray,
    k: int,
    bound_chord: float,
) -> tuple[IntArray, FloatArray]:
    """Rows of ``tree_rows`` nearest to each query point (shape (q, k), -1 padded) and their km."""
    kk = min(k, len(tree_rows))
    d, i = cKDTree(tree_xyz).query(query_xyz, k=kk, distance_upper_bound=tree_bound(bound_chord), workers=-1)
    d, i = d.reshape(len(query_xyz), kk), i.reshape(len(query_xyz), kk)
    hit = i < len(tree_rows)
    ids = np.where(hit, tree_rows[np.minimum(i, len(tree_rows) - 1)], -1)
    km: FloatArray = np.where(hit, chord_to_km(np.where(hit, d, 0.0)), np.inf)
    return ids, km


def spread_candidates(
    needs: Needs,
    offers: Offers,
    *,
    k: int = 8,
    k_spread: int = 8,
    k_reverse: int = 4,
    groups: int | None = None,
    urgent_factor: int = 1,
) -> CandidateEdges:
    """A candidate graph for instances too large for every feasible edge, feasible edges only.

    The k nearest offers of a need are a poor choice when radii differ (a dense town of helpers
    with short radii hides the long-radius ones farther out) or when many needs compete for the
    same helpers (all the needs of a region pick the same nearest ones, and the rest of the
    supply in reach is never seen). So, per category:

    - offers are split into radius bands (powers of two): each need gets its ``k`` nearest offers
      of every band, so far helpers with long radii are reached too;
    - needs and offers are split into ``groups`` pseudo-random groups (a hash of the row index,
      deterministic); each need also gets its ``k_spread`` nearest offers of its own group in every
      band, and each offer its ``k_spread`` nearest needs of its own group (with another hash).
      A crowd of needs then reaches about ``groups`` times as many distinct helpers as with
      nearest ones only. The group is a fourth coordinate, far apart, of one tree per band;
    - each offer gets its ``k_reverse`` nearest needs, so scarce offers are not starved;
    - with ``urgent_factor`` > 1 the critical and urgent needs get a graph of their own on top,
      built the same way among them alone (their own groups; ``urgent_factor`` times ``k``): a
      unit of theirs is worth two or four of a normal one, so where helpers are contested the
      optimum gives them helpers that serve normal needs now, often far down their list of
      nearest ones, and in this graph every offer also looks at the nearest critical and urgent
      needs of its group. On the demo scenario these extra edges closed more of the gap to the
      optimum than as many edges spread over every need (benchmarks/RESULTS.md).

    ``groups`` None: one per 500 needs, 1 to 1024. Needs whose answers hid every feasible offer
    are searched again by radius, so ``in_range`` is exact.
    """
    if k < 1 or k_spread < 0 or k_reverse < 0 or urgent_factor < 1:
        raise InvalidInputError(
            f"k = {k} and urgent_factor = {urgent_factor} must be >= 1, "
            f"k_spread = {k_spread} and k_reverse = {k_reverse} >= 0"
        )
    n = len(needs)
    g = int(np.clip(n // 500, 1, 1024)) if groups is None else groups
    if g < 1:
        raise InvalidInputError(f"groups = {g} must be >= 1")
    usable = np.flatnonzero(offers.is_available & (offers.category_mask != 0))
    parts_need: list[IntArray] = [np.empty(0, dtype=np.int64)]
    parts_offer: list[IntArray] = [np.empty(0, dtype=np.int64)]
    parts_km: list[FloatArray] = [np.empty(0, dtype=np.float64)]
    full = np.zeros(n, dtype=bool)
    if n == 0 or usable.size == 0:
        need, offer, dist = _feasible(needs, offers, parts_need, parts_offer, parts_km)
        return CandidateEdges(need=need, offer=offer, distance_km=dist, in_range=np.zeros(n, dtype=bool))
    need_xyz = lat_lon_to_xyz(needs.lat, needs.lon)
    offer_xyz = lat_lon_to_xyz(offers.lat, offers.lon)
    sep = _GROUP_SEPARATION
    need_group = _groups(np.arange(n, dtype=np.int64), g, _SALTS[0]) * sep
    offer_group = _groups(np.arange(len(offers), dtype=np.int64), g, _SALTS[1]) * sep
    need_group_rev = _groups(np.arange(n, dtype=np.int64), g, _SALTS[2]) * sep
    offer_group_rev = _groups(np.arange(len(offers), dtype=np.int64), g, _SALTS[3]) * sep
    band_of = radius_bands(offers.radius_km)

    def keep(need_ids: IntArray, offer_ids: IntArray, km: FloatArray) -> None:
        parts_need.append(need_ids)
        parts_offer.append(offer_ids)
        parts_km.append(km)

    for c in np.unique(needs.category).tolist():
        serving = usable[((offers.category_mask[usable] >> c) & 1) == 1]
        if serving.size == 0:
            continue
        members = np.flatnonzero(needs.category == c)
        reach = float(min(offers.radius_km[serving].max(), needs.max_km[members].max()))
        bound = float(km_to_chord(reach)) * (1.0 + 1e-9)
        for b in np.unique(band_of[serving]).tolist():
            rows = serving[band_of[serving] == b]
            band_bound = min(bound, float(km_to_chord(offers.radius_km[rows].max())) * (1.0 + 1e-9))
            ids, km = _knn_parts(offer_xyz[rows], rows, need_xyz[members], k, band_bound)
            full[members] |= np.isfinite(km[:, -1])
            keep(np.repeat(members, ids.shape[1]), ids.ravel(), km.ravel())
            if k_spread and g > 1 and rows.size > k:
                ids, km = _knn_parts(
                    np.column_stack([offer_xyz[rows], offer_group[rows]]),
                    rows,
                    np.column_stack([need_xyz[members], need_group[members]]),
                    k_spread,
                    band_bound,
                )
                keep(np.repeat(members, ids.shape[1]), ids.ravel(), km.ravel())
        if k_reverse:
            nid, nd_km = _knn_parts(need_xyz[members], members, offer_xyz[serving], k_reverse, bound)
            keep(nid.ravel(), np.repeat(serving, nid.shape[1]), nd_km.ravel())
        if k_spread and g > 1 and members.size > k_spread:
            nid, nd_km = _knn_parts(
                np.column_stack([need_xyz[members], need_group_rev[members]]),
                members,
                np.column_stack([offer_xyz[serving], offer_group_rev[serving]]),
                k_spread,
                bound,
            )
            keep(nid.ravel(), np.repeat(serving, nid.shape[1]), nd_km.ravel())
    weighty = np.flatnonzero(needs.urgency != NORMAL)
    if urgent_factor > 1 and weighty.size:
        extra = spread_candidates(_subset(needs, weighty), offers, k=k * urgent_factor, k_spread=k_spread, k_reverse=0)
        keep(weighty[extra.need], extra.offer, extra.distance_km)
    bound_km = np.minimum(needs.max_km, float(offers.radius_km[usable].max()))
    need, offer, dist = _with_retry(needs, offers, None, bound_km, full, k, parts_need, parts_offer, parts_km)
    in_range = np.zeros(n, dtype=bool)
    in_range[need] = True
    return CandidateEdges(need=need, offer=offer, distance_km=dist, in_range=in_range)


def _subset(needs: Needs, rows: IntArray) -> Needs:
    return Needs(
        needs.lat[rows],
        needs.lon[rows],
        needs.category[rows],
        needs.quantity[rows],
        needs.urgency[rows],
        needs.max_km[rows],
    )


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
        band = radius_bands(radius, per_doubling=4)
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
