"""Batch assignment against an exact integer-programming optimum and brute-force invariants."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from matching import ALL_IN_RANGE_AT_CAPACITY, NO_OFFER_IN_RANGE, SERVED, Needs, Offers, match
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
    assert result.objective == pytest.approx(optimum(needs, offers), rel=1e-9, abs=1e-6)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**32 - 1))
def test_chunked_large_path_keeps_every_invariant(seed: int) -> None:
    rng = np.random.default_rng(seed)
    needs, offers = random_instance(rng, 40, 30, box_deg=1.0)
    result = match(needs, offers, exact_max_units=1, chunk_units=8, passes=3)
    assert_invariants(needs, offers, result)
    best = optimum(needs, offers)
    nothing = float(np.dot(needs.penalty_km, needs.quantity))
    assert best - 1e-6 <= result.objective <= nothing
    # The first pass alone can be no better than three passes: every chunk solve only improves.
    one_pass = match(needs, offers, exact_max_units=1, chunk_units=8, passes=1)
    assert result.objective <= one_pass.objective + 1e-6


def test_medium_instance_exact_path_matches_the_optimum_and_beats_nearest_first() -> None:
    rng = np.random.default_rng(11)
    needs, offers = random_instance(rng, 60, 45, box_deg=1.5)
    result = match(needs, offers, k=64, k_reverse=16)
    assert_invariants(needs, offers, result)
    best = optimum(needs, offers)
    assert result.objective == pytest.approx(best, rel=1e-9)
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
