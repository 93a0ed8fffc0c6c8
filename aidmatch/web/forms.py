"""HTML form posts → the same pydantic payloads as the JSON API, with errors per field in plain words."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

from pydantic import ValidationError
from starlette.datastructures import FormData

from aidmatch.needs.schemas import NeedIn
from aidmatch.offers.schemas import OfferIn
from aidmatch.web.i18n import translate

NEED_FIELDS = (
    "category",
    "quantity",
    "urgency",
    "lat",
    "lon",
    "address",
    "description",
    "contact_name",
    "contact_phone",
    "language",
)
OFFER_FIELDS = (
    "capacity",
    "radius_km",
    "lat",
    "lon",
    "address",
    "available_until",
    "name",
    "phone",
    "language",
    "link",
)
# Moscow time when the browser did not tell us its offset (no JavaScript): the default region is RU.
DEFAULT_UTC_OFFSET_MIN = 180
MAX_FIELD_CHARS = 5000  # anything longer is cut before validation, which then reports it as too long


@dataclass
class FormResult:
    """What was typed (to show again), the payload when valid, and messages per field."""

    values: dict[str, Any]
    errors: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.errors


def _typed(form: FormData, names: tuple[str, ...]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in names:
        raw = form.get(name)
        if isinstance(raw, str):
            out[name] = raw.strip()[:MAX_FIELD_CHARS]
    return out


def _message(lang: str, field_name: str, err_type: str) -> str:
    if field_name in ("contact_phone", "phone"):
        return translate(lang, "err_phone_required" if err_type == "missing" else "err_phone")
    if field_name in ("description", "contact_name", "name", "address") and "too_long" in err_type:
        return translate(lang, "err_too_long")
    if field_name in ("lat", "lon", "address", ""):
        return translate(lang, "err_location")
    key = f"err_{field_name}"
    return translate(lang, key) if key != translate(lang, key) else translate(lang, "err_invalid")


def _collect(lang: str, exc: ValidationError) -> dict[str, str]:
    errors: dict[str, str] = {}
    for err in exc.errors():
        loc = [str(p) for p in err.get("loc", ())]
        name = loc[0] if loc else ""
        target = "address" if name in ("lat", "lon", "") else name
        errors.setdefault(target, _message(lang, name, str(err.get("type", ""))))
    return errors


def _located(payload: dict[str, Any]) -> bool:
    return bool(payload.get("address")) or bool(payload.get("lat") and payload.get("lon"))


def parse_need(form: FormData, lang: str) -> tuple[FormResult, NeedIn | None]:
    typed = _typed(form, NEED_FIELDS)
    payload = {k: v for k, v in typed.items() if v != ""}
    payload.setdefault("language", lang)
    try:
        return FormResult(values=typed), NeedIn.model_validate(payload)
    except ValidationError as exc:
        errors = _collect(lang, exc)
        if not _located(payload):  # pydantic skips the whole-form check when a field already failed
            errors.setdefault("address", translate(lang, "err_location"))
        return FormResult(values=typed, errors=errors), None


def _aware(local: str, offset_min: str | None) -> str:
    """A ``datetime-local`` value with the browser's offset (minutes east of UTC) attached."""
    try:
        offset = int(offset_min) if offset_min else DEFAULT_UTC_OFFSET_MIN
    except ValueError:
        offset = DEFAULT_UTC_OFFSET_MIN
    offset = max(-14 * 60, min(14 * 60, offset))
    try:
        naive = datetime.fromisoformat(local)
    except ValueError:
        return local  # pydantic reports it
    if naive.tzinfo is not None:
        return naive.isoformat()
    return naive.replace(tzinfo=timezone(timedelta(minutes=offset))).isoformat()


def parse_offer(form: FormData, lang: str) -> tuple[FormResult, OfferIn | None]:
    typed = _typed(form, OFFER_FIELDS)
    categories = [c for c in form.getlist("categories") if isinstance(c, str)]
    typed["categories"] = categories
    payload: dict[str, Any] = {k: v for k, v in typed.items() if v not in ("", [])}
    payload.setdefault("language", lang)
    if "available_until" in payload:
        offset = form.get("utc_offset_min")
        payload["available_until"] = _aware(payload["available_until"], offset if isinstance(offset, str) else None)
    if not categories:
        payload.pop("categories", None)
    try:
        return FormResult(values=typed), OfferIn.model_validate(payload)
    except ValidationError as exc:
        errors = _collect(lang, exc)
        if not _located(payload):
            errors.setdefault("address", translate(lang, "err_location"))
        return FormResult(values=typed, errors=errors), None
