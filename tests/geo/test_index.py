"""SpatialIndex against a brute-force haversine oracle, including the antimeridian and the poles."""

from __future__ import annotations

import numpy as np
import pytest

from geo.errors import IndexInputError, InvalidCoordinatesError, UnknownIdError
from geo.index import MAX_CATEGORIES, SpatialIndex, covered
from geo.sphere import haversine_km


def _points(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """A mix of uniform points, points hugging the ±180° meridian and points near both poles."""
    kind = rng.integers(0, 3, n)
    lat = rng.uniform(-90, 90, n)
    lon = rng.uniform(-180, 180, n)
    seam = kind == 1
    lat[seam] = rng.uniform(-60, 60, seam.sum())
    lon[seam] = np.where(rng.random(seam.sum()) < 0.5, 1, -1) * rng.uniform(179.0, 180.0, seam.sum())
    polar = kind == 2
    lat[polar] = np.where(rng.random(polar.sum()) < 0.5, 1, -1) * rng.uniform(88.5, 90.0, polar.sum())
    return lat, lon


def _items(rng: np.random.Generator, n: int, n_cat: int = 4) -> dict[str, np.ndarray]:
    lat, lon = _points(rng, n)
    mask = (np.int64(1) << rng.integers(0, n_cat, n)) | np.where(
        rng.random(n) < 0.4, np.int64(1) << rng.integers(0, n_cat, n), 0
    )
    ids = rng.permutation(10 * n)[:n].astype(np.int64)
    return {"ids": ids, "lat": lat, "lon": lon, "mask": mask.astype(np.int64)}


def _oracle_dist(items: dict[str, np.ndarray], qlat: np.ndarray, qlon: np.ndarray, cat: np.ndarray) -> np.ndarray:
    d = haversine_km(qlat[:, None], qlon[:, None], items["lat"][None, :], items["lon"][None, :])
    serves = ((items["mask"][None, :] >> cat[:, None]) & 1) == 1
    return np.where(serves, d, np.inf)


def _assert_knn_matches(index: SpatialIndex, items, qlat, qlon, cat, k, max_km=None) -> None:
    ids, dist = index.knn(qlat, qlon, cat, k, max_km=max_km)
    oracle = _oracle_dist(items, qlat, qlon, cat)
    if max_km is not None:
        oracle[oracle > np.asarray(max_km).reshape(-1, 1)] = np.inf
    order = np.argsort(oracle, axis=1, kind="stable")[:, :k]
    exp_d = np.take_along_axis(oracle, order, axis=1)
    exp_ids = np.where(np.isfinite(exp_d), items["ids"][order], -1)
    assert ids.shape == dist.shape == (len(qlat), k)
    np.testing.assert_array_equal(ids, exp_ids)
    np.testing.assert_allclose(dist, exp_d, rtol=1e-9, atol=1e-6)


def _assert_within_matches(index: SpatialIndex, items, qlat, qlon, cat, radius_km) -> None:
    offsets, ids, dist = index.within(qlat, qlon, cat, radius_km)
    oracle = _oracle_dist(items, qlat, qlon, cat)
    radius = np.broadcast_to(radius_km, qlat.shape)
    assert offsets.shape == (len(qlat) + 1,)
    for i in range(len(qlat)):
        hit = np.flatnonzero(oracle[i] <= radius[i])
        hit = hit[np.argsort(oracle[i, hit], kind="stable")]
        got = slice(offsets[i], offsets[i + 1])
        np.testing.assert_array_equal(ids[got], items["ids"][hit])
        np.testing.assert_allclose(dist[got], oracle[i, hit], rtol=1e-9, atol=1e-6)


@pytest.mark.parametrize("joint_below", [0, 10**9], ids=["per-category", "joint"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_knn_equals_brute_force(seed: int, joint_below: int) -> None:
    rng = np.random.default_rng(seed)
    items = _items(rng, 800)
    index = SpatialIndex(items["ids"], items["lat"], items["lon"], items["mask"], joint_below=joint_below)
    qlat, qlon = _points(rng, 300)
    cat = rng.integers(0, 5, 300)  # category 4 has no items: all padding
    _assert_knn_matches(index, items, qlat, qlon, cat, k=7)
    _assert_knn_matches(index, items, qlat, qlon, cat, k=7, max_km=rng.uniform(50, 800, 300))
    _assert_knn_matches(index, items, qlat, qlon, np.full(300, 2), k=1, max_km=300.0)


def test_knn_across_the_antimeridian_and_the_pole() -> None:
    index = SpatialIndex([1, 2, 3], [0.0, 0.0, 89.9], [179.99, -170.0, -90.0], [1, 1, 1])
    ids, dist = index.knn([0.0, 89.9], [-179.99, 90.0], 0, 2)
    assert ids[0].tolist() == [1, 2]
    assert dist[0, 0] == pytest.approx(haversine_km(0.0, -179.99, 0.0, 179.99), rel=1e-9)
    assert dist[0, 0] < 3.0
    # Across the pole: (89.9, 90) and (89.9, -90) are about 22 km apart, not 10 000.
    assert ids[1, 0] == 3
    assert dist[1, 0] == pytest.approx(2 * 0.1 * np.pi / 180 * 6371.0088, rel=1e-3)


@pytest.mark.parametrize("seed", [3, 4])
def test_within_equals_brute_force(seed: int) -> None:
    rng = np.random.default_rng(seed)
    items = _items(rng, 600)
    index = SpatialIndex(items["ids"], items["lat"], items["lon"], items["mask"])
    qlat, qlon = _points(rng, 150)
    cat = rng.integers(0, 4, 150)
    _assert_within_matches(index, items, qlat, qlon, cat, rng.uniform(0, 1500, 150))
    _assert_within_matches(index, items, qlat, qlon, cat, 400.0)


@pytest.mark.parametrize("joint_below", [0, 10**9], ids=["per-category", "joint"])
@pytest.mark.parametrize("seed", [5, 6])
def test_index_after_inserts_and_removals_answers_like_a_fresh_one(seed: int, joint_below: int) -> None:
    rng = np.random.default_rng(seed)
    pool = _items(rng, 1200)
    live = np.zeros(1200, dtype=bool)
    live[:500] = True
    index = SpatialIndex(
        pool["ids"][:500],
        pool["lat"][:500],
        pool["lon"][:500],
        pool["mask"][:500],
        rebuild_threshold=60,
        joint_below=joint_below,
    )
    qlat, qlon = _points(rng, 120)
    cat = rng.integers(0, 4, 120)
    for _ in range(25):
        if rng.random() < 0.5 and (~live).any():
            add = rng.choice(
                np.flatnonzero(~live), size=min(int(rng.integers(1, 30)), int((~live).sum())), replace=False
            )
            index.insert(pool["ids"][add], pool["lat"][add], pool["lon"][add], pool["mask"][add])
            live[add] = True
        else:
            gone = rng.choice(np.flatnonzero(live), size=int(rng.integers(1, 30)), replace=False)
            index.remove(pool["ids"][gone])
            live[gone] = False
        assert len(index) == live.sum()
        current = {key: value[live] for key, value in pool.items()}
        fresh = SpatialIndex(current["ids"], current["lat"], current["lon"], current["mask"])
        ids_a, d_a = index.knn(qlat, qlon, cat, 6)
        ids_b, d_b = fresh.knn(qlat, qlon, cat, 6)
        np.testing.assert_array_equal(ids_a, ids_b)
        np.testing.assert_allclose(d_a, d_b, rtol=1e-12)
        _assert_knn_matches(index, current, qlat, qlon, cat, k=6)
        _assert_within_matches(index, current, qlat[:30], qlon[:30], cat[:30], 900.0)
        for i in range(12):  # one query at a time (its own path) answers as in the batch
            ids_1, d_1 = index.knn(qlat[i : i + 1], qlon[i : i + 1], int(cat[i]), 6, max_km=2000.0)
            ids_n, d_n = index.knn(qlat, qlon, cat, 6, max_km=2000.0)
            np.testing.assert_array_equal(ids_1[0], ids_n[i])
            np.testing.assert_array_equal(d_1[0], d_n[i])


@pytest.mark.parametrize("joint_below", [0, 10**9], ids=["per-category", "joint"])
def test_many_tombstones_do_not_hide_live_neighbours(joint_below: int) -> None:
    rng = np.random.default_rng(7)
    items = _items(rng, 400, n_cat=1)
    index = SpatialIndex(
        items["ids"], items["lat"], items["lon"], items["mask"], rebuild_threshold=10_000, joint_below=joint_below
    )
    dead = rng.choice(400, 300, replace=False)
    index.remove(items["ids"][dead])
    live = np.ones(400, dtype=bool)
    live[dead] = False
    current = {key: value[live] for key, value in items.items()}
    qlat, qlon = _points(rng, 50)
    _assert_knn_matches(index, current, qlat, qlon, np.zeros(50, dtype=np.int64), k=5)
    for i in range(10):  # one query at a time: the widening past tombstones on its own path
        _assert_knn_matches(index, current, qlat[i : i + 1], qlon[i : i + 1], np.zeros(1, dtype=np.int64), k=5)
    assert 4000 not in index
    assert int(current["ids"][0]) in index
    assert int(items["ids"][dead[0]]) not in index


def test_bad_inputs_name_the_offending_value() -> None:
    with pytest.raises(InvalidCoordinatesError, match=r"lat\[1\] = 91\.0"):
        SpatialIndex([1, 2], [0.0, 91.0], [0.0, 0.0], [1, 1])
    with pytest.raises(IndexInputError, match=r"id 4 appears 2 times"):
        SpatialIndex([4, 4], [0.0, 1.0], [0.0, 0.0], [1, 1])
    with pytest.raises(IndexInputError, match="lengths differ"):
        SpatialIndex([1, 2, 3], [0.0, 1.0], [0.0, 0.0], [1, 1])
    index = SpatialIndex([1], [0.0], [0.0], [1])
    with pytest.raises(IndexInputError, match=rf"category\[0\] = {MAX_CATEGORIES}"):
        index.knn([0.0], [0.0], MAX_CATEGORIES, 1)
    with pytest.raises(UnknownIdError, match="id 9 is not in the index"):
        index.remove([9])
    with pytest.raises(IndexInputError, match="id 1 is already in the index"):
        index.insert([1], [0.0], [0.0], [1])
    with pytest.raises(IndexInputError, match=r"max_km\[0\] = nan"):
        index.knn([0.0], [0.0], 0, 1, max_km=[float("nan")])


def _brute_covered(
    lat: np.ndarray,
    lon: np.ndarray,
    radius: np.ndarray,
    mask: np.ndarray,
    q_lat: np.ndarray,
    q_lon: np.ndarray,
    q_cat: np.ndarray,
    q_max: np.ndarray,
) -> np.ndarray:
    d = haversine_km(q_lat[:, None], q_lon[:, None], lat[None, :], lon[None, :])
    serves = ((mask[None, :] >> q_cat[:, None]) & 1) == 1
    return np.asarray((serves & (d <= radius[None, :]) & (d <= q_max[:, None])).any(axis=1))


@pytest.mark.parametrize("seed", range(6))
def test_covered_equals_brute_force(seed: int) -> None:
    """Radii spread over many bands, some equal, some 0 or inf; queries with and without a limit."""
    rng = np.random.default_rng(seed)
    m, n = int(rng.integers(1, 400)), 600
    if seed % 2:
        lat, lon = _points(rng, m)
        q_lat, q_lon = _points(rng, n)
        radius = np.exp(rng.uniform(np.log(10.0), np.log(3000.0), m))
    else:  # a region, as real offers and needs are
        lat, lon = 54 + rng.normal(0, 0.5, m), 39 + rng.normal(0, 0.8, m)
        q_lat, q_lon = 54 + rng.normal(0, 0.8, n), 39 + rng.normal(0, 1.2, n)
        radius = np.exp(rng.uniform(np.log(1.0), np.log(80.0), m))
    pick = rng.random(m)
    radius = np.where(pick < 0.2, np.round(radius), radius)
    radius = np.where(pick > 0.97, 0.0, np.where(pick > 0.95, np.inf, radius))
    mask = (np.int64(1) << rng.integers(0, 4, m)) | np.where(rng.random(m) < 0.3, np.int64(1) << 2, 0)
    q_cat = rng.integers(0, 5, n)  # category 4: nobody serves it
    q_max = np.where(rng.random(n) < 0.5, np.inf, rng.uniform(0, 60, n))
    got = covered(lat, lon, radius, mask, q_lat, q_lon, q_cat, q_max)
    want = _brute_covered(lat, lon, radius, mask, q_lat, q_lon, q_cat, q_max)
    assert 0 < want.sum() < n
    np.testing.assert_array_equal(got, want)


def test_covered_without_items_or_queries() -> None:
    empty = np.zeros(0)
    assert covered(empty, empty, empty, np.zeros(0, dtype=np.int64), [1.0], [2.0], 0).tolist() == [False]
    assert covered([1.0], [2.0], [5.0], [1], empty, empty, np.zeros(0, dtype=np.int64)).shape == (0,)
    with pytest.raises(IndexInputError):
        covered([1.0], [2.0], [5.0, 6.0], [1], [1.0], [2.0], 0)


@pytest.mark.parametrize("joint_below", [0, 10**9], ids=["per-category", "joint"])
@pytest.mark.parametrize("churn", [False, True])
def test_knn_orders_items_at_one_place_by_id(churn: bool, joint_below: int) -> None:
    # Helpers geocoded to a town's centre share its coordinates; their distances tie. Answers stay
    # nearest first with ties to the smaller id, on a fresh index and after inserts and removals.
    rng = np.random.default_rng(5)
    towns = rng.uniform(-1, 1, (6, 2)) + np.array([55.0, 37.0])
    n = 400
    at = rng.integers(0, len(towns), n)
    items = {
        "ids": rng.permutation(10 * n)[:n].astype(np.int64),
        "lat": towns[at, 0],
        "lon": towns[at, 1],
        "mask": np.ones(n, dtype=np.int64),
    }
    index = SpatialIndex(items["ids"], items["lat"], items["lon"], items["mask"], joint_below=joint_below)
    if churn:
        gone = rng.choice(n, 60, replace=False)
        index.remove(items["ids"][gone])
        extra_ids = np.arange(10 * n, 10 * n + 30, dtype=np.int64)
        extra_at = rng.integers(0, len(towns), 30)
        index.insert(extra_ids, towns[extra_at, 0], towns[extra_at, 1], np.ones(30, dtype=np.int64))
        keep = np.setdiff1d(np.arange(n), gone)
        items = {
            "ids": np.concatenate([items["ids"][keep], extra_ids]),
            "lat": np.concatenate([items["lat"][keep], towns[extra_at, 0]]),
            "lon": np.concatenate([items["lon"][keep], towns[extra_at, 1]]),
            "mask": np.ones(len(keep) + 30, dtype=np.int64),
        }
    qlat, qlon = rng.uniform(54, 56, 50), rng.uniform(36, 38, 50)
    cat = np.zeros(50, dtype=np.int64)
    for k in (1, 5, 80, 1000):
        ids, dist = index.knn(qlat, qlon, cat, k)
        oracle = np.sort(_oracle_dist(items, qlat, qlon, cat), axis=1)[:, :k]
        width = min(k, oracle.shape[1])
        np.testing.assert_allclose(dist[:, :width], oracle[:, :width], rtol=1e-9, atol=1e-6)
        by_id = dict(zip(items["ids"].tolist(), range(len(items["ids"])), strict=True))
        for row in range(50):
            found = ids[row][ids[row] >= 0]
            assert len(set(found.tolist())) == len(found)
            rows = [by_id[i] for i in found.tolist()]
            true = haversine_km(qlat[row], qlon[row], items["lat"][rows], items["lon"][rows])
            np.testing.assert_allclose(dist[row, : len(found)], true, rtol=1e-9, atol=1e-6)
            same = dist[row, 1 : len(found)] == dist[row, : len(found) - 1]
            assert (found[1:][same] > found[:-1][same]).all()


@pytest.mark.parametrize("joint_below", [0, 10**9], ids=["per-category", "joint"])
def test_a_bound_of_zero_km_keeps_co_located_items(joint_below: int) -> None:
    """A k-d tree's bound is strict (and squared): at 0 km it would keep nothing, not even an item at
    the query point itself; the index keeps those, and nothing farther."""
    index = SpatialIndex(
        np.array([4, 7]), np.array([55.0, 55.001]), np.array([37.0, 37.0]), np.array([1, 1]), joint_below=joint_below
    )
    ids, d_km = index.knn(np.array([55.0, 10.0]), np.array([37.0, 10.0]), 0, 2, max_km=np.array([0.0, 0.0]))
    assert ids.tolist() == [[4, -1], [-1, -1]]
    assert d_km[0, 0] == 0.0
    assert np.isinf(d_km[0, 1])


@pytest.mark.parametrize("joint_below", [0, 10**9], ids=["per-category", "joint"])
def test_no_queries_and_items_of_no_category(joint_below: int) -> None:
    index = SpatialIndex(np.array([1]), [0.0], [0.0], np.array([1]), joint_below=joint_below)
    ids, d_km = index.knn(np.zeros(0), np.zeros(0), np.zeros(0, dtype=np.int64), 3)
    assert ids.shape == d_km.shape == (0, 3)
    # An item of no category (mask 0) is held but never found; the buffer may hold only such items.
    index.insert(np.array([2]), [1.0], [1.0], np.array([0]))
    ids, d_km = index.knn([0.0], [0.0], 0, 2)
    assert ids.tolist() == [[1, -1]]
    assert d_km[0, 0] == 0.0
    assert np.isinf(d_km[0, 1])
