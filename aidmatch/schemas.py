"""Pydantic types shared by several slices: coordinates, phones, pages of results."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any, Generic, TypeVar

from fastapi import Path
from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, Field, field_validator

from notifications.errors import InvalidPhoneError
from notifications.phones import normalize_phone

T = TypeVar("T")

Latitude = Annotated[float, Field(ge=-90.0, le=90.0, allow_inf_nan=False, description="WGS84 degrees")]
Longitude = Annotated[float, Field(ge=-180.0, le=180.0, allow_inf_nan=False, description="WGS84 degrees")]
ShortText = Annotated[str, Field(min_length=1, max_length=200)]
# Row ids are 32-bit integers on PostgreSQL; anything else is not an id we could have issued.
MAX_ROW_ID = 2**31 - 1
RowId = Annotated[int, Path(ge=1, le=MAX_ROW_ID, description="row id")]
Address = Annotated[str, Field(min_length=1, max_length=500)]
Description = Annotated[str, Field(max_length=2000)]


def _sane_year(value: datetime) -> datetime:
    if not 2000 <= value.year <= 2100:
        raise ValueError(f"year {value.year} is outside 2000-2100")
    return value


Timestamp = Annotated[AwareDatetime, AfterValidator(_sane_year), Field(description="with a time zone")]


def _e164(value: str) -> str:
    # Region RU by default: "8 912 345-67-89" is a Russian mobile number.
    try:
        return normalize_phone(value, default_region="RU")
    except InvalidPhoneError as exc:
        raise ValueError(str(exc)) from exc


Phone = Annotated[
    str,
    Field(max_length=40, description="any common format; stored as E.164, Russian numbers by default"),
    AfterValidator(_e164),
]


# Control characters other than tab and line breaks: never typed by a person, and PostgreSQL
# refuses NUL in text outright (a 500 instead of a clear 422).
CONTROL_CHARACTERS = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")


# Line breaks other programs write (Word's and PowerPoint's vertical tab, form feed, NEL, the
# Unicode line and paragraph separators): pasted text keeps its lines, as newlines.
_LINE_BREAKS = str.maketrans(dict.fromkeys("\x0b\x0c\x85\u2028\u2029", "\n"))


def refuse_control_characters(value: str) -> str:
    found = CONTROL_CHARACTERS.search(value)
    if found is not None:
        raise ValueError(f"control character U+{ord(found.group()):04X} at position {found.start()} is not allowed")
    return value


class InModel(BaseModel):
    """Base of request bodies: unknown fields are refused, text is stripped, control characters
    (other than tab and line breaks) refused."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    @field_validator("*", mode="before")
    @classmethod
    def _line_breaks(cls, value: Any) -> Any:
        return value.translate(_LINE_BREAKS) if isinstance(value, str) else value

    @field_validator("*", mode="after")
    @classmethod
    def _printable(cls, value: Any) -> Any:
        if isinstance(value, str):
            refuse_control_characters(value)
        elif isinstance(value, list | tuple):
            for item in value:
                if isinstance(item, str):
                    refuse_control_characters(item)
        return value


class OutModel(BaseModel):
    model_config = ConfigDict(from_attributes=True)


class Page(BaseModel, Generic[T]):
    items: list[T]
    total: int
    limit: int
    offset: int
