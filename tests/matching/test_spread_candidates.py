"""The spread candidate graph (radius bands, pseudo-random groups) and the batch's time budget."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from matching import NORMAL, InvalidInputError, Needs, Offers, match
from matching.candidates import build_candidates, spread_candidates
from tests.matching.oracle import assert_invariants, feasible_pairs, optimum
from tests.matching.test_batch import random_instance


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 2**32 - 1),
    groups=st.sampled_from([1, 3, 16]),
    k=st.integers(1, 4),
    urgent_factor=st.sampled_from([1, 2, 3]),
)
def test_spread_edges_are_feasible_sorted_unique_and_in_range_is_exact(
    seed: int, groups: int, k: int, urgent_factor: int
) -> None:
    rng = np.random.default_rng(seed)
    needs, offers = random_instance(rng, 80, 60, box_deg=3.0)
    edges = spread_candidates(needs, offers, k=k, k_spread=k, k_reverse=1, groups=groups, urgent_factor=urgent_factor)
    i, j, d = feasible_pairs(needs, offers)
    want = dict(zip(zip(i.tolist(), j.tolist(), strict=True), d.tolist(), strict=True))
    got = list(zip(edges.need.tolist(), edges.offer.tolist(), strict=True))
    assert got == sorted(set(got)), "edges sorted by (need, offer), no duplicates"
    for key, km in zip(got, edges.distance_km.tolist(), strict=True):
        assert key in want, f"infeasible edge {key}"
        assert km == pytest.approx(want[key], abs=1e-6)
    assert edges.in_range.tolist() == [bool((i == q).any()) for q in range(len(needs))]
    again = spread_candidates(needs, offers, k=k, k_spread=k, k_reverse=1, groups=groups, urgent_factor=urgent_factor)
    np.testing.assert_array_equal(again.need, edges.need)
    np.testing.assert_array_equal(again.offer, edges.offer)
    if urgent_factor > 1:
        # The critical and urgent needs' own graph only adds edges.
        plain = spread_candidates(needs, offers, k=k, k_spread=k, k_reverse=1, groups=groups)
        assert set(zip(plain.need.tolist(), plain.offer.tolist(), strict=True)) <= set(got)


def test_critical_and_urgent_needs_see_urgent_factor_times_as_many_nearest_offers() -> None:
    rng = np.random.default_rng(11)
    needs, offers = random_instance(rng, 150, 120, box_deg=1.0)
    factor = 3
    edges = spread_candidates(needs, offers, k=1, k_spread=0, k_reverse=0, urgent_factor=factor)
    i, j, d = feasible_pairs(needs, offers)
    band = np.floor(np.log2(offers.radius_km)).astype(np.int64)
    have = set(zip(edges.need.tolist(), edges.offer.tolist(), strict=True))
    weighty = [q for q in range(len(needs)) if needs.urgency[q] != NORMAL]
    normal = [q for q in range(len(needs)) if needs.urgency[q] == NORMAL]
    assert weighty
    assert normal
    for q in weighty:
        for b in np.unique(band[j[i == q]]).tolist():
            sel = (i == q) & (band[j] == b)
            # As in the test above: offers of the band nearer than its lower edge are all feasible.
            near = j[sel][np.argsort(d[sel], kind="stable")][:factor]
            for o, km in zip(near.tolist(), np.sort(d[sel])[:factor].tolist(), strict=True):
                if km <= 2.0**b:
                    assert (q, o) in have
    # Normal needs keep one per band (plus what the radius search adds when that one is infeasible).
    per_need = np.bincount(edges.need, minlength=len(needs))
    bands_of_need = [len(np.unique(band[j[i == q]])) for q in normal]
    assert max(per_need[q] - b for q, b in zip(normal, bands_of_need, strict=True)) <= 1


def test_every_need_sees_its_nearest_feasible_offer_of_each_radius_band() -> None:
    rng = np.random.default_rng(5)
    needs, offers = random_instance(rng, 120, 90, box_deg=2.0)
    edges = spread_candidates(needs, offers, k=1, k_spread=0, k_reverse=0)
    i, j, d = feasible_pairs(needs, offers)
    band = np.floor(np.log2(offers.radius_km)).astype(np.int64)
    have = set(zip(edges.need.tolist(), edges.offer.tolist(), strict=True))
    for q in range(len(needs)):
        for b in np.unique(band[j[i == q]]).tolist():
            sel = (i == q) & (band[j] == b)
            # The nearest offer of the band that serves the need's category is within every
            # offer's radius of the band only up to the band's lower edge; beyond, it may be
            # infeasible and another one found by the radius search instead.
            nearest = j[sel][np.argmin(d[sel])]
            if d[sel].min() <= 2.0**b:
                assert (q, int(nearest)) in have


def test_long_radius_helpers_behind_a_crowd_of_short_radius_ones_are_reached() -> None:
    # Six needs in one village; eight short-radius helpers next to it (the nearest ones, but only
    # two of them serve), and ten long-radius helpers 120 km away that serve. Nearest offers only
    # (k = 4) see none of the far ones; the radius bands do, and the budget path serves every unit.
    n_far = 10
    needs = Needs(
        lat=np.full(6, 55.0),
        lon=np.linspace(40.0, 40.01, 6),
        category=np.zeros(6, dtype=np.int64),
        quantity=np.ones(6, dtype=np.int64),
        urgency=np.full(6, 2),
        max_km=np.full(6, np.inf),
    )
    near_lat = np.array([55.29, 55.29, 55.3, 55.3, 55.3, 55.3, 55.3, 55.3])  # 32-33 km north
    offers = Offers(
        lat=np.concatenate([near_lat, np.full(n_far, 56.08)]),
        lon=np.concatenate([np.linspace(40.0, 40.02, 8), np.linspace(40.0, 40.05, n_far)]),
        category_mask=np.ones(8 + n_far, dtype=np.int64),
        capacity=np.ones(8 + n_far, dtype=np.int64),
        radius_km=np.concatenate([[40.0, 40.0], np.full(6, 10.0), np.full(n_far, 150.0)]),
    )
    nearest = build_candidates(needs, offers, k=4, k_reverse=0)
    assert not (nearest.offer >= 8).any()
    spread = spread_candidates(needs, offers, k=4, k_spread=0, k_reverse=0)
    assert (spread.offer >= 8).any()
    result = match(needs, offers, max_exact_edges=0, k=4, k_reverse=0)
    assert_invariants(needs, offers, result)
    assert result.served_units == 6
    assert result.objective == pytest.approx(optimum(needs, offers), abs=1e-2)


def test_spread_candidates_reject_bad_parameters() -> None:
    needs, offers = random_instance(np.random.default_rng(1), 5, 5)
    with pytest.raises(InvalidInputError, match="k = 0"):
        spread_candidates(needs, offers, k=0)
    with pytest.raises(InvalidInputError, match="groups = 0"):
        spread_candidates(needs, offers, groups=0)
    with pytest.raises(InvalidInputError, match="urgent_factor = 0"):
        spread_candidates(needs, offers, urgent_factor=0)


def test_a_spent_time_budget_stops_the_rounds_and_says_so() -> None:
    rng = np.random.default_rng(3)
    needs, offers = random_instance(rng, 300, 200, box_deg=1.5)
    full = match(needs, offers, max_exact_edges=0, k=1, k_reverse=0)
    assert full.complete
    first = match(needs, offers, max_exact_edges=0, k=1, k_reverse=0, widen_rounds=0)
    cut = match(needs, offers, max_exact_edges=0, k=1, k_reverse=0, time_budget_s=1e-9)
    assert not cut.complete
    assert_invariants(needs, offers, cut)
    # Only the first solve ran: the same answer as no rounds at all.
    assert cut.objective == first.objective
    np.testing.assert_array_equal(cut.quantity, first.quantity)
    assert full.objective <= cut.objective
    # Exact path: no rounds to cut.
    assert match(needs, offers, time_budget_s=1e-9).complete
    with pytest.raises(InvalidInputError, match="time_budget_s"):
        match(needs, offers, time_budget_s=0)
