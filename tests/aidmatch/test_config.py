"""Settings: environment, .env, validation."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from aidmatch.config import Settings


def test_defaults_are_offline_and_sqlite(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    s = Settings(_env_file=None)
    assert s.database_url == f"sqlite:///{tmp_path / 'aidmatch.db'}"
    assert s.sms_sender == "console"
    assert s.geocoder == "gazetteer"
    assert s.is_sqlite


def test_environment_and_dotenv(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".env").write_text("AIDMATCH_BATCH_INTERVAL_S=15\nAIDMATCH_PUBLIC_URL=https://aid.example\n")
    monkeypatch.setenv("AIDMATCH_DATABASE_URL", "postgres://u@db:5432/aid")
    s = Settings()
    assert s.batch_interval_s == 15
    assert s.public_url == "https://aid.example"
    assert s.database_url == "postgresql+psycopg://u@db:5432/aid"  # psycopg 3 driver made explicit


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"database_url": "mysql://x/y"}, "database_url"),
        ({"secret_key": "changethis"}, "placeholder"),
        ({"twilio_auth_token": "changeme"}, "placeholder"),
        ({"sms_sender": "twilio"}, "TWILIO_ACCOUNT_SID"),
        ({"sms_sender": "twilio", "twilio_account_sid": "AC1", "twilio_auth_token": "t"}, "TWILIO_FROM"),
        ({"default_region": "Russia"}, "two-letter"),
        ({"batch_interval_s": 0}, "batch_interval_s"),
    ],
)
def test_bad_settings_are_refused_with_a_reason(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        Settings(_env_file=None, **kwargs)


def test_twilio_settings_complete() -> None:
    s = Settings(
        _env_file=None,
        sms_sender="twilio",
        twilio_account_sid="AC1",
        twilio_auth_token="s3cr3t-value",
        twilio_from="+15005550006",
    )
    assert s.twilio_auth_token.get_secret_value() == "s3cr3t-value"
    assert "s3cr3t-value" not in repr(s)


def test_escalation_waves_are_checked_and_can_differ_by_category() -> None:
    with pytest.raises(ValidationError, match="smaller than"):
        Settings(escalation_waves="10:3:60,5:3:60", _env_file=None)
    with pytest.raises(ValidationError, match="unknown category 'fire'"):
        Settings(escalation_waves_by_category={"fire": "5:3:60"}, _env_file=None)
    s = Settings(escalation_waves_by_category={"medical": "3:5:120"}, _env_file=None)
    assert [w.radius_km for w in s.waves_for("medical")] == [3.0]
    assert len(s.waves_for("water")) == 3
