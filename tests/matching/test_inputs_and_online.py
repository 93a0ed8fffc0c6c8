"""Input validation with the numbers in the message, and the online nearest-capable lookup."""

from __future__ import annotations

import numpy as np
import pytest

from geo.sphere import haversine_km
from matching import InvalidInputError, Needs, Offers, in_reach, nearest_capable, offer_index, online


def _needs(**change: object) -> Needs:
    cols: dict[str, object] = {
        "lat": np.array([1.0, 2.0, 3.0]),
        "lon": np.array([1.0, 2.0, 3.0]),
        "category": np.array([0, 1, 2]),
        "quantity": np.array([1, 2, 3]),
        "urgency": np.array([0, 1, 2]),
        "max_km": np.array([np.inf, 10.0, 5.0]),
    }
    cols.update(change)
    return Needs(**cols)  # type: ignore[arg-type]


def _offers(**change: object) -> Offers:
    cols: dict[str, object] = {
        "lat": np.array([1.0, 2.0]),
        "lon": np.array([1.0, 2.0]),
        "category_mask": np.array([1, 6]),
        "capacity": np.array([1, 2]),
        "radius_km": np.array([50.0, 20.0]),
    }
    cols.update(change)
    return Offers(**cols)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"lat": np.array([1.0, 91.0, 3.0])}, r"lat\[1\] = 91\.0"),
        ({"lon": np.array([1.0, 2.0, np.nan])}, r"lon\[2\] = nan"),
        ({"category": np.array([0, 63, 2])}, r"needs\.category\[1\] = 63"),
        ({"category": np.array([0, 1, -1])}, r"needs\.category\[2\] = -1"),
        ({"quantity": np.array([1, 0, 3])}, r"needs\.quantity\[1\] = 0 must be positive"),
        ({"urgency": np.array([0, 3, 2])}, r"needs\.urgency\[1\] = 3"),
        ({"max_km": np.array([1.0, np.nan, 1.0])}, r"needs\.max_km\[1\] = nan"),
        ({"quantity": np.array([1, 2])}, r"needs\.quantity has shape \(2,\) but lat has shape \(3,\)"),
        ({"quantity": np.array([1.0, 2.5, 3.0])}, r"needs\.quantity\[1\] = 2\.5 is not an integer"),
    ],
)
def test_bad_needs_name_index_and_value(change: dict[str, object], message: str) -> None:
    with pytest.raises(InvalidInputError, match=message):
        _needs(**change)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"lat": np.array([-90.5, 2.0])}, r"lat\[0\] = -90\.5"),
        ({"capacity": np.array([1, -2])}, r"offers\.capacity\[1\] = -2 must be positive"),
        ({"radius_km": np.array([np.nan, 1.0])}, r"offers\.radius_km\[0\] = nan"),
        ({"category_mask": np.array([1, -5])}, r"offers\.category_mask\[1\] = -5"),
        ({"available": np.array([True])}, r"offers\.available has shape \(1,\)"),
        ({"radius_km": np.array([1.0, 2.0, 3.0])}, r"radius_km has shape \(3,\) but lat has shape \(2,\)"),
    ],
)
def test_bad_offers_name_index_and_value(change: dict[str, object], message: str) -> None:
    with pytest.raises(InvalidInputError, match=message):
        _offers(**change)


def test_errors_are_value_errors() -> None:
    with pytest.raises(ValueError, match="lat"):
        _needs(lat=np.array([0.0, 0.0, 100.0]))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_nearest_capable_equals_brute_force(seed: int) -> None:
    rng = np.random.default_rng(seed)
    m = 3000
    offers = Offers(
        lat=rng.uniform(-5, 5, m),
        lon=(180 + rng.uniform(-5, 5, m) + 180) % 360 - 180,
        category_mask=(np.int64(1) << rng.integers(0, 4, m)).astype(np.int64),
        capacity=rng.integers(1, 4, m),
        radius_km=rng.uniform(5, 120, m),
        available=rng.random(m) < 0.8,
    )
    remaining = np.where(rng.random(m) < 0.5, 0, offers.capacity)
    index = offer_index(offers)
    n = 40
    qlat, qlon = rng.uniform(-5, 5, n), (180 + rng.uniform(-5, 5, n) + 180) % 360 - 180
    cat = rng.integers(0, 4, n)
    max_km = np.where(rng.random(n) < 0.5, np.inf, rng.uniform(10, 100, n))
    ids, dist = nearest_capable(index, offers, remaining, qlat, qlon, cat, max_km=max_km, k=4)
    d = haversine_km(qlat[:, None], qlon[:, None], offers.lat[None, :], offers.lon[None, :])
    ok = (((offers.category_mask[None, :] >> cat[:, None]) & 1) == 1) & (d <= offers.radius_km[None, :])
    ok &= (remaining[None, :] > 0) & offers.is_available[None, :] & (d <= max_km[:, None])
    oracle = np.where(ok, d, np.inf)
    order = np.argsort(oracle, axis=1, kind="stable")[:, :4]
    exp_d = np.take_along_axis(oracle, order, axis=1)
    np.testing.assert_array_equal(ids, np.where(np.isfinite(exp_d), order, -1))
    np.testing.assert_allclose(dist, exp_d, rtol=1e-9, atol=1e-6)
    # One need at a time (its own path, scalars as the intake passes them) answers as in the batch.
    for i in range(n):
        ids_1, dist_1 = nearest_capable(
            index, offers, remaining, qlat[i], qlon[i], int(cat[i]), max_km=float(max_km[i]), k=4
        )
        np.testing.assert_array_equal(ids_1[0], ids[i])
        np.testing.assert_array_equal(dist_1[0], dist[i])
    # A bounded search looks at no more than that many nearest offers, one need or many.
    some, _ = nearest_capable(index, offers, remaining, qlat, qlon, cat, max_km=max_km, k=4, max_candidates=12)
    for i in range(n):
        bounded, _ = nearest_capable(
            index,
            offers,
            remaining,
            qlat[i : i + 1],
            qlon[i : i + 1],
            cat[i : i + 1],
            max_km=max_km[i],
            k=4,
            max_candidates=12,
        )
        np.testing.assert_array_equal(bounded[0], some[i])
    # After serving, a full offer drops out of the answers at once.
    first = ids[0, 0]
    if first >= 0:
        remaining[first] = 0
        again, _ = nearest_capable(index, offers, remaining, qlat[:1], qlon[:1], cat[:1], max_km=max_km[:1], k=4)
        assert first not in again[0]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_in_reach_equals_brute_force_and_the_unbounded_nearest(seed: int) -> None:
    """Most nearby offers full or unavailable, so the nearest qualifying one is often far down the list."""
    rng = np.random.default_rng(seed)
    m, n = 2000, 500
    offers = Offers(
        lat=rng.uniform(-5, 5, m),
        lon=(180 + rng.uniform(-5, 5, m) + 180) % 360 - 180,
        category_mask=(np.int64(1) << rng.integers(0, 4, m)).astype(np.int64),
        capacity=rng.integers(1, 4, m),
        radius_km=np.round(rng.uniform(5, 150, m)),
        available=rng.random(m) < 0.8,
    )
    remaining = np.where(rng.random(m) < 0.95, 0, offers.capacity)
    qlat, qlon = rng.uniform(-6, 6, n), (180 + rng.uniform(-6, 6, n) + 180) % 360 - 180
    cat = rng.integers(0, 5, n)
    max_km = np.where(rng.random(n) < 0.5, np.inf, rng.uniform(10, 100, n))
    got = in_reach(offers, remaining, qlat, qlon, cat, max_km=max_km)
    d = haversine_km(qlat[:, None], qlon[:, None], offers.lat[None, :], offers.lon[None, :])
    ok = (((offers.category_mask[None, :] >> cat[:, None]) & 1) == 1) & (d <= offers.radius_km[None, :])
    ok &= (remaining[None, :] > 0) & offers.is_available[None, :] & (d <= max_km[:, None])
    want = ok.any(axis=1)
    assert 0 < want.sum() < n
    np.testing.assert_array_equal(got, want)
    ids, _ = nearest_capable(offer_index(offers), offers, remaining, qlat, qlon, cat, max_km=max_km, k=1)
    np.testing.assert_array_equal(got, ids[:, 0] >= 0)
    with pytest.raises(InvalidInputError, match="remaining_capacity"):
        in_reach(offers, remaining[:-1], qlat, qlon, cat)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_the_category_scan_answers_as_the_index_rounds(seed: int, monkeypatch: pytest.MonkeyPatch) -> None:
    # Most offers full or short-reaching, so lookups widen; some share a spot (ties go to the
    # smaller row). The scan that replaces wide rounds must give the rounds' answer, bit for bit
    # (the tree may choose otherwise among offers tied at the k-th distance; none of these seeds has
    # such a tie).
    rng = np.random.default_rng(seed)
    m = 2000
    lat, lon = rng.normal(55.5, 0.6, m), rng.normal(38.5, 0.9, m)
    lat[1::7], lon[1::7] = lat[::7][: len(lat[1::7])], lon[::7][: len(lon[1::7])]
    offers = Offers(
        lat=lat,
        lon=lon,
        category_mask=rng.integers(1, 16, m),
        capacity=rng.integers(1, 4, m),
        radius_km=np.where(rng.random(m) < 0.7, rng.uniform(1, 20, m), rng.uniform(50, 400, m)),
        available=rng.random(m) < 0.9,
    )
    remaining = np.where(rng.random(m) < 0.8, 0, offers.capacity)
    index = offer_index(offers)
    n = 60
    qlat, qlon = rng.normal(55.5, 1.0, n), rng.normal(38.5, 1.5, n)
    cat = rng.integers(0, 4, n)
    max_km = np.where(rng.random(n) < 0.5, np.inf, rng.uniform(20, 300, n))
    scans: list[int] = []
    of = online._Able.of

    def counted(offers: Offers, remaining: np.ndarray, category: int) -> online._Able:
        scans.append(category)
        return of(offers, remaining, category)

    monkeypatch.setattr(online._Able, "of", counted)
    answers = []
    for share in (0, 10**9):  # never scan; scan from the first widening round on
        monkeypatch.setattr(online, "_SCAN_SHARE", share)
        for k in (1, 5, 40):
            batch = nearest_capable(index, offers, remaining, qlat, qlon, cat, max_km=max_km, k=k)
            one = [
                nearest_capable(index, offers, remaining, qlat[i], qlon[i], int(cat[i]), max_km=float(max_km[i]), k=k)
                for i in range(n)
            ]
            answers.append((batch, one))
        if share == 0:
            assert scans == []
    assert len(scans) > n  # the second pass did scan
    for (batch, one), (batch_scanned, one_scanned) in zip(answers[:3], answers[3:], strict=True):
        np.testing.assert_array_equal(batch_scanned[0], batch[0])
        np.testing.assert_array_equal(batch_scanned[1], batch[1])
        for i in range(n):
            np.testing.assert_array_equal(one_scanned[i][0], one[i][0])
            np.testing.assert_array_equal(one_scanned[i][1], one[i][1])
            np.testing.assert_array_equal(one[i][0][0], batch[0][i])
    # The answers are the brute-force ones (haversine; ties to the smaller row).
    batch, _ = answers[4]
    d = haversine_km(qlat[:, None], qlon[:, None], offers.lat[None, :], offers.lon[None, :])
    ok = (((offers.category_mask[None, :] >> cat[:, None]) & 1) == 1) & (d <= offers.radius_km[None, :])
    ok &= (remaining[None, :] > 0) & offers.is_available[None, :] & (d <= max_km[:, None])
    oracle = np.where(ok, d, np.inf)
    np.testing.assert_allclose(np.sort(oracle, axis=1)[:, :5], batch[1], rtol=1e-9, atol=1e-6)
    assert (np.isfinite(batch[1]) == (batch[0] >= 0)).all()
