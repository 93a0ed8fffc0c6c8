"""The one settings object. Built in ``create_app()`` or the CLI, never at import time."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from aidmatch.categories import Category
from notifications.waves import Wave, parse_waves

MIN_SECRET_KEY_CHARS = 32
_PLACEHOLDERS = frozenset({"changethis", "changeme", "secret", "password", "xxx"})


class SmsSenderKind(StrEnum):
    console = "console"
    twilio = "twilio"


class GeocoderKind(StrEnum):
    gazetteer = "gazetteer"
    nominatim = "nominatim"


def _default_database_url() -> str:
    # Resolved when the settings object is built, so it follows the working directory.
    return f"sqlite:///{Path.cwd() / 'aidmatch.db'}"


class Settings(BaseSettings):
    """Everything configurable, from ``AIDMATCH_*`` environment variables or a ``.env`` file."""

    model_config = SettingsConfigDict(
        env_prefix="AIDMATCH_",
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
    )

    database_url: str = Field(default_factory=_default_database_url)
    database_echo: bool = False
    public_url: str = "http://127.0.0.1:8000"

    # Secrets. The session secret signs the coordinator login cookie; an empty value
    # makes the app generate a per-process secret (sessions then end on restart).
    secret_key: SecretStr = SecretStr("")

    # Limits on what the public may send.
    max_description_chars: Annotated[int, Field(ge=100, le=100_000)] = 2000
    max_page_size: Annotated[int, Field(ge=1, le=10_000)] = 500
    default_region: str = "RU"
    default_language: str = "ru"
    max_offer_radius_km: Annotated[float, Field(gt=0, le=2000)] = 500.0

    # Abuse and load limits (per worker).
    public_post_per_min: Annotated[float, Field(gt=0)] = 120.0  # public POSTs per client address
    public_post_burst: Annotated[float, Field(ge=1)] = 60.0
    # Behind reverse proxies: the client is X-Forwarded-For's entry ``proxy_hops`` from the right
    # (the address the outermost proxy of ours saw; what is left of it the client may have written).
    trust_forwarded_for: bool = False
    proxy_hops: Annotated[int, Field(ge=1, le=10)] = 1
    sms_per_phone_per_min: Annotated[float, Field(gt=0)] = 6.0  # inbound SMS acted on per phone
    sms_per_phone_burst: Annotated[float, Field(ge=1)] = 10.0
    max_request_bytes: Annotated[int, Field(ge=1024)] = 64 * 1024
    max_open_needs_per_phone: Annotated[int, Field(ge=1)] = 10
    # POST /api/needs: the posts that arrive together in one worker are written in one transaction
    # (group commit) of at most ``intake_group_max``: what has queued while the previous group ran,
    # and under load (that group had more than one post) the posts that follow its first, each
    # within ``intake_group_gap_ms`` of the one before, for at most ``intake_group_wait_ms``.
    intake_group_max: Annotated[int, Field(ge=1, le=1000)] = 64
    intake_group_wait_ms: Annotated[float, Field(ge=0, le=1000)] = 10.0
    intake_group_gap_ms: Annotated[float, Field(ge=0, le=1000)] = 2.0
    # GET /api/stats/unmet answers from this worker's copy for this long (0: computed every time).
    unmet_stats_cache_s: Annotated[float, Field(ge=0, le=3600)] = 1.0
    # A copy over a minute old is renewed before answering, but the request waits at most this long
    # for the new one and otherwise gets the old one (its age in ``stats_age_s`` and the ``Age`` header).
    unmet_stats_stale_wait_s: Annotated[float, Field(ge=0, le=60)] = 0.1

    # Scheduler.
    scheduler_enabled: bool = True
    batch_interval_s: Annotated[float, Field(gt=0)] = 60.0
    # The matcher's improvement rounds stop once a batch has spent this long (the first solve always
    # runs; the run's config then says "complete": false). 0: no limit.
    batch_time_budget_s: Annotated[float, Field(ge=0)] = 40.0
    escalation_interval_s: Annotated[float, Field(gt=0)] = 30.0
    outbox_interval_s: Annotated[float, Field(gt=0)] = 5.0
    need_expiry_hours: Annotated[float, Field(gt=0)] = 72.0
    # The "still needed?" SMS goes this long before a need expires; re-confirming renews it.
    need_reconfirm_before_hours: Annotated[float, Field(ge=0)] = 12.0
    # A proposed or notified match with no answer this long times out; the need goes to the next helper.
    match_response_timeout_s: Annotated[float, Field(gt=0)] = 900.0
    # Escalation waves for critical needs: "km:helpers:seconds" per wave, comma separated; and
    # per category (JSON object, e.g. {"medical": "3:5:120,10:10:300"}) where it should differ.
    escalation_waves: str = "5:3:300,15:6:600,40:12:900"
    escalation_waves_by_category: dict[str, str] = Field(default_factory=dict)

    # SMS.
    sms_sender: SmsSenderKind = SmsSenderKind.console
    sms_rate_per_s: Annotated[float, Field(gt=0)] = 1.0
    sms_max_attempts: Annotated[int, Field(ge=1, le=50)] = 6
    sms_retry_base_s: Annotated[float, Field(gt=0)] = 30.0  # doubles with each attempt, up to an hour
    sms_max_segments: Annotated[int, Field(ge=1, le=10)] = 3
    # A message left "sending" this long (the sender crashed mid-send) is reconciled with the
    # provider: marked sent if the provider has it, else sent again.
    sms_stale_sending_s: Annotated[float, Field(gt=0)] = 120.0
    # Conversations by SMS that are still missing something are forgotten after this long.
    sms_conversation_hours: Annotated[float, Field(gt=0)] = 24.0
    twilio_account_sid: str = ""
    twilio_auth_token: SecretStr = SecretStr("")
    twilio_from: str = ""
    twilio_messaging_service_sid: str = ""
    twilio_base_url: str = ""  # empty: Twilio's own API; tests point it at a local server

    # Geocoding.
    geocoder: GeocoderKind = GeocoderKind.gazetteer
    nominatim_user_agent: str = "aidmatch"
    nominatim_url: str = ""  # empty: geopy's default Nominatim host

    # Map tiles for the dashboard; empty shows points over a plain background.
    tile_url: str = ""

    @field_validator("database_url")
    @classmethod
    def _known_driver(cls, value: str) -> str:
        if value.startswith(("postgresql://", "postgres://")):
            # psycopg 3 is the only PostgreSQL driver we install.
            value = "postgresql+psycopg://" + value.split("://", 1)[1]
        if not value.startswith(("sqlite:", "postgresql+psycopg:")):
            # The scheme only: the rest of a URL may hold a password, and this message is printed.
            raise ValueError(
                f"database_url must be sqlite:///… or postgresql+psycopg://…, got {value.split(':', 1)[0]}:…"
            )
        return value

    @field_validator("public_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        parts = urlsplit(value.strip())
        if parts.scheme not in ("http", "https") or not parts.hostname or " " in value.strip():
            raise ValueError(f"public_url must be an http(s) address such as https://aid.example.org, got {value!r}")
        return value.strip()

    @field_validator("escalation_waves")
    @classmethod
    def _waves(cls, value: str) -> str:
        parse_waves(value)  # WaveSpecError is a ValueError: pydantic reports it
        return value

    @field_validator("escalation_waves_by_category")
    @classmethod
    def _waves_by_category(cls, value: dict[str, str]) -> dict[str, str]:
        known = {c.value for c in Category}
        for category, spec in value.items():
            if category not in known:
                raise ValueError(f"escalation_waves_by_category: unknown category {category!r}")
            parse_waves(spec)
        return value

    def waves_for(self, category: str) -> tuple[Wave, ...]:
        """The escalation waves of a category (its own, else the default)."""
        return parse_waves(self.escalation_waves_by_category.get(category, self.escalation_waves))

    @field_validator("default_region")
    @classmethod
    def _region_upper(cls, value: str) -> str:
        if len(value) != 2 or not value.isalpha():
            raise ValueError(f"default_region must be a two-letter country code, got {value!r}")
        return value.upper()

    @model_validator(mode="after")
    def _refuse_placeholders(self) -> Settings:
        for name in ("secret_key", "twilio_auth_token"):
            value: SecretStr = getattr(self, name)
            if value.get_secret_value().strip().lower() in _PLACEHOLDERS:
                raise ValueError(f"AIDMATCH_{name.upper()} is a placeholder; set a real value")
        key = self.secret_key.get_secret_value()
        if key and len(key.strip()) < MIN_SECRET_KEY_CHARS:
            # It signs the coordinators' login cookie, which names a token by its (counted) id: a
            # guessable key lets anyone forge a login.
            raise ValueError(
                f"AIDMATCH_SECRET_KEY must be at least {MIN_SECRET_KEY_CHARS} characters "
                "(e.g. `python -c 'import secrets; print(secrets.token_urlsafe(32))'`), or unset for a per-process key"
            )
        if self.need_reconfirm_before_hours >= self.need_expiry_hours:
            raise ValueError(
                f"AIDMATCH_NEED_RECONFIRM_BEFORE_HOURS ({self.need_reconfirm_before_hours:g}) must be less than "
                f"AIDMATCH_NEED_EXPIRY_HOURS ({self.need_expiry_hours:g}): every new need would be asked "
                "«still needed?» at once"
            )
        if self.sms_sender is SmsSenderKind.twilio:
            missing = [
                f"AIDMATCH_{n.upper()}"
                for n in ("twilio_account_sid", "twilio_auth_token")
                if not str(getattr(self, n).get_secret_value() if n == "twilio_auth_token" else getattr(self, n))
            ]
            if not (self.twilio_from or self.twilio_messaging_service_sid):
                missing.append("AIDMATCH_TWILIO_FROM or AIDMATCH_TWILIO_MESSAGING_SERVICE_SID")
            if missing:
                raise ValueError("SMS_SENDER=twilio needs " + ", ".join(missing))
            host = urlsplit(self.public_url).hostname or ""
            if host in ("localhost", "::1") or host.startswith("127."):
                # Twilio would call a loopback address (the webhooks never come, their signatures are
                # checked against it) and helpers would get task links to it.
                raise ValueError("SMS_SENDER=twilio needs AIDMATCH_PUBLIC_URL: the address Twilio and helpers reach")
        return self

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    @property
    def batch_time_budget(self) -> float | None:
        """``batch_time_budget_s`` for the matcher: None when 0 (no limit)."""
        return self.batch_time_budget_s or None
