"""CSV files in and out of the batch matcher (`aidmatch match-file`), no database.

needs.csv:  id,lat,lon,category,quantity,urgency   (quantity default 1, urgency default normal)
offers.csv: id,lat,lon,categories,capacity,radius_km (categories separated by ';', capacity default 1)
output:     need_id,offer_id,quantity,distance_km
"""

from __future__ import annotations

import csv
import io
import os
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import numpy as np
from numpy.typing import NDArray

from aidmatch.categories import Category
from aidmatch.enums import Urgency
from aidmatch.errors import InvalidInputError

CATEGORY_CODES = [c.value for c in Category]
URGENCY_CODES = [u.value for u in Urgency]  # index 0 critical, 1 urgent, 2 normal
MAX_UNITS = 10_000  # a need's quantity or an offer's capacity, as the API takes them
NEED_COLUMNS = ("id", "lat", "lon", "category", "quantity", "urgency")
OFFER_COLUMNS = ("id", "lat", "lon", "categories", "capacity", "radius_km")


class CsvError(InvalidInputError):
    """A bad row or header; the message names the file and line."""


@dataclass(frozen=True, slots=True)
class NeedsFile:
    ids: NDArray[np.object_]
    lat: NDArray[np.float64]
    lon: NDArray[np.float64]
    category: NDArray[np.int64]
    quantity: NDArray[np.int64]
    urgency: NDArray[np.int64]


@dataclass(frozen=True, slots=True)
class OffersFile:
    ids: NDArray[np.object_]
    lat: NDArray[np.float64]
    lon: NDArray[np.float64]
    category_mask: NDArray[np.int64]
    capacity: NDArray[np.int64]
    radius_km: NDArray[np.float64]


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _read_columns(
    path: Path, required: tuple[str, ...], optional: tuple[str, ...]
) -> tuple[dict[str, list[str]], NDArray[np.int64]]:
    """The wanted columns as strings and, per record, the physical line it starts on."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise CsvError(f"{path}: cannot open: {exc.strerror}") from exc
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise CsvError(
            f"{path}: line {line}: byte 0x{data[exc.start]:02x} is not UTF-8 (save the file as UTF-8)"
        ) from None
    del data
    nul = text.find("\x00")
    if nul >= 0:
        raise CsvError(f"{path}: line {text.count(chr(10), 0, nul) + 1}: a NUL character (not a text CSV file?)")
    with io.StringIO(text.removeprefix("\ufeff"), newline="") as handle:
        del text
        reader = csv.reader(handle)
        try:
            header = [h.strip().lower() for h in next(reader)]
        except StopIteration:
            raise CsvError(f"{path}: empty file; expected a header with {', '.join(required)}") from None
        # A column this reads, named twice: which one is meant? (Others may repeat: they are not read.)
        twice = sorted({h for h in (*required, *optional) if header.count(h) > 1})
        if twice:
            raise CsvError(f"{path}: line 1: column(s) {', '.join(twice)} appear more than once")
        missing = [c for c in required if c not in header]
        if missing:
            raise CsvError(f"{path}: line 1: missing column(s) {', '.join(missing)}; header is {','.join(header)}")
        wanted = [c for c in (*required, *optional) if c in header]
        index = [header.index(c) for c in wanted]
        columns: dict[str, list[str]] = {c: [] for c in wanted}
        appenders = [columns[c].append for c in wanted]
        width = len(header)
        starts: list[int] = []
        line_no = reader.line_num + 1
        try:
            for row in reader:
                if len(row) != width:
                    if not row or (len(row) == 1 and not row[0].strip()):
                        line_no = reader.line_num + 1  # a blank line (one at the end, say) holds nothing: skipped
                        continue
                    raise CsvError(f"{path}: line {line_no}: {len(row)} fields, the header has {width}")
                for append, i in zip(appenders, index, strict=True):
                    append(row[i])
                starts.append(line_no)
                # A quoted field may span lines: the next record starts after this one ends.
                line_no = reader.line_num + 1
        except csv.Error as exc:
            raise CsvError(f"{path}: line {line_no}: {exc}") from exc
    return columns, np.asarray(starts, dtype=np.int64)


def _numbers(
    path: Path,
    lines: NDArray[np.int64],
    name: str,
    values: list[str],
    *,
    dtype: type[np.float64] | type[np.int64],
    default: float | None = None,
    check: Callable[[NDArray[np.float64]], NDArray[np.bool_]] | None = None,
    expect: str = "",
) -> NDArray[np.generic]:
    raw = np.asarray(values, dtype=object)
    if default is not None:
        raw = np.where(np.char.strip(raw.astype(str)) == "", str(default), raw)
    try:
        out = np.asarray(raw.astype(str), dtype=np.float64)
    except ValueError:
        out = None
    bad: NDArray[np.bool_]
    if out is None:
        bad = np.array([not _is_float(v) for v in raw], dtype=bool)
    else:
        bad = ~np.isfinite(out)
        if dtype is np.int64:
            bad |= out != np.round(out)
        if check is not None:
            bad |= ~check(out)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise CsvError(f"{path}: line {lines[i]}: {name} = {values[i]!r} is not {expect or 'a number'}")
    assert out is not None
    return out.astype(dtype)


def _is_float(value: object) -> bool:
    try:
        float(str(value))
    except ValueError:
        return False
    return True


def _codes(
    path: Path, lines: NDArray[np.int64], name: str, values: list[str], known: list[str], default: str | None = None
) -> NDArray[np.int64]:
    lookup = {code: i for i, code in enumerate(known)}
    # Few distinct values in many rows: map each distinct spelling once.
    uniques, inverse = np.unique(np.asarray(values, dtype=str), return_inverse=True)
    mapped = np.empty(len(uniques), dtype=np.int64)
    for j, v in enumerate(uniques.tolist()):
        code = lookup.get(v.strip().lower() or (default or ""))
        if code is None:
            i = values.index(v)
            raise CsvError(f"{path}: line {lines[i]}: {name} = {v!r} is not one of {', '.join(known)}")
        mapped[j] = code
    return mapped[inverse.reshape(-1)] if len(values) else np.empty(0, dtype=np.int64)


def _ids(path: Path, lines: NDArray[np.int64], values: list[str]) -> NDArray[np.object_]:
    ids = np.asarray([v.strip() for v in values], dtype=object)
    empty = ids == ""
    if empty.any():
        raise CsvError(f"{path}: line {lines[int(np.flatnonzero(empty)[0])]}: id is empty")
    seen: dict[str, int] = {}
    for i, v in enumerate(ids.tolist()):
        first = seen.setdefault(v, i)
        if first != i:
            raise CsvError(
                f"{path}: line {lines[i]}: id {v!r} again (first on line {lines[first]}); ids must be unique"
            )
    return ids


def _coordinates(
    path: Path, lines: NDArray[np.int64], cols: dict[str, list[str]]
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    lat = _numbers(
        path,
        lines,
        "lat",
        cols["lat"],
        dtype=np.float64,
        check=lambda a: np.abs(a) <= 90,
        expect="a latitude in [-90, 90]",
    )
    lon = _numbers(
        path,
        lines,
        "lon",
        cols["lon"],
        dtype=np.float64,
        check=lambda a: np.abs(a) <= 180,
        expect="a longitude in [-180, 180]",
    )
    return lat.astype(np.float64), lon.astype(np.float64)


def _count(path: Path, lines: NDArray[np.int64], cols: dict[str, list[str]], name: str, n: int) -> NDArray[np.int64]:
    """An optional positive-integer column (quantity, capacity); 1 where absent or empty."""
    if name not in cols:
        return np.ones(n, dtype=np.int64)
    values = _numbers(
        path,
        lines,
        name,
        cols[name],
        dtype=np.int64,
        default=1,
        check=lambda a: (a >= 1) & (a <= MAX_UNITS),
        expect=f"an integer from 1 to {MAX_UNITS:,}",
    )
    return values.astype(np.int64)


def read_needs(path: Path) -> NeedsFile:
    """Needs from CSV, validated; a CsvError names the first bad line."""
    cols, lines = _read_columns(path, ("id", "lat", "lon", "category"), ("quantity", "urgency"))
    n = len(cols["id"])
    lat, lon = _coordinates(path, lines, cols)
    quantity = _count(path, lines, cols, "quantity", n)
    urgency = (
        _codes(path, lines, "urgency", cols["urgency"], URGENCY_CODES, default="normal")
        if "urgency" in cols
        else np.full(n, URGENCY_CODES.index("normal"), dtype=np.int64)
    )
    return NeedsFile(
        ids=_ids(path, lines, cols["id"]),
        lat=lat,
        lon=lon,
        category=_codes(path, lines, "category", cols["category"], CATEGORY_CODES),
        quantity=quantity,
        urgency=urgency,
    )


def read_offers(path: Path) -> OffersFile:
    """Offers from CSV, validated; a CsvError names the first bad line."""
    cols, lines = _read_columns(path, ("id", "lat", "lon", "categories", "radius_km"), ("capacity",))
    n = len(cols["id"])
    lat, lon = _coordinates(path, lines, cols)
    radius = _numbers(
        path,
        lines,
        "radius_km",
        cols["radius_km"],
        dtype=np.float64,
        check=lambda a: a > 0,
        expect="a positive distance in km",
    )
    capacity = _count(path, lines, cols, "capacity", n)
    lookup = {code: 1 << i for i, code in enumerate(CATEGORY_CODES)}
    masks = np.zeros(n, dtype=np.int64)
    cache: dict[str, int] = {}
    for i, raw in enumerate(cols["categories"]):
        mask = cache.get(raw)
        if mask is None:
            mask = 0
            for part in raw.split(";"):
                key = part.strip().lower()
                if not key:
                    continue
                bit = lookup.get(key)
                if bit is None:
                    raise CsvError(
                        f"{path}: line {lines[i]}: category {part.strip()!r} is not one of {', '.join(CATEGORY_CODES)}"
                    )
                mask |= bit
            if mask == 0:
                raise CsvError(f"{path}: line {lines[i]}: categories is empty")
            cache[raw] = mask
        masks[i] = mask
    return OffersFile(
        ids=_ids(path, lines, cols["id"]),
        lat=lat,
        lon=lon,
        category_mask=masks,
        capacity=capacity,
        radius_km=radius.astype(np.float64),
    )


def write_matches(
    out: IO[str],
    need_ids: Iterable[str],
    offer_ids: Iterable[str],
    quantity: NDArray[np.int64],
    distance_km: NDArray[np.float64],
) -> None:
    """Assignment rows as CSV: need_id,offer_id,quantity,distance_km (distance to 0.001 km)."""
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["need_id", "offer_id", "quantity", "distance_km"])
    writer.writerows(
        zip(need_ids, offer_ids, quantity.tolist(), np.char.mod("%.3f", distance_km).tolist(), strict=True)
    )


@dataclass(frozen=True, slots=True)
class MatchFileSummary:
    needs: int
    offers: int
    matched_needs: int
    assigned_quantity: int
    unmatched_needs: int
    total_distance_km: float
    seconds: float

    def as_dict(self) -> dict[str, int | float]:
        return {
            "needs": self.needs,
            "offers": self.offers,
            "matched_needs": self.matched_needs,
            "assigned_quantity": self.assigned_quantity,
            "unmatched_needs": self.unmatched_needs,
            "total_distance_km": round(self.total_distance_km, 3),
            "seconds": round(self.seconds, 4),
        }


def match_files(needs_path: Path, offers_path: Path, out_path: Path) -> MatchFileSummary:
    """Read both files, run the batch matcher, write the assignment; ``seconds`` times the matching only."""
    needs_file = read_needs(needs_path)
    offers_file = read_offers(offers_path)
    # The output goes to a file beside it first (so a bad --out fails before the run, and an old
    # output is replaced only by a whole new one).
    if out_path.is_dir():
        raise CsvError(f"{out_path}: is a directory; --out takes a file name")
    folder = next((p for p in out_path.parents if p.exists()), None)
    if folder is not None and not folder.is_dir():
        raise CsvError(f"{out_path}: {folder} is a file, not a directory")
    try:
        out_path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{out_path.name}.", suffix=".part", dir=out_path.parent)
    except OSError as exc:
        raise CsvError(f"{out_path}: cannot write there: {exc.strerror}") from exc
    try:
        with os.fdopen(fd, "w", newline="", encoding="utf-8") as out:
            summary, rows = _match(needs_file, offers_file)
            write_matches(out, *rows)
        os.chmod(tmp_name, 0o666 & ~_umask())  # as a file opened for writing would be (mkstemp's is 0600)
        os.replace(tmp_name, out_path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    return summary


def _match(
    needs_file: NeedsFile, offers_file: OffersFile
) -> tuple[MatchFileSummary, tuple[list[str], list[str], NDArray[np.int64], NDArray[np.float64]]]:
    """The batch matcher on the files' columns: the summary and the output rows."""
    import time

    import matching

    started = time.perf_counter()
    needs = matching.Needs(
        lat=needs_file.lat,
        lon=needs_file.lon,
        category=needs_file.category,
        quantity=needs_file.quantity,
        urgency=needs_file.urgency,
        max_km=np.full(len(needs_file.lat), np.inf),
    )
    offers = matching.Offers(
        lat=offers_file.lat,
        lon=offers_file.lon,
        category_mask=offers_file.category_mask,
        capacity=offers_file.capacity,
        radius_km=offers_file.radius_km,
    )
    result = matching.match(needs, offers, workers=None)  # a process of its own: one solver per CPU
    seconds = time.perf_counter() - started
    rows = (
        needs_file.ids[result.need_index].tolist(),
        offers_file.ids[result.offer_index].tolist(),
        result.quantity,
        result.distance_km,
    )
    matched = int((result.served > 0).sum())
    summary = MatchFileSummary(
        needs=len(needs_file.lat),
        offers=len(offers_file.lat),
        matched_needs=matched,
        assigned_quantity=int(result.quantity.sum()),
        unmatched_needs=len(needs_file.lat) - matched,
        total_distance_km=float(np.dot(result.quantity, result.distance_km)),
        seconds=seconds,
    )
    return summary, rows
