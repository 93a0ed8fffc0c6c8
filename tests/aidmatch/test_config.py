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
        ({"secret_key": " "}, "at least 32"),
        ({"secret_key": "hunter2"}, "at least 32"),
        ({"need_expiry_hours": 6}, "NEED_RECONFIRM_BEFORE_HOURS"),
        ({"public_url": "aid example.org"}, "http"),
        ({"public_url": "ftp://aid.example.org"}, "http"),
        (
            {
                "sms_sender": "twilio",
                "twilio_account_sid": "AC1",
                "twilio_auth_token": "t",
                "twilio_from": "+15005550006",
            },
            "PUBLIC_URL",
        ),
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
        public_url="https://aid.example.org",
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


def test_a_long_secret_key_and_a_short_reminder_lead_are_fine() -> None:
    s = Settings(_env_file=None, secret_key="k" * 32, need_expiry_hours=6, need_reconfirm_before_hours=2)
    assert s.secret_key.get_secret_value() == "k" * 32


@pytest.mark.parametrize(
    "env",
    [
        {"AIDMATCH_DATABASE_URL": "mysql://bob:S3cretPW0rd@db/x"},
        {
            "AIDMATCH_SMS_SENDER": "twilio",
            "AIDMATCH_TWILIO_ACCOUNT_SID": "AC1",
            "AIDMATCH_TWILIO_AUTH_TOKEN": "S3cretPW0rd-0123456789abcdef",
        },
    ],
)
def test_a_bad_configuration_is_reported_without_its_secrets(
    env: dict[str, str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from typer.testing import CliRunner

    from aidmatch.cli import app

    monkeypatch.chdir(tmp_path)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    result = CliRunner().invoke(app, ["db", "current"])
    assert result.exit_code == 2
    assert "bad configuration" in result.output
    assert "S3cretPW0rd" not in result.output
    assert "Traceback" not in result.output
