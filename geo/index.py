"""A live spatial index over points on the unit sphere with one k-d tree per category.

Items carry an integer id, a position (degrees) and a category bitmask (int64; bit ``c`` set means
the item belongs to category ``c``, ``0 <= c < MAX_CATEGORIES``). Each category has its own
``scipy.spatial.cKDTree`` over 3-D unit vectors, so the trees answer in chord length, which orders
exactly like great-circle distance and has no seam at the ±180° meridian or at the poles. Results
are great-circle km.

Changes do not rebuild the trees each time: new items go to a small buffer (searched with tiny
trees rebuilt lazily) and removed items become tombstones filtered out of tree answers. When the
buffer plus the tombstones exceed ``rebuild_threshold`` the trees are rebuilt from the live items.
Every answer holds the same items, at the same distances, as that of an index freshly built over
the live items, nearest first. Among items tied at one distance the smaller id comes first within an
answer, but which of several items tied at the k-th distance make the cut of ``k`` is the tree's
choice and may differ between a churned index and a fresh one.
"""

from __future__ import annotations

import math
from itertools import chain

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.spatial import cKDTree

from geo.errors import IndexInputError, UnknownIdError
from geo.sphere import CHORD_SLACK, EARTH_RADIUS_KM, chord_to_km, km_to_chord, lat_lon_to_xyz, tree_bound

MAX_CATEGORIES = 63
IntArray = NDArray[np.int64]
FloatArray = NDArray[np.float64]
BoolArray = NDArray[np.bool_]

# Trees are searched with a slightly larger chord (``CHORD_SLACK``), then answers are cut at the
# exact km bound, so rounding in the chord conversion can neither add nor drop a point at the boundary.
_PARALLEL_MIN_QUERIES = 256


def _category_bits(mask: IntArray) -> list[int]:
    """Categories present in any mask, ascending."""
    union = int(np.bitwise_or.reduce(mask)) if mask.size else 0
    return [c for c in range(MAX_CATEGORIES) if (union >> c) & 1]


def _build_trees(xyz: FloatArray, mask: IntArray) -> dict[int, tuple[cKDTree, IntArray]]:
    trees: dict[int, tuple[cKDTree, IntArray]] = {}
    for c in _category_bits(mask):
        rows = np.flatnonzero((mask >> c) & 1).astype(np.int64)
        # Unbalanced trees build several times faster and query about as fast on real data.
        trees[c] = (cKDTree(xyz[rows], balanced_tree=False, compact_nodes=False), rows)
    return trees


# Joint trees: each (item, category) pair is a point (x, y, z, category × gap). Two categories are at
# least the gap apart, more than any chord (<= 2), so a search bounded by a chord stays in its own.
_CATEGORY_GAP = 4.0


def _joint_tree(xyz: FloatArray, trees: dict[int, tuple[cKDTree, IntArray]]) -> tuple[cKDTree, IntArray]:
    """One tree over every category's points, from the per-category trees' rows; (tree, row of each point)."""
    rows = np.concatenate([r for _, r in trees.values()])
    points = np.empty((len(rows), 4))
    points[:, :3] = xyz[rows]
    points[:, 3] = np.repeat(
        np.fromiter(trees.keys(), dtype=np.float64) * _CATEGORY_GAP, [len(r) for _, r in trees.values()]
    )
    return cKDTree(points, balanced_tree=False, compact_nodes=False), rows


def _validate_category(category: ArrayLike, n: int) -> IntArray:
    if isinstance(category, int) and not isinstance(category, bool) and 0 <= category < MAX_CATEGORIES:
        return np.full(n, category, dtype=np.int64)
    cat = np.asarray(category)
    if cat.ndim == 0:
        cat = np.full(n, cat)
    if cat.shape != (n,):
        raise IndexInputError(f"category has shape {cat.shape}, expected ({n},)")
    if cat.size and cat.dtype.kind not in "iu":
        raise IndexInputError(f"category must be integers, got dtype {cat.dtype}")
    cat = cat.astype(np.int64, copy=False)
    bad = (cat < 0) | (cat >= MAX_CATEGORIES)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise IndexInputError(f"category[{i}] = {int(cat[i])} is outside [0, {MAX_CATEGORIES})")
    return cat


def _validate_bound_km(value: ArrayLike | None, n: int, name: str) -> FloatArray:
    if value is None:
        return np.full(n, np.inf)
    if isinstance(value, float | int) and not isinstance(value, bool) and value >= 0:  # (NaN fails >= 0)
        return np.full(n, float(value))
    arr = np.asarray(value, dtype=np.float64)
    if arr.ndim == 0:
        arr = np.full(n, float(arr))
    if arr.shape != (n,):
        raise IndexInputError(f"{name} has shape {arr.shape}, expected ({n},)")
    bad = np.isnan(arr) | (arr < 0)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise IndexInputError(f"{name}[{i}] = {float(arr[i])!r} must be a non-negative number")
    return arr


def _queries(lat_deg: ArrayLike, lon_deg: ArrayLike) -> FloatArray:
    lat = np.atleast_1d(np.asarray(lat_deg, dtype=np.float64))
    lon = np.atleast_1d(np.asarray(lon_deg, dtype=np.float64))
    if lat.ndim != 1:
        raise IndexInputError(f"lat must be one-dimensional, got shape {lat.shape}")
    return lat_lon_to_xyz(lat, lon)


def _upper_bound(max_km: float) -> float:
    # Scalar maths (this runs once per category of every query): km_to_chord's formula.
    if not math.isfinite(max_km):
        return math.inf
    return 2.0 * math.sin(min(max_km, math.pi * EARTH_RADIUS_KM) / (2.0 * EARTH_RADIUS_KM)) * CHORD_SLACK


def _by_category(cat: IntArray) -> list[tuple[int, IntArray]]:
    """The positions of each category among the queries, categories ascending (one sort, not a
    comparison per category: the intake path asks about a few points in many categories)."""
    if cat.size <= 1:
        return [(int(c), np.zeros(1, dtype=np.int64)) for c in cat.tolist()]
    if cat.size >= _PARALLEL_MIN_QUERIES:  # many queries: a pass per category beats a sort of all
        return [(c, np.flatnonzero(cat == c)) for c in np.unique(cat).tolist()]
    order = np.argsort(cat, kind="stable")
    sorted_cat = cat[order]
    starts = np.flatnonzero(np.concatenate(([True], sorted_cat[1:] != sorted_cat[:-1])))
    ends = np.append(starts[1:], len(cat))
    return [(int(sorted_cat[s]), order[s:e]) for s, e in zip(starts.tolist(), ends.tolist(), strict=True)]


class SpatialIndex:
    """Points with ids and category bitmasks; vectorised k-nearest and radius queries per category.

    ``ids`` shape (n,) int, distinct; ``lat_deg``/``lon_deg`` shape (n,) degrees;
    ``category_mask`` shape (n,) int64 bitmask (bit c = category c, c < 63).
    ``joint_below``: ``knn`` with fewer queries than this searches one joint tree over every
    category (built on first use) instead of one tree per category asked, with the same answers;
    worth it for an index asked about a few points in many categories at a time (the intake path),
    not for one asked about many points (0, the default: never).
    """

    def __init__(
        self,
        ids: ArrayLike,
        lat_deg: ArrayLike,
        lon_deg: ArrayLike,
        category_mask: ArrayLike,
        *,
        rebuild_threshold: int = 512,
        joint_below: int = 0,
    ) -> None:
        if rebuild_threshold < 0:
            raise IndexInputError(f"rebuild_threshold = {rebuild_threshold} must be >= 0")
        self.rebuild_threshold = rebuild_threshold
        self.joint_below = joint_below
        new_ids, xyz, mask = self._validate_items(ids, lat_deg, lon_deg, category_mask)
        self._set_base(new_ids, xyz, mask)

    # ----------------------------------------------------------------------------- maintenance

    @staticmethod
    def _validate_items(
        ids: ArrayLike, lat_deg: ArrayLike, lon_deg: ArrayLike, category_mask: ArrayLike
    ) -> tuple[IntArray, FloatArray, IntArray]:
        id_arr = np.atleast_1d(np.asarray(ids))
        mask = np.atleast_1d(np.asarray(category_mask))
        for name, arr in (("ids", id_arr), ("category_mask", mask)):
            if arr.size and not np.issubdtype(arr.dtype, np.integer):
                raise IndexInputError(f"{name} must be integers, got dtype {arr.dtype}")
        id_arr = id_arr.astype(np.int64)
        mask = mask.astype(np.int64)
        xyz = _queries(lat_deg, lon_deg)
        if not (id_arr.shape == mask.shape == (len(xyz),)):
            raise IndexInputError(
                f"lengths differ: ids {id_arr.shape}, lat/lon ({len(xyz)},), category_mask {mask.shape}"
            )
        if (mask < 0).any():
            i = int(np.flatnonzero(mask < 0)[0])
            raise IndexInputError(f"category_mask[{i}] = {int(mask[i])} is negative (bit 63 is not a category)")
        uniq, counts = np.unique(id_arr, return_counts=True)
        if (counts > 1).any():
            raise IndexInputError(f"id {int(uniq[counts > 1][0])} appears {int(counts.max())} times")
        return id_arr, xyz, mask

    def _set_base(self, ids: IntArray, xyz: FloatArray, mask: IntArray) -> None:
        self._base_ids = ids
        self._base_xyz = xyz
        self._base_mask = mask
        self._base_alive = np.ones(len(ids), dtype=bool)
        self._base_order = np.argsort(ids, kind="stable")
        self._base_sorted_ids = ids[self._base_order]
        self._trees = _build_trees(xyz, mask)
        self._count_per_category = np.zeros(MAX_CATEGORIES, dtype=np.int64)
        for c, (tree, _) in self._trees.items():
            self._count_per_category[c] = tree.n
        self._joint: tuple[cKDTree, IntArray] | None = None
        self._dead_per_category = np.zeros(MAX_CATEGORIES, dtype=np.int64)
        self._n_dead = 0
        self._buf_ids: IntArray = np.empty(0, dtype=np.int64)
        self._buf_xyz: FloatArray = np.empty((0, 3), dtype=np.float64)
        self._buf_mask: IntArray = np.empty(0, dtype=np.int64)
        self._buf_trees: dict[int, tuple[cKDTree, IntArray]] | None = None
        self._buf_joint: tuple[cKDTree, IntArray] | None = None

    def _base_rows(self, ids: IntArray) -> IntArray:
        """Base row of each id, or -1 where the id is not a live base item."""
        pos = np.searchsorted(self._base_sorted_ids, ids)
        pos_clipped = np.minimum(pos, max(len(self._base_sorted_ids) - 1, 0))
        rows = np.full(len(ids), -1, dtype=np.int64)
        if len(self._base_sorted_ids):
            found = self._base_sorted_ids[pos_clipped] == ids
            cand = self._base_order[pos_clipped]
            found &= self._base_alive[cand]
            rows[found] = cand[found]
        return rows

    def __len__(self) -> int:
        # _n_dead counts tombstones, so no pass over the base arrays (this runs per intake query).
        return len(self._base_ids) - self._n_dead + len(self._buf_ids)

    def __contains__(self, item_id: object) -> bool:
        if not isinstance(item_id, int | np.integer):
            return False
        arr = np.array([item_id], dtype=np.int64)
        return bool(self._base_rows(arr)[0] >= 0 or np.isin(arr, self._buf_ids)[0])

    def insert(self, ids: ArrayLike, lat_deg: ArrayLike, lon_deg: ArrayLike, category_mask: ArrayLike) -> None:
        """Add items (shapes (m,)); ids must not be live in the index already."""
        new_ids, xyz, mask = self._validate_items(ids, lat_deg, lon_deg, category_mask)
        clash = (self._base_rows(new_ids) >= 0) | np.isin(new_ids, self._buf_ids)
        if clash.any():
            raise IndexInputError(f"id {int(new_ids[clash][0])} is already in the index")
        self._buf_ids = np.concatenate([self._buf_ids, new_ids])
        self._buf_xyz = np.concatenate([self._buf_xyz, xyz])
        self._buf_mask = np.concatenate([self._buf_mask, mask])
        self._buf_trees = None
        self._buf_joint = None
        self._maybe_rebuild()

    def remove(self, ids: ArrayLike) -> None:
        """Remove items by id (shape (m,)); every id must be live, or UnknownIdError (nothing removed)."""
        gone = np.atleast_1d(np.asarray(ids)).astype(np.int64)
        uniq, counts = np.unique(gone, return_counts=True)
        if (counts > 1).any():
            raise IndexInputError(f"id {int(uniq[counts > 1][0])} is given {int(counts.max())} times")
        rows = self._base_rows(gone)
        in_buf = np.isin(gone, self._buf_ids)
        missing = (rows < 0) & ~in_buf
        if missing.any():
            raise UnknownIdError(f"id {int(gone[missing][0])} is not in the index ({int(missing.sum())} unknown)")
        dead = rows[rows >= 0]
        self._base_alive[dead] = False
        self._n_dead += len(dead)
        for c in _category_bits(self._base_mask[dead]):
            self._dead_per_category[c] += int(((self._base_mask[dead] >> c) & 1).sum())
        if in_buf.any():
            keep = ~np.isin(self._buf_ids, gone)
            self._buf_ids, self._buf_xyz, self._buf_mask = (
                self._buf_ids[keep],
                self._buf_xyz[keep],
                self._buf_mask[keep],
            )
            self._buf_trees = None
            self._buf_joint = None
        self._maybe_rebuild()

    def _maybe_rebuild(self) -> None:
        if len(self._buf_ids) + self._n_dead > self.rebuild_threshold:
            self.rebuild()

    def rebuild(self) -> None:
        """Merge the buffer and drop tombstones: rebuild every tree from the live items."""
        alive = self._base_alive
        self._set_base(
            np.concatenate([self._base_ids[alive], self._buf_ids]),
            np.concatenate([self._base_xyz[alive], self._buf_xyz]),
            np.concatenate([self._base_mask[alive], self._buf_mask]),
        )

    def _buffer_trees(self) -> dict[int, tuple[cKDTree, IntArray]]:
        if self._buf_trees is None:
            self._buf_trees = _build_trees(self._buf_xyz, self._buf_mask)
        return self._buf_trees

    def _joint_trees(self) -> tuple[tuple[cKDTree, IntArray] | None, tuple[cKDTree, IntArray] | None]:
        """One tree over every category for the base and one for the buffer (built on first use)."""
        if self._joint is None and self._trees:
            self._joint = _joint_tree(self._base_xyz, self._trees)
        if self._buf_joint is None and self._buffer_trees():  # (items of no category make no tree)
            self._buf_joint = _joint_tree(self._buf_xyz, self._buffer_trees())
        return self._joint, self._buf_joint

    # ----------------------------------------------------------------------------------- queries

    def knn(
        self,
        lat_deg: ArrayLike,
        lon_deg: ArrayLike,
        category: ArrayLike,
        k: int,
        *,
        max_km: ArrayLike | None = None,
    ) -> tuple[IntArray, FloatArray]:
        """The k nearest live items of a category for each query point.

        ``lat_deg``/``lon_deg`` shape (n,) degrees; ``category`` an int or shape (n,);
        ``max_km`` None, a number or shape (n,): only items within that great-circle distance.
        Returns ``(ids, distances_km)`` of shape (n, k), nearest first, padded with -1 / inf.
        """
        if k < 1:
            raise IndexInputError(f"k = {k} must be >= 1")
        xyz = _queries(lat_deg, lon_deg)
        n = len(xyz)
        cat = _validate_category(category, n)
        bound_km = _validate_bound_km(max_km, n, "max_km")
        if n < self.joint_below:
            return self._knn_joint(xyz, cat, k, bound_km)
        if n == 1:
            ids1, km1 = self._knn_one(xyz, int(cat[0]), k, float(bound_km[0]))
            return ids1.reshape(1, k), km1.reshape(1, k)
        out_ids = np.full((n, k), -1, dtype=np.int64)
        out_km = np.full((n, k), np.inf)
        buf_trees = self._buffer_trees()
        for c, q in _by_category(cat):
            bound = _upper_bound(float(bound_km[q].max()))
            parts_km: list[FloatArray] = []
            parts_ids: list[IntArray] = []
            if c in self._trees:
                d_km, ids = self._knn_base(c, xyz[q], k, bound)
                parts_km.append(d_km)
                parts_ids.append(ids)
            if c in buf_trees:
                tree, rows = buf_trees[c]
                d_km, ids = _knn_tree(tree, self._buf_ids[rows], xyz[q], min(k, tree.n), bound)
                parts_km.append(d_km)
                parts_ids.append(ids)
            if not parts_km:
                continue
            d_km, ids = _merged(parts_km, parts_ids, bound_km[q], k, self._dead_per_category[c] == 0)
            m = d_km.shape[1]
            out_km[q, :m] = d_km
            out_ids[q, :m] = ids
        return out_ids, out_km

    def _knn_joint(self, xyz: FloatArray, cat: IntArray, k: int, bound_km: FloatArray) -> tuple[IntArray, FloatArray]:
        """``knn`` for a few queries in many categories: one search of each joint tree instead of
        one per category (a search's fixed cost is most of a small query's)."""
        n = len(xyz)
        out_ids = np.full((n, k), -1, dtype=np.int64)
        out_km = np.full((n, k), np.inf)
        if n == 0:
            return out_ids, out_km
        q4 = np.empty((n, 4))
        q4[:, :3] = xyz
        q4[:, 3] = cat * _CATEGORY_GAP
        # Capped below the gap between categories, so a search never crosses into another one.
        bound = min(_upper_bound(float(bound_km.max())), 2.0 * CHORD_SLACK)
        base, buf = self._joint_trees()
        parts_km: list[FloatArray] = []
        parts_ids: list[IntArray] = []
        # As wide as the fullest category asked needs, with room for its tombstones.
        count = int(self._count_per_category[cat].max())
        n_dead = int(self._dead_per_category[cat].max())
        if base is not None and count:
            tree, rows = base
            d_km, ids = self._live_nearest(tree, rows, q4, k, n_dead, count, bound)
            parts_km.append(d_km)
            parts_ids.append(ids)
        if buf is not None:
            tree, rows = buf
            d_km, ids = _knn_tree(tree, self._buf_ids[rows], q4, min(k, tree.n), bound)
            parts_km.append(d_km)
            parts_ids.append(ids)
        if not parts_km:
            return out_ids, out_km
        d_km, ids = _merged(parts_km, parts_ids, bound_km, k, n_dead == 0)
        m = d_km.shape[1]
        out_km[:, :m] = d_km
        out_ids[:, :m] = ids
        return out_ids, out_km

    def _knn_one(self, xyz: FloatArray, c: int, k: int, bound_km: float) -> tuple[IntArray, FloatArray]:
        """``knn`` for one query (``xyz`` shape (1, 3)) as flat arrays (k,): the same answer with a
        fraction of the array operations (the intake path and the online lookup ask one at a time)."""
        bound = _upper_bound(bound_km)
        parts_km: list[FloatArray] = []
        parts_ids: list[IntArray] = []
        if c in self._trees:
            d_km, ids = self._knn_base(c, xyz, k, bound)
            parts_km.append(d_km[0])
            parts_ids.append(ids[0])
        buf_trees = self._buffer_trees()
        if c in buf_trees:
            tree, rows = buf_trees[c]
            d_km, ids = _knn_tree(tree, self._buf_ids[rows], xyz, min(k, tree.n), bound)
            parts_km.append(d_km[0])
            parts_ids.append(ids[0])
        out_ids = np.full(k, -1, dtype=np.int64)
        out_km = np.full(k, np.inf)
        if not parts_km:
            return out_ids, out_km
        d_km = np.concatenate(parts_km) if len(parts_km) > 1 else parts_km[0]
        ids = np.concatenate(parts_ids) if len(parts_ids) > 1 else parts_ids[0]
        keep = d_km <= bound_km  # (the padding and the tombstones are inf)
        d_km, ids = d_km[keep], ids[keep]
        order = np.lexsort((ids, d_km))[:k]
        out_km[: len(order)] = d_km[order]
        out_ids[: len(order)] = ids[order]
        return out_ids, out_km

    def _knn_base(self, c: int, xyz: FloatArray, k: int, bound: float) -> tuple[FloatArray, IntArray]:
        tree, rows = self._trees[c]
        return self._live_nearest(tree, rows, xyz, k, int(self._dead_per_category[c]), tree.n, bound)

    def _live_nearest(
        self, tree: cKDTree, rows: IntArray, xyz: FloatArray, k: int, n_dead: int, count: int, bound: float
    ) -> tuple[FloatArray, IntArray]:
        """A base tree's nearest items for each query, removed ones as (inf, -1): at least k live
        ones where the tree has them. ``n_dead`` tombstones may lie among the ``count`` items searched."""
        # Ask for a few extra neighbours to cover tombstones; rows that still come up short
        # are asked again with room for every tombstone.
        kk = min(k + min(n_dead, k), count)
        d_km, ids, alive = _knn_rows(tree, rows, self._base_ids, self._base_alive, xyz, kk, bound)
        if n_dead and kk < count:
            short = (alive.sum(axis=1) < k) & np.isfinite(d_km[:, -1])
            if short.any():
                kk2 = min(k + n_dead, count)
                d2, i2, a2 = _knn_rows(tree, rows, self._base_ids, self._base_alive, xyz[short], kk2, bound)
                pad = ((0, 0), (0, kk2 - kk))
                d_km = np.pad(d_km, pad, constant_values=np.inf)
                ids = np.pad(ids, pad, constant_values=-1)
                alive = np.pad(alive, pad, constant_values=False)
                d_km[short], ids[short], alive[short] = d2, i2, a2
        if n_dead:
            d_km[~alive] = np.inf
            ids[~alive] = -1
        return d_km, ids

    def within(
        self, lat_deg: ArrayLike, lon_deg: ArrayLike, category: ArrayLike, radius_km: ArrayLike
    ) -> tuple[IntArray, IntArray, FloatArray]:
        """Every live item of a category within a great-circle radius of each query point.

        ``lat_deg``/``lon_deg`` shape (n,) degrees; ``category`` an int or shape (n,);
        ``radius_km`` a number or shape (n,). Returns CSR-style ``(offsets, ids, distances_km)``:
        ``offsets`` shape (n + 1,); the answers of query i are ``ids[offsets[i]:offsets[i + 1]]``,
        nearest first (ties to the smaller id), with their distances in km.
        """
        xyz = _queries(lat_deg, lon_deg)
        n = len(xyz)
        cat = _validate_category(category, n)
        radius = _validate_bound_km(radius_km, n, "radius_km")
        rows_q: list[IntArray] = []
        rows_id: list[IntArray] = []
        rows_km: list[FloatArray] = []
        buf_trees = self._buffer_trees()
        for c in np.unique(cat).tolist():
            q = np.flatnonzero(cat == c)
            sources = []
            if c in self._trees:
                tree, rows = self._trees[c]
                sources.append((tree, rows, self._base_ids, self._base_xyz, self._base_alive))
            if c in buf_trees:
                tree, rows = buf_trees[c]
                sources.append((tree, rows, self._buf_ids, self._buf_xyz, np.ones(len(self._buf_ids), dtype=bool)))
            for tree, rows, all_ids, all_xyz, all_alive in sources:
                chord = np.array([_upper_bound(r) for r in radius[q]]) if q.size else np.empty(0)
                chord = np.minimum(chord, 2.0 * CHORD_SLACK)
                hits = tree.query_ball_point(xyz[q], chord, workers=_workers(len(q)), return_sorted=False)
                counts = np.fromiter((len(h) for h in hits), dtype=np.int64, count=len(hits))
                local = np.fromiter(chain.from_iterable(hits), dtype=np.int64, count=int(counts.sum()))
                qi = np.repeat(q, counts)
                item_rows = rows[local]
                d_km = chord_to_km(np.linalg.norm(all_xyz[item_rows] - xyz[qi], axis=1))
                keep = all_alive[item_rows] & (d_km <= radius[qi])
                rows_q.append(qi[keep])
                rows_id.append(all_ids[item_rows[keep]])
                rows_km.append(d_km[keep])
        qi = np.concatenate([np.empty(0, dtype=np.int64), *rows_q])
        ids = np.concatenate([np.empty(0, dtype=np.int64), *rows_id])
        d_km = np.concatenate([np.empty(0, dtype=np.float64), *rows_km])
        order = np.lexsort((ids, d_km, qi))
        offsets = np.zeros(n + 1, dtype=np.int64)
        np.cumsum(np.bincount(qi, minlength=n), out=offsets[1:])
        return offsets, ids[order], d_km[order]


def _merged(
    parts_km: list[FloatArray], parts_ids: list[IntArray], bound_km: FloatArray, k: int, ordered: bool
) -> tuple[FloatArray, IntArray]:
    """The trees' answers (each shape (n, width)) side by side, cut at each row's ``bound_km``, the
    first k of each row nearest first with ties to the smaller id. ``ordered``: no tombstones among
    them, so a single part is already nearest first, padding last, at most k wide, and only rows with
    equal distances need their ties ordered."""
    d_km = np.concatenate(parts_km, axis=1) if len(parts_km) > 1 else parts_km[0]
    ids = np.concatenate(parts_ids, axis=1) if len(parts_ids) > 1 else parts_ids[0]
    cut = d_km > bound_km[:, None]
    d_km[cut] = np.inf
    ids[cut] = -1  # (the trees' own padding is -1 already)
    if ordered and len(parts_km) == 1:
        tied = d_km[:, 1:] == d_km[:, :-1]
        tied &= d_km[:, 1:] < np.inf
        if tied.any():
            rows = np.flatnonzero(tied.any(axis=1))
            d_km[rows], ids[rows] = _nearest_first(d_km[rows], ids[rows], k)
        return d_km, ids
    return _nearest_first(d_km, ids, k)


def _nearest_first(d_km: FloatArray, ids: IntArray, k: int) -> tuple[FloatArray, IntArray]:
    """Each row's first ``k`` answers nearest first, ties to the smaller id; padding (-1, inf) last."""
    order = np.lexsort((np.where(ids < 0, np.iinfo(np.int64).max, ids), d_km), axis=1)[:, :k]
    return np.take_along_axis(d_km, order, axis=1), np.take_along_axis(ids, order, axis=1)


def _workers(queries: int) -> int:
    """scipy's ``workers`` for a search of this many queries: every core for many, else inline (scipy
    starts a Python thread per core for each call, which costs more than a few hundred queries)."""
    return -1 if queries >= _PARALLEL_MIN_QUERIES else 1


def _knn_tree(
    tree: cKDTree, item_ids: IntArray | None, xyz: FloatArray, k: int, bound: float
) -> tuple[FloatArray, IntArray]:
    """Tree answers as (km, ids) of shape (n, k); missing neighbours as (inf, -1).

    ``item_ids`` maps tree positions to ids; None means the positions are the ids.
    """
    chord, local = tree.query(xyz, k=k, distance_upper_bound=tree_bound(bound), workers=_workers(len(xyz)))
    chord = np.asarray(chord, dtype=np.float64).reshape(len(xyz), k)
    local = np.asarray(local, dtype=np.int64).reshape(len(xyz), k)
    missing = local >= tree.n
    if item_ids is None:
        ids = local
    else:
        local[missing] = 0
        ids = item_ids[local]
    ids[missing] = -1
    # chord_to_km without its clip: a tree's chords are >= 0, and the padding (inf) is set below.
    d_km = np.minimum(chord, 2.0)
    d_km *= 0.5
    np.arcsin(d_km, out=d_km)
    d_km *= 2.0 * EARTH_RADIUS_KM
    d_km[missing] = np.inf
    return d_km, ids


def _knn_rows(
    tree: cKDTree,
    rows: IntArray,
    base_ids: IntArray,
    base_alive: BoolArray,
    xyz: FloatArray,
    k: int,
    bound: float,
) -> tuple[FloatArray, IntArray, BoolArray]:
    d_km, local_ids = _knn_tree(tree, None, xyz, k, bound)
    found = local_ids >= 0
    base_row = rows[np.where(found, local_ids, 0)]
    alive = found & base_alive[base_row]
    return d_km, np.where(found, base_ids[base_row], -1), alive


_BAND_RATIO = 1.1  # radius bands: the largest radius of a band is at most this times its smallest


def covered(
    lat_deg: ArrayLike,
    lon_deg: ArrayLike,
    radius_km: ArrayLike,
    category_mask: ArrayLike,
    query_lat_deg: ArrayLike,
    query_lon_deg: ArrayLike,
    query_category: ArrayLike,
    query_max_km: ArrayLike | None = None,
) -> BoolArray:
    """Whether each query point lies within the disk of some item of its category (exact).

    Items: ``lat_deg``/``lon_deg``/``radius_km``/``category_mask`` shape (m,) (bitmask as in
    ``SpatialIndex``). Queries: ``query_lat_deg``/``query_lon_deg`` shape (n,), ``query_category``
    an int or shape (n,), ``query_max_km`` None, a number or shape (n,). Query i is covered when an
    item j of its category has great-circle ``d(i, j) <= radius_km[j]`` and ``d(i, j) <= max_km[i]``.

    Items are split per category into bands of radius (largest / smallest <= ``_BAND_RATIO``), one
    k-d tree each. Per band, a query's nearest item decides for the whole band when it is within the
    band's smallest radius (covered) or beyond its largest (not by this band); only the queries whose
    nearest lies between ask the band's tree for every item within the largest radius. Queries
    covered by one band are not asked about the next; bands of long radii go first.
    """
    items = _queries(lat_deg, lon_deg)
    m = len(items)
    radius = np.atleast_1d(np.asarray(radius_km, dtype=np.float64))
    mask = np.atleast_1d(np.asarray(category_mask)).astype(np.int64)
    if not (radius.shape == mask.shape == (m,)):
        raise IndexInputError(f"lengths differ: lat/lon ({m},), radius_km {radius.shape}, category_mask {mask.shape}")
    if np.isnan(radius).any():
        raise IndexInputError("radius_km holds NaN")
    xyz = _queries(query_lat_deg, query_lon_deg)
    n = len(xyz)
    cat = _validate_category(query_category, n)
    bound_km = _validate_bound_km(query_max_km, n, "query_max_km")
    out = np.zeros(n, dtype=bool)
    if m == 0 or n == 0:
        return out
    for c in np.unique(cat).tolist():
        rows = np.flatnonzero(((mask >> c) & 1) & (radius >= 0))
        if rows.size == 0:
            continue
        todo = np.flatnonzero(cat == c)
        todo = todo[bound_km[todo] >= 0]
        r = radius[rows]
        order = np.argsort(-r, kind="stable")
        rows, r = rows[order], r[order]
        start = 0
        while start < len(rows) and todo.size:
            # The band: the longest radius left and every item within _BAND_RATIO of it.
            hi = float(r[start])
            stop = start + int(np.searchsorted(-r[start:], -hi / _BAND_RATIO, side="right"))
            stop = max(stop, start + 1)
            band = rows[start:stop]
            lo = float(r[stop - 1])
            start = stop
            todo = todo[_cover_band(items[band], radius[band], lo, hi, xyz[todo], bound_km[todo], out, todo)]
    return out


def _cover_band(
    items: FloatArray,
    radius: FloatArray,
    lo: float,
    hi: float,
    xyz: FloatArray,
    bound_km: FloatArray,
    out: BoolArray,
    which: IntArray,
) -> BoolArray:
    """Mark ``out[which]`` for queries covered by this band; the mask of those left undecided."""
    tree = cKDTree(items, balanced_tree=False, compact_nodes=False)
    limit = np.minimum(bound_km, hi)
    d_km, _ = _knn_tree(tree, None, xyz, 1, _upper_bound(hi))
    d = d_km[:, 0]
    yes = d <= np.minimum(bound_km, lo)
    unsure = np.flatnonzero(~yes & (d <= limit))
    if unsure.size:
        chord = np.minimum(km_to_chord(limit[unsure]) * CHORD_SLACK, 2.0 * CHORD_SLACK)
        hits = tree.query_ball_point(xyz[unsure], chord, workers=_workers(len(unsure)), return_sorted=False)
        counts = np.fromiter((len(h) for h in hits), dtype=np.int64, count=len(hits))
        local = np.fromiter(chain.from_iterable(hits), dtype=np.int64, count=int(counts.sum()))
        qi = np.repeat(unsure, counts)
        d_hit = chord_to_km(np.linalg.norm(items[local] - xyz[qi], axis=1))
        ok = (d_hit <= radius[local]) & (d_hit <= bound_km[qi])
        yes[qi[ok]] = True
    out[which[yes]] = True
    return ~yes
