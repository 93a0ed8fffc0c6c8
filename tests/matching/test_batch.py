"""Batch assignment against an exact integer-programming optimum and brute-force invariants."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy.sparse.csgraph import connected_components

from matching import (
    ALL_IN_RANGE_AT_CAPACITY,
    ALL_IN_RANGE_EXCLUDED,
    NO_OFFER_IN_RANGE,
    SERVED,
    URGENCY_WEIGHT,
    Needs,
    Offers,
    batch,
    match,
)
from matching.candidates import all_feasible_edges, build_candidates
from matching.errors import InvalidInputError
from tests.matching.oracle import assert_invariants, feasible_pairs, optimum


def random_instance(
    rng: np.random.Generator, n_needs: int, n_offers: int, *, n_cat: int = 3, box_deg: float = 2.0
) -> tuple[Needs, Offers]:
    """Needs and offers in a box straddling the ±180° meridian (or at the pole, by coin flip)."""
    at_pole = rng.random() < 0.25

    def points(n: int) -> tuple[np.ndarray, np.ndarray]:
        if at_pole:
            return rng.uniform(90 - box_deg / 2, 90, n), rng.uniform(-180, 180, n)
        lon = (180 + rng.uniform(-box_deg, box_deg, n) + 180) % 360 - 180
        return rng.uniform(-box_deg, box_deg, n), lon

    nlat, nlon = points(n_needs)
    olat, olon = points(n_offers)
    needs = Needs(
        lat=nlat,
        lon=nlon,
        category=rng.integers(0, n_cat, n_needs),
        quantity=rng.integers(1, 4, n_needs),
        urgency=rng.integers(0, 3, n_needs),
        max_km=np.where(rng.random(n_needs) < 0.5, np.inf, rng.uniform(20, 300, n_needs)),
    )
    mask = (np.int64(1) << rng.integers(0, n_cat, n_offers)) | np.where(
        rng.random(n_offers) < 0.4, np.int64(1) << rng.integers(0, n_cat, n_offers), 0
    )
    offers = Offers(
        lat=olat,
        lon=olon,
        category_mask=mask.astype(np.int64),
        capacity=rng.integers(1, 4, n_offers),
        radius_km=rng.uniform(10, 250, n_offers),
        available=rng.random(n_offers) < 0.9,
    )
    return needs, offers


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32 - 1), n_needs=st.integers(0, 8), n_offers=st.integers(0, 8))
def test_small_instances_reach_the_exact_optimum(seed: int, n_needs: int, n_offers: int) -> None:
    needs, offers = random_instance(np.random.default_rng(seed), n_needs, n_offers)
    result = match(needs, offers)
    assert_invariants(needs, offers, result)
    assert result.objective == pytest.approx(optimum(needs, offers), abs=_resolution(needs))


@pytest.mark.parametrize("path", ["exact", "widening", "priced"])
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32 - 1))
def test_excluded_pairs_are_never_used_and_the_rest_is_optimal(path: str, seed: int) -> None:
    """Pairs already asked (a helper about a need) are left out; the assignment is optimal over the others
    (the exact path exactly; the candidate paths never better than that optimum, and their proven gap
    holds against it)."""
    rng = np.random.default_rng(seed)
    needs, offers = random_instance(rng, 12, 10, box_deg=1.0)
    i, j, km = feasible_pairs(needs, offers)
    pick = rng.random(len(i)) < 0.4
    excluded = (i[pick], j[pick])
    banned = {(int(a), int(b)) for a, b in zip(*excluded, strict=True)}
    if path == "exact":
        result = match(needs, offers, excluded=excluded)
    else:
        result = match(
            needs, offers, excluded=excluded, max_exact_edges=0, k=2, k_reverse=1, priced_rounds=path == "priced"
        )
    assert_invariants(needs, offers, result)
    used = {(int(a), int(b)) for a, b in zip(result.need_index, result.offer_index, strict=True)}
    assert not used & banned
    best = optimum(needs, offers, banned)
    assert result.objective >= best - _resolution(needs)
    if path == "exact":
        assert result.objective == pytest.approx(best, abs=_resolution(needs))
    if result.gap_bound is not None:
        assert result.objective <= best * (1 + result.gap_bound) + _resolution(needs)
    # Without the exclusions the optimum can only be as good or better.
    assert optimum(needs, offers) <= best + _resolution(needs)
    # By brute force over the pairs: a need left short whose every pair in range worth its trip is
    # excluded has its own reason (nobody left to ask), whichever path found the assignment.
    worth = km < 1000.0 * URGENCY_WEIGHT[needs.urgency[i]]
    has_open = np.bincount(i[worth & ~pick], minlength=len(needs)) > 0
    has_excluded = np.bincount(i[worth & pick], minlength=len(needs)) > 0
    short = result.served < needs.quantity
    all_excluded = short & ~has_open & has_excluded
    said = result.reason == ALL_IN_RANGE_EXCLUDED
    assert not (all_excluded & ~said).any()
    assert not (said & ~(short & has_excluded)).any()
    if path == "exact":  # every feasible edge is in the graph: the reason is exact
        np.testing.assert_array_equal(said, all_excluded)


def test_excluded_pairs_must_name_rows_of_the_instance() -> None:
    needs, offers = random_instance(np.random.default_rng(1), 3, 2)
    with pytest.raises(InvalidInputError, match=r"excluded pair 1 = \(3, 0\) is out of range \(3 needs, 2 offers\)"):
        match(needs, offers, excluded=(np.array([0, 3]), np.array([0, 0])))
    with pytest.raises(InvalidInputError, match="one length"):
        match(needs, offers, excluded=(np.array([0, 1]), np.array([0])))


@pytest.mark.parametrize("priced", [False, True], ids=["widening", "priced"])
@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**32 - 1))
def test_nearest_candidates_path_keeps_every_invariant_and_rounds_only_help(priced: bool, seed: int) -> None:
    rng = np.random.default_rng(seed)
    needs, offers = random_instance(rng, 40, 30, box_deg=1.0)
    result = match(needs, offers, max_exact_edges=0, k=2, k_reverse=1, priced_rounds=priced)
    assert_invariants(needs, offers, result)
    best = optimum(needs, offers)
    nothing = float(np.dot(needs.penalty_km, needs.quantity))
    assert best - _resolution(needs) <= result.objective <= nothing
    # Each round solves exactly over a superset of edges: never worse than none.
    narrow = match(needs, offers, max_exact_edges=0, k=2, k_reverse=1, widen_rounds=0)
    assert result.objective <= narrow.objective + _resolution(needs)
    assert result.served_units >= narrow.served_units


@pytest.mark.parametrize("priced", [False, True], ids=["widening", "priced"])
def test_rounds_find_the_helper_in_the_next_town(priced: bool) -> None:
    # Two needs in town A share its one helper; the helper of town B (40 km) can serve both but is
    # nobody's nearest. The nearest-candidate graph alone serves one unit; either kind of round
    # (widening along augmenting paths, or by prices) serves two.
    needs = Needs(
        lat=np.array([55.0, 55.001]),
        lon=np.array([40.0, 40.0]),
        category=np.array([0, 0]),
        quantity=np.array([1, 1]),
        urgency=np.array([2, 2]),
        max_km=np.full(2, np.inf),
    )
    offers = Offers(
        lat=np.array([55.0, 55.36]),
        lon=np.array([40.001, 40.0]),
        category_mask=np.array([1, 1]),
        capacity=np.array([1, 1]),
        radius_km=np.array([50.0, 50.0]),
    )
    narrow = match(needs, offers, max_exact_edges=0, k=1, k_reverse=0, widen_rounds=0)
    assert narrow.served_units == 1
    wide = match(needs, offers, max_exact_edges=0, k=1, k_reverse=0, priced_rounds=priced)
    assert wide.served_units == 2
    assert wide.objective == pytest.approx(optimum(needs, offers), abs=_resolution(needs))
    exact = match(needs, offers)
    assert exact.objective == pytest.approx(wide.objective, abs=_resolution(needs))


def _resolution(needs: Needs) -> float:
    """The solver works in whole metres: the optimum it finds may be 1 m per unit off in km."""
    return 1e-3 * float(needs.quantity.sum()) + 1e-6


def test_medium_instance_exact_path_matches_the_optimum_and_beats_nearest_first() -> None:
    rng = np.random.default_rng(11)
    needs, offers = random_instance(rng, 60, 45, box_deg=1.5)
    result = match(needs, offers, k=64, k_reverse=16, max_exact_edges=0)
    assert_invariants(needs, offers, result)
    best = optimum(needs, offers)
    assert result.objective == pytest.approx(best, abs=_resolution(needs))
    # A nearest-first greedy (each need in order takes its nearest offers with room) is the baseline.
    i, j, d = feasible_pairs(needs, offers)
    left = offers.capacity.copy()
    greedy = float(np.dot(needs.penalty_km, needs.quantity))
    for need in range(len(needs)):
        want = int(needs.quantity[need])
        mine = np.flatnonzero(i == need)
        for e in mine[np.argsort(d[mine], kind="stable")]:
            take = min(want, int(left[j[e]]))
            if take and d[e] < needs.penalty_km[need]:
                left[j[e]] -= take
                want -= take
                greedy += take * (d[e] - needs.penalty_km[need])
    assert result.objective <= greedy + 1e-6


def test_urgency_wins_a_scarce_offer_and_reasons_are_given() -> None:
    # One offer with one unit; a normal need right next to it and a critical one 30 km away.
    needs = Needs(
        lat=np.array([10.0, 10.27, 10.0, 40.0]),
        lon=np.array([20.0, 20.0, 20.01, 20.0]),
        category=np.array([1, 1, 2, 1]),
        quantity=np.array([1, 1, 1, 1]),
        urgency=np.array([2, 0, 0, 0]),
        max_km=np.full(4, np.inf),
    )
    offers = Offers(
        lat=np.array([10.0, 10.0]),
        lon=np.array([20.0, 20.0]),
        category_mask=np.array([0b010, 0b100]),
        capacity=np.array([1, 2]),
        radius_km=np.array([50.0, 50.0]),
        available=np.array([True, False]),
    )
    result = match(needs, offers)
    assert result.need_index.tolist() == [1]
    assert result.offer_index.tolist() == [0]
    assert result.distance_km[0] == pytest.approx(30.0, abs=0.1)
    assert result.reason.tolist() == [ALL_IN_RANGE_AT_CAPACITY, SERVED, NO_OFFER_IN_RANGE, NO_OFFER_IN_RANGE]
    assert_invariants(needs, offers, result)


def test_split_need_and_determinism() -> None:
    rng = np.random.default_rng(5)
    needs, offers = random_instance(rng, 200, 150, box_deg=1.0)
    a = match(needs, offers)
    b = match(needs, offers)
    for name in ("need_index", "offer_index", "quantity", "distance_km", "served", "reason"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    assert_invariants(needs, offers, a)
    # Some need is served by more than one offer: quantities really split.
    assert np.bincount(a.need_index).max() > 1


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**32 - 1))
def test_all_feasible_edges_equal_brute_force(seed: int) -> None:
    rng = np.random.default_rng(seed)
    needs, offers = random_instance(rng, 60, 40, box_deg=3.0)
    i, j, d = feasible_pairs(needs, offers)
    edges = all_feasible_edges(needs, offers, max_edges=10**6)
    assert edges is not None
    got = dict(
        zip(zip(edges.need.tolist(), edges.offer.tolist(), strict=True), edges.distance_km.tolist(), strict=True)
    )
    want = dict(zip(zip(i.tolist(), j.tolist(), strict=True), d.tolist(), strict=True))
    assert got.keys() == want.keys()
    for key, km in want.items():
        assert got[key] == pytest.approx(km, abs=1e-6)
    assert edges.in_range.tolist() == [bool((i == k).any()) for k in range(len(needs))]
    if len(i) > 1:
        assert all_feasible_edges(needs, offers, max_edges=len(i) - 1) is None


def test_resolving_only_changed_pieces_equals_a_full_solve() -> None:
    rng = np.random.default_rng(21)
    needs, offers = random_instance(rng, 300, 200, box_deg=4.0)
    edges = build_candidates(needs, offers, k=4, k_reverse=2)
    worth = edges.distance_km < needs.penalty_km[edges.need]
    need, offer, dist = edges.need[worth], edges.offer[worth], edges.distance_km[worth]
    full = batch._solve(needs, offers, need, offer, dist)
    n = len(needs)
    graph = sp.coo_array((np.ones(len(need)), (need, n + offer)), shape=(n + len(offers),) * 2)
    n_pieces, label = connected_components(graph, directed=False)
    assert n_pieces > 2
    # Forget the flows of one piece and mark one of its edges changed: only that piece is solved
    # again; every other piece keeps its flows (here: garbage, to prove they are not touched).
    piece = label[need] == label[need[np.argmax(full)]]
    previous = np.where(piece, 0, full)
    changed = np.zeros(len(need), dtype=bool)
    changed[np.flatnonzero(piece)[0]] = True
    again = batch._solve(needs, offers, need, offer, dist, previous=previous, changed=changed)
    np.testing.assert_array_equal(again[~piece], full[~piece])
    garbage = np.where(piece, full, 7)
    untouched = batch._solve(needs, offers, need, offer, dist, previous=garbage, changed=changed)
    np.testing.assert_array_equal(untouched[~piece], 7)

    def cost(flow: np.ndarray) -> float:
        served = np.bincount(need, weights=flow, minlength=len(needs))
        return float(np.dot(flow, dist) + np.dot(needs.penalty_km, needs.quantity - served))

    assert cost(again) == pytest.approx(cost(full), abs=1e-3 * float(needs.quantity.sum()))


def test_rounds_are_priced_on_graphs_up_to_the_limit_and_widen_above(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(21)
    needs, offers = random_instance(rng, 120, 90, box_deg=1.0)
    priced = match(needs, offers, max_exact_edges=0, k=1, k_reverse=0, priced_rounds=True)
    widened = match(needs, offers, max_exact_edges=0, k=1, k_reverse=0, priced_rounds=False)
    assert (priced.objective, priced.served_units) != (widened.objective, widened.served_units)
    small = match(needs, offers, max_exact_edges=0, k=1, k_reverse=0)
    np.testing.assert_array_equal(small.quantity, priced.quantity)
    assert small.objective == priced.objective
    monkeypatch.setattr(batch, "PRICED_MAX_EDGES", 0)
    large = match(needs, offers, max_exact_edges=0, k=1, k_reverse=0)
    np.testing.assert_array_equal(large.quantity, widened.quantity)
    assert large.objective == widened.objective


@pytest.mark.parametrize("priced", [False, True], ids=["widening", "priced"])
def test_an_offer_with_a_radius_of_zero_serves_the_needs_at_its_place(priced: bool) -> None:
    """Ten needs at one point, an offer there with radius 0 km and one 10 km away: the candidate paths
    find the edges of length 0 (a k-d tree's strict bound would miss them) and the proven gap holds."""
    n = 10
    needs = Needs(
        np.full(n, 55.0), np.full(n, 37.0), np.zeros(n, int), np.ones(n, int), np.full(n, 2), np.full(n, np.inf)
    )
    offers = Offers(
        np.array([55.0, 55.0 + 10 / 111.2]),
        np.array([37.0, 37.0]),
        np.array([1, 1]),
        np.array([10, 10]),
        np.array([0.0, 50.0]),
    )
    result = match(needs, offers, max_exact_edges=0, priced_rounds=priced)
    assert_invariants(needs, offers, result)
    assert result.offer_index.tolist() == [0] * n
    assert optimum(needs, offers) == pytest.approx(0.0)
    assert result.objective == pytest.approx(0.0, abs=_resolution(needs))
    assert result.gap_bound is None or result.gap_bound >= 0.0
