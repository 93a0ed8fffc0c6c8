"""Rows for the exports, streamed from the database in batches.

Only columns that identify nobody are selected: never names or phone numbers, never descriptions
(people type their names and numbers there); addresses go out with any phone number hidden.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Select, select
from sqlalchemy.orm import Session, sessionmaker

from aidmatch.needs.models import Need
from aidmatch.offers.models import Offer, OfferCategory
from notifications.phones import redact_phones

BATCH_ROWS = 500


@dataclass(frozen=True, slots=True)
class Column:
    name: str
    hxl: str


NEED_COLUMNS: tuple[Column, ...] = (
    Column("id", "#meta+id"),
    Column("code", "#meta+code"),
    Column("category", "#sector"),
    Column("quantity", "#indicator+quantity+num"),
    Column("quantity_assigned", "#indicator+assigned+num"),
    Column("urgency", "#severity"),
    Column("status", "#status"),
    Column("source", "#meta+source"),
    Column("lat", "#loc+lat"),
    Column("lon", "#loc+lon"),
    Column("location_accuracy_m", "#loc+accuracy_m+num"),
    Column("address", "#loc+address"),
    Column("created_at", "#date+reported"),
    Column("updated_at", "#date+updated"),
    Column("needed_by", "#date+deadline"),
    Column("expires_at", "#date+expires"),
)

OFFER_COLUMNS: tuple[Column, ...] = (
    Column("id", "#meta+id"),
    Column("categories", "#sector"),
    Column("capacity", "#capacity+num"),
    Column("capacity_used", "#capacity+used+num"),
    Column("radius_km", "#loc+radius_km+num"),
    Column("status", "#status"),
    Column("lat", "#loc+lat"),
    Column("lon", "#loc+lon"),
    Column("address", "#loc+address"),
    Column("available_from", "#date+start"),
    Column("available_until", "#date+end"),
    Column("created_at", "#date+reported"),
    Column("updated_at", "#date+updated"),
)


def _value(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if hasattr(value, "value"):  # enums
        return value.value
    return value


def _need_rows(session: Session) -> Iterator[dict[str, Any]]:
    cols = [getattr(Need, c.name) for c in NEED_COLUMNS]
    stmt: Select[Any] = select(*cols).order_by(Need.id).execution_options(yield_per=BATCH_ROWS)
    for row in session.execute(stmt):
        out = {c.name: _value(v) for c, v in zip(NEED_COLUMNS, row, strict=True)}
        if out["address"]:
            out["address"] = redact_phones(out["address"])
        yield out


def _offer_rows(session: Session) -> Iterator[dict[str, Any]]:
    names = [c.name for c in OFFER_COLUMNS if c.name != "categories"]
    stmt: Select[Any] = select(*(getattr(Offer, n) for n in names)).order_by(Offer.id)
    last_id = 0
    while True:  # keyset pages: each batch asks for its categories in one query
        batch = session.execute(stmt.where(Offer.id > last_id).limit(BATCH_ROWS)).all()
        if not batch:
            return
        ids = [row[0] for row in batch]
        cats: dict[int, list[str]] = {}
        for offer_id, category in session.execute(
            select(OfferCategory.offer_id, OfferCategory.category).where(OfferCategory.offer_id.in_(ids))
        ):
            cats.setdefault(offer_id, []).append(category.value)
        for row in batch:
            out = {n: _value(v) for n, v in zip(names, row, strict=True)}
            out["categories"] = ";".join(sorted(cats.get(out["id"], [])))
            if out["address"]:
                out["address"] = redact_phones(out["address"])
            yield {c.name: out[c.name] for c in OFFER_COLUMNS}
        last_id = ids[-1]


ROWS: dict[str, tuple[tuple[Column, ...], Callable[[Session], Iterator[dict[str, Any]]]]] = {
    "needs": (NEED_COLUMNS, _need_rows),
    "offers": (OFFER_COLUMNS, _offer_rows),
}


# A cell a spreadsheet would read as a formula (CSV injection): text typed by the public that
# starts with one of = + - @ gets a leading apostrophe, which spreadsheets show as plain text. So
# does every part of it after a character a spreadsheet may split on instead of the comma (Excel
# in a Russian locale splits on ";", LibreOffice on whatever its import dialog says): a quoted
# field does not stop that split.
_FORMULA = re.compile(r"(^|[;,|\t\r\n])([ \t]*)(?=[=+\-@])")


def _cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, str):
        return _FORMULA.sub(r"\1\2'", value)
    return value


def _csv_line(values: Sequence[Any]) -> str:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\r\n").writerow([_cell(v) for v in values])
    return buf.getvalue()


def stream(kind: str, fmt: str, sessions: sessionmaker[Session]) -> Iterator[str]:
    """The export as text chunks; the session is opened here so it lives as long as the stream."""
    columns, rows = ROWS[kind]
    with sessions() as session:
        if fmt in ("csv", "hxl.csv"):
            yield _csv_line([c.name for c in columns])
            if fmt == "hxl.csv":
                yield _csv_line([c.hxl for c in columns])
            for row in rows(session):
                yield _csv_line([row[c.name] for c in columns])
            return
        yield '{"type":"FeatureCollection","features":['
        first = True
        for row in rows(session):
            properties = {k: v for k, v in row.items() if k not in ("lat", "lon")}
            feature = {
                "type": "Feature",
                "geometry": {"type": "Point", "coordinates": [row["lon"], row["lat"]]},
                "properties": properties,
            }
            yield ("" if first else ",") + json.dumps(feature, ensure_ascii=False)
            first = False
        yield "]}"
