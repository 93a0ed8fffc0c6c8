"""Need payloads: what the public may send, what the public and coordinators see."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Self

from pydantic import Field, PrivateAttr, field_validator, model_validator

from aidmatch.categories import Category
from aidmatch.enums import Language, NeedStatus, Source, Urgency
from aidmatch.schemas import (
    Address,
    Description,
    InModel,
    Latitude,
    Longitude,
    OutModel,
    Phone,
    RowId,
    ShortText,
    Timestamp,
)
from notifications.phones import redact_phones


class NeedIn(InModel):
    category: Category
    quantity: Annotated[int, Field(ge=1, le=10_000)] = 1
    urgency: Urgency = Urgency.normal
    lat: Latitude | None = None
    lon: Longitude | None = None
    address: Address | None = None
    location_accuracy_m: Annotated[float, Field(ge=0, le=100_000, allow_inf_nan=False)] | None = None
    max_distance_km: Annotated[float, Field(gt=0, le=500, allow_inf_nan=False)] | None = None
    description: Description | None = None
    contact_name: ShortText | None = None
    contact_phone: Phone | None = None
    language: Language = Language.ru
    needed_by: Timestamp | None = None
    # Set by the route from an ``Idempotency-Key`` header: (the key's SHA-256, the body's), stored
    # with the need. Not a field: a client cannot send it in the body.
    _idempotency: tuple[str, str] | None = PrivateAttr(default=None)

    def with_idempotency(self, key_sha256: str, body_sha256: str) -> Self:
        """This post, to be stored with an idempotency key (see ``Need.idempotency_key``)."""
        copy = self.model_copy()
        copy._idempotency = (key_sha256, body_sha256)
        return copy

    @property
    def idempotency(self) -> tuple[str, str] | None:
        return self._idempotency

    @model_validator(mode="after")
    def _has_location(self) -> Self:
        if (self.lat is None) != (self.lon is None):
            raise ValueError("give both lat and lon, or neither and an address")
        if self.lat is None and not self.address:
            raise ValueError("give lat and lon, or an address we can find")
        return self


class NeedPublic(OutModel):
    """What anyone may see: no names, no phone numbers (not even inside the description)."""

    id: int
    code: str
    category: Category
    quantity: int
    quantity_assigned: int
    urgency: Urgency
    lat: float
    lon: float
    address: str | None
    description: str | None
    language: Language
    source: Source
    status: NeedStatus
    created_at: datetime
    updated_at: datetime
    needed_by: datetime | None
    expires_at: datetime | None

    @field_validator("description", "address")
    @classmethod
    def _visible_description(cls, value: str | None) -> str | None:
        # People type their number into the text too; the public never sees it.
        return redact_phones(value) if value else value


class NeedFull(NeedPublic):
    """The coordinator's view, with the requester's contact."""

    contact_name: str | None
    contact_phone: str | None
    location_accuracy_m: float | None
    max_distance_km: float | None
    duplicate_of_id: int | None

    @field_validator("description", "address")
    @classmethod
    def _visible_description(cls, value: str | None) -> str | None:
        return value


class NeedCreated(NeedPublic):
    """Answer to a new need: how many capable helpers were found in range at once."""

    helpers_in_range: int = 0
    merged: bool = False  # true: the same phone's open need of this category nearby was bumped instead


class MergeIn(InModel):
    into: RowId
