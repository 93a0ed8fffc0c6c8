"""Offer payloads."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Self

from pydantic import Field, field_validator, model_validator

from aidmatch.categories import Category
from aidmatch.enums import Language, OfferStatus
from aidmatch.schemas import (
    Address,
    Description,
    InModel,
    Latitude,
    Longitude,
    OutModel,
    Phone,
    ShortText,
    Timestamp,
)
from notifications.phones import redact_phones

MAX_RADIUS_KM = 500.0


class OfferIn(InModel):
    categories: Annotated[list[Category], Field(min_length=1, max_length=len(Category))]
    capacity: Annotated[int, Field(ge=1, le=10_000, description="tasks or units this offer can take")] = 1
    radius_km: Annotated[float, Field(gt=0, le=MAX_RADIUS_KM, allow_inf_nan=False)] = 25.0
    lat: Latitude | None = None
    lon: Longitude | None = None
    address: Address | None = None
    available_from: Timestamp | None = None
    available_until: Timestamp | None = None
    description: Description | None = None
    name: ShortText | None = None
    phone: Phone
    language: Language = Language.ru
    link: Annotated[
        str | None,
        Field(
            max_length=200,
            description="the helper's private task link (or its last part), to add an offer to a phone "
            "registered already; a token holder needs none",
        ),
    ] = None

    @field_validator("categories")
    @classmethod
    def _unique(cls, value: list[Category]) -> list[Category]:
        return sorted(set(value), key=list(Category).index)

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if (self.lat is None) != (self.lon is None):
            raise ValueError("give both lat and lon, or neither and an address")
        if self.lat is None and not self.address:
            raise ValueError("give lat and lon, or an address we can find")
        if self.available_from and self.available_until and self.available_until <= self.available_from:
            raise ValueError("available_until must be after available_from")
        return self


class OfferOut(OutModel):
    id: int
    helper_id: int
    status: OfferStatus
    categories: list[Category]
    capacity: int
    capacity_used: int
    radius_km: float
    lat: float
    lon: float
    address: str | None
    description: str | None
    available_from: datetime | None
    available_until: datetime | None
    created_at: datetime
    updated_at: datetime

    @field_validator("description", "address")
    @classmethod
    def _visible_text(cls, value: str | None) -> str | None:
        # Helpers type their number into the text too; offers are public, phone numbers are not.
        return redact_phones(value) if value else value


class OfferCreated(OfferOut):
    """Answer to a new offer; ``task_link`` is set when the offer registered a new helper."""

    task_link: str | None = None
