"""Independent brute-force oracles for the matching tests: all pairs by haversine, optimum by MILP."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.optimize import Bounds, LinearConstraint, milp

from geo.sphere import haversine_km
from matching import URGENCY_WEIGHT, Assignment, Needs, Offers


def feasible_pairs(needs: Needs, offers: Offers) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every feasible (need, offer, km) pair, by brute force."""
    d = haversine_km(needs.lat[:, None], needs.lon[:, None], offers.lat[None, :], offers.lon[None, :])
    serves = ((offers.category_mask[None, :] >> needs.category[:, None]) & 1) == 1
    ok = serves & (d <= offers.radius_km[None, :]) & (d <= needs.max_km[:, None]) & offers.is_available[None, :]
    i, j = np.nonzero(ok)
    return i, j, d[i, j]


def optimum(needs: Needs, offers: Offers, excluded: set[tuple[int, int]] | None = None) -> float:
    """The exact minimum of Σ units × km + Σ 1000 × w × unserved units, by integer programming
    (over the feasible pairs not in ``excluded``, a set of (need row, offer row))."""
    penalty = 1000.0 * URGENCY_WEIGHT[needs.urgency]
    base = float(np.dot(penalty, needs.quantity))
    i, j, d = feasible_pairs(needs, offers)
    if excluded:
        keep = np.array([(int(a), int(b)) not in excluded for a, b in zip(i, j, strict=True)], dtype=bool)
        i, j, d = i[keep], j[keep], d[keep]
    if len(i) == 0:
        return base
    e = len(i)
    a_need = np.zeros((len(needs), e))
    a_need[i, np.arange(e)] = 1.0
    a_offer = np.zeros((len(offers), e))
    a_offer[j, np.arange(e)] = 1.0
    result = milp(
        d - penalty[i],
        constraints=[
            LinearConstraint(a_need, 0, needs.quantity),
            LinearConstraint(a_offer, 0, offers.capacity),
        ],
        integrality=np.ones(e),
        bounds=Bounds(0, np.inf),
    )
    assert result.success
    return base + float(result.fun)


def assert_invariants(needs: Needs, offers: Offers, result: Assignment) -> None:
    """Hard constraints, bookkeeping and reason codes of an assignment, checked by brute force."""
    n_idx, o_idx = result.need_index, result.offer_index
    assert (result.quantity > 0).all()
    d = haversine_km(needs.lat[n_idx], needs.lon[n_idx], offers.lat[o_idx], offers.lon[o_idx])
    np.testing.assert_allclose(result.distance_km, d, rtol=1e-7, atol=1e-6)
    assert (((offers.category_mask[o_idx] >> needs.category[n_idx]) & 1) == 1).all()
    assert (d <= offers.radius_km[o_idx] + 1e-6).all()
    assert (d <= needs.max_km[n_idx] + 1e-6).all()
    assert offers.is_available[o_idx].all()
    used = np.bincount(o_idx, weights=result.quantity, minlength=len(offers))
    assert (used <= offers.capacity).all()
    served = np.bincount(n_idx, weights=result.quantity, minlength=len(needs))
    np.testing.assert_array_equal(served, result.served)
    assert (served <= needs.quantity).all()
    # Rows are unique (need, offer) pairs.
    assert len(np.unique(n_idx * max(len(offers), 1) + o_idx)) == len(n_idx)
    penalty = 1000.0 * URGENCY_WEIGHT[needs.urgency]
    expected = float(np.dot(result.quantity, d) + np.dot(penalty, needs.quantity - served))
    assert result.objective == pytest.approx(expected, rel=1e-9, abs=1e-6)
    i, _, _ = feasible_pairs(needs, offers)
    in_range = np.zeros(len(needs), dtype=bool)
    in_range[i] = True
    short = served < needs.quantity
    np.testing.assert_array_equal(result.reason == 0, ~short)
    np.testing.assert_array_equal(result.reason[short] == 1, ~in_range[short])
