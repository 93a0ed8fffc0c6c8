"""The solver's shortcuts against the plain exact min-cost flow: uncontested pieces, parallel groups, prices."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.sparse.csgraph import connected_components

from matching import Needs, Offers, batch, match
from matching.candidates import all_feasible_edges
from matching.pricing import PricedEdges, dual_bound, priced_in_edges, prices
from matching.solve import COST_UNITS_PER_KM, solve_groups, solve_min_cost_flow
from tests.matching.oracle import assert_invariants, optimum
from tests.matching.test_batch import random_instance


def _worth_edges(needs: Needs, offers: Offers) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    edges = all_feasible_edges(needs, offers, max_edges=10**7)
    assert edges is not None
    worth = edges.distance_km < needs.penalty_km[edges.need]
    return edges.need[worth], edges.offer[worth], edges.distance_km[worth]


def _cost(needs: Needs, need: np.ndarray, dist: np.ndarray, flow: np.ndarray) -> float:
    served = np.bincount(need, weights=flow, minlength=len(needs))
    return float(np.dot(flow, dist) + np.dot(needs.penalty_km, needs.quantity - served))


def _sparse_instance(rng: np.random.Generator, n: int) -> tuple[Needs, Offers]:
    """Needs and offers scattered so thinly over a wide box that most pieces are tiny."""
    needs = Needs(
        lat=rng.uniform(40, 50, n),
        lon=rng.uniform(10, 30, n),
        category=rng.integers(0, 3, n),
        quantity=rng.integers(1, 4, n),
        urgency=rng.integers(0, 3, n),
        max_km=np.full(n, np.inf),
    )
    offers = Offers(
        lat=rng.uniform(40, 50, n),
        lon=rng.uniform(10, 30, n),
        category_mask=(np.int64(1) << rng.integers(0, 3, n)) | (np.int64(1) << rng.integers(0, 3, n)),
        capacity=rng.integers(1, 4, n),
        radius_km=rng.uniform(20, 80, n),
    )
    return needs, offers


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(5, 400))
def test_uncontested_pieces_are_optimal_and_the_shortcut_changes_nothing(seed: int, n: int) -> None:
    needs, offers = _sparse_instance(np.random.default_rng(seed), n)
    need, offer, dist = _worth_edges(needs, offers)
    m = len(offers)
    graph = sp.coo_array((np.ones(len(need)), (need, len(needs) + offer)), shape=(len(needs) + m,) * 2)
    n_pieces, label = connected_components(graph, directed=False)
    easy, take = batch._uncontested(needs, offers, need, offer, dist, label, n_pieces)
    exact = solve_min_cost_flow(need, offer, dist, needs.quantity, offers.capacity, needs.penalty_km)
    piece = label[need]
    resolution = 1e-3 * float(needs.quantity.sum()) + 1e-6
    for p in np.flatnonzero(easy):
        mine = piece == p
        # Feasible, and as cheap as the exact flow on the piece.
        assert (np.bincount(offer[mine], weights=take[mine], minlength=m) <= offers.capacity).all()
        assert (np.bincount(need[mine], weights=take[mine], minlength=len(needs)) <= needs.quantity).all()
        assert float(np.dot(take[mine], dist[mine] - needs.penalty_km[need[mine]])) == pytest.approx(
            float(np.dot(exact[mine], dist[mine] - needs.penalty_km[need[mine]])), abs=resolution
        )
    # With the shortcut inside, the whole solve is still the exact optimum.
    flow = batch._solve(needs, offers, need, offer, dist, workers=1)
    assert _cost(needs, need, dist, flow) == pytest.approx(_cost(needs, need, dist, exact), abs=resolution)


def test_uncontested_shortcut_fires_on_scattered_instances() -> None:
    needs, offers = _sparse_instance(np.random.default_rng(3), 300)
    need, offer, dist = _worth_edges(needs, offers)
    graph = sp.coo_array((np.ones(len(need)), (need, len(needs) + offer)), shape=(len(needs) + len(offers),) * 2)
    n_pieces, label = connected_components(graph, directed=False)
    easy, _ = batch._uncontested(needs, offers, need, offer, dist, label, n_pieces)
    has_edges = np.zeros(n_pieces, dtype=bool)
    has_edges[label[need]] = True
    assert 0 < easy.sum() < has_edges.sum()  # some pieces skip the solver, some are contested


def test_parallel_groups_equal_sequential_groups() -> None:
    rng = np.random.default_rng(8)
    needs, offers = random_instance(rng, 600, 500, box_deg=6.0)
    need, offer, dist = _worth_edges(needs, offers)
    # Split by piece so no need or offer is in two groups.
    graph = sp.coo_array((np.ones(len(need)), (need, len(needs) + offer)), shape=(len(needs) + len(offers),) * 2)
    _, label = connected_components(graph, directed=False)
    piece = label[need]
    groups = [np.flatnonzero(piece % 3 == r) for r in range(3)]
    cols = (needs.quantity, offers.capacity, needs.penalty_km)
    one = solve_groups(groups, need, offer, dist, *cols, workers=1)
    import matching.solve as solve_module

    floor = solve_module.PARALLEL_MIN_EDGES
    solve_module.PARALLEL_MIN_EDGES = 0
    try:
        two = solve_groups(groups, need, offer, dist, *cols, workers=2)
    finally:
        solve_module.PARALLEL_MIN_EDGES = floor
    for a, b in zip(one, two, strict=True):
        np.testing.assert_array_equal(a, b)


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**32 - 1))
def test_prices_certify_the_flow_and_price_missing_edges_exactly(seed: int) -> None:
    rng = np.random.default_rng(seed)
    needs, offers = random_instance(rng, 40, 30, box_deg=1.0)
    need, offer, dist = _worth_edges(needs, offers)
    if len(need) == 0:
        return
    # A sparse graph: every other edge. Its optimal flow and prices.
    keep = np.arange(len(need)) % 2 == 0
    sn, so, sd = need[keep], offer[keep], dist[keep]
    flow = solve_min_cost_flow(sn, so, sd, needs.quantity, offers.capacity, needs.penalty_km)
    p_need, p_offer = prices(needs, offers, sn, so, sd, flow)
    cost = np.rint(sd * COST_UNITS_PER_KM).astype(np.int64)
    reduced = cost + p_offer[so] - p_need[sn]
    room = flow < np.minimum(needs.quantity[sn], offers.capacity[so])
    assert (reduced[room] >= 0).all()  # no residual edge prices in
    assert (reduced[flow > 0] <= 0).all()  # edges that carry flow are tight or better
    assert (p_offer >= 0).all()
    assert (p_need <= np.rint(needs.penalty_km * COST_UNITS_PER_KM)).all()
    # Missing edges: the ones found all price in, and when none of the missing ones prices in the
    # flow is optimal over every feasible edge.
    miss_n, miss_o, miss_d = need[~keep], offer[~keep], dist[~keep]
    missing_reduced = np.rint(miss_d * COST_UNITS_PER_KM).astype(np.int64) + p_offer[miss_o] - p_need[miss_n]
    known = np.sort(sn * np.int64(len(offers)) + so)
    expected = set(zip(miss_n[missing_reduced < 0].tolist(), miss_o[missing_reduced < 0].tolist(), strict=True))
    # However small the first k, the search asks again while the last hit is in bound, so up to
    # max_k it finds exactly the missing edges that price in (the graph's own edges, nearer, do
    # not hide them).
    for k in (64, 2, 1):
        new_n, new_o, new_d, exhaustive = priced_in_edges(needs, offers, p_need, p_offer, known, k)
        assert exhaustive
        assert (np.rint(new_d * COST_UNITS_PER_KM).astype(np.int64) + p_offer[new_o] < p_need[new_n]).all()
        assert set(zip(new_n.tolist(), new_o.tolist(), strict=True)) == expected
    # With max_k = k the search stops after the first k: a subset, and it says so when cut short.
    cut_n, cut_o, _, exhaustive = priced_in_edges(needs, offers, p_need, p_offer, known, 1, max_k=1)
    found = set(zip(cut_n.tolist(), cut_o.tolist(), strict=True))
    assert found <= expected
    if found != expected:
        assert not exhaustive
    resolution = 1e-3 * float(needs.quantity.sum()) + 1e-6
    best = optimum(needs, offers)
    if (missing_reduced >= 0).all():
        assert _cost(needs, sn, sd, flow) == pytest.approx(best, abs=resolution)
    # The dual bound from the prices and every edge that prices in never passes the optimum,
    # and meets it when nothing is missing.
    all_n, all_o, all_d = np.concatenate([sn, new_n]), np.concatenate([so, new_o]), np.concatenate([sd, new_d])
    bound = dual_bound(needs, offers, p_need, p_offer, all_n, all_o, all_d)
    assert bound <= best + resolution
    if (missing_reduced >= 0).all():
        assert bound == pytest.approx(best, abs=resolution)


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 2**32 - 1))
def test_priced_rounds_only_improve_and_keep_every_invariant(seed: int) -> None:
    rng = np.random.default_rng(seed)
    needs, offers = random_instance(rng, 50, 40, box_deg=1.0)
    result = match(needs, offers, max_exact_edges=0, k=2, k_reverse=1, priced_rounds=True)
    assert_invariants(needs, offers, result)
    narrow = match(needs, offers, max_exact_edges=0, k=2, k_reverse=1, widen_rounds=0)
    resolution = 1e-3 * float(needs.quantity.sum()) + 1e-6
    assert result.objective <= narrow.objective + resolution
    best = optimum(needs, offers)
    assert result.objective >= best - resolution
    # The gap it reports is a true bound: the optimum is no further below than it says.
    if result.gap_bound is not None:
        assert result.objective <= best * (1 + result.gap_bound) + resolution


def test_priced_rounds_go_on_when_the_search_cannot_prove_a_bound(monkeypatch: pytest.MonkeyPatch) -> None:
    # A search cut short proves nothing: the rounds must not stop on its bound (there is none),
    # they go on until nothing more prices in, and the result claims no gap.
    import matching.batch as batch_module

    def cut_short(*args: Any, **kwargs: Any) -> PricedEdges:
        return priced_in_edges(*args, **kwargs)._replace(exhaustive=False)

    contested = 0
    for seed in range(12):
        needs, offers = random_instance(np.random.default_rng(seed), 50, 40, box_deg=1.0)
        narrow = match(needs, offers, max_exact_edges=0, k=1, k_reverse=0, urgent_factor=1, widen_rounds=0)
        best = optimum(needs, offers)
        resolution = 1e-3 * float(needs.quantity.sum()) + 1e-6
        if narrow.objective <= best * (1 + batch_module.PRICED_GAP) + resolution:
            continue
        contested += 1
        with monkeypatch.context() as patch:
            patch.setattr(batch_module, "priced_in_edges", cut_short)
            result = match(needs, offers, max_exact_edges=0, k=1, k_reverse=0, urgent_factor=1, priced_rounds=True)
        assert_invariants(needs, offers, result)
        assert result.gap_bound is None
        assert result.objective < narrow.objective - resolution
        proven = match(needs, offers, max_exact_edges=0, k=1, k_reverse=0, urgent_factor=1, priced_rounds=True)
        assert proven.gap_bound is not None
        assert proven.objective <= best * (1 + proven.gap_bound) + resolution
    assert contested >= 3


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), k=st.sampled_from([1, 2, 16]))
def test_priced_search_finds_offers_that_share_a_place(seed: int, k: int) -> None:
    # Helpers geocoded to a town's centre share its coordinates: their distances tie, and the
    # k-d tree returns tied items in no fixed order. A wider search must not lose the ones the
    # narrower one left out at the tie.
    rng = np.random.default_rng(seed)
    m, n = int(rng.integers(30, 300)), 5
    towns = rng.uniform(-0.3, 0.3, (int(rng.integers(2, 10)), 2))
    at = rng.integers(0, len(towns), m)
    offers = Offers(
        lat=towns[at, 0],
        lon=towns[at, 1],
        category_mask=np.ones(m, dtype=np.int64),
        capacity=np.ones(m, dtype=np.int64),
        radius_km=np.full(m, 100.0),
    )
    needs = Needs(
        lat=rng.uniform(-0.3, 0.3, n),
        lon=rng.uniform(-0.3, 0.3, n),
        category=np.zeros(n, dtype=np.int64),
        quantity=np.full(n, 3),
        urgency=np.full(n, 2),
        max_km=np.full(n, np.inf),
    )
    # Every need worth nearly its penalty, every offer free: every feasible pair prices in.
    p_need = np.rint(needs.penalty_km * COST_UNITS_PER_KM).astype(np.int64) - 1000
    found = priced_in_edges(needs, offers, p_need, np.zeros(m, dtype=np.int64), np.empty(0, dtype=np.int64), k)
    edges = all_feasible_edges(needs, offers, max_edges=10**6)
    assert edges is not None
    assert found.exhaustive
    got = set(zip(found.need.tolist(), found.offer.tolist(), strict=True))
    assert got == set(zip(edges.need.tolist(), edges.offer.tolist(), strict=True))


def test_helpers_who_go_anywhere_are_matched_on_every_path() -> None:
    # radius_km = inf is allowed (a helper who goes anywhere); the radius bands must not choke on it.
    rng = np.random.default_rng(7)
    needs, offers = random_instance(rng, 60, 30, box_deg=1.0)
    radius = offers.radius_km.copy()
    radius[::3] = np.inf
    offers = Offers(offers.lat, offers.lon, offers.category_mask, offers.capacity, radius)
    best = optimum(needs, offers)
    resolution = 1e-3 * float(needs.quantity.sum()) + 1e-6
    for kwargs in ({}, {"max_exact_edges": 0}, {"max_exact_edges": 0, "k": 1, "priced_rounds": True}):
        result = match(needs, offers, **kwargs)  # type: ignore[arg-type]
        assert_invariants(needs, offers, result)
        assert result.objective == pytest.approx(best, abs=resolution)
