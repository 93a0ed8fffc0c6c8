"""Phone numbers to E.164 and phone numbers hidden in free text."""

from __future__ import annotations

import pytest

from notifications.errors import InvalidPhoneError
from notifications.phones import normalize_phone, redact_phones


@pytest.mark.parametrize(
    "raw",
    ["8 912 345-67-89", "+7 912 345 67 89", "+7 (912) 345-67-89", "89123456789", "7-912-345-67-89", " +79123456789 "],
)
def test_russian_formats_become_e164(raw: str) -> None:
    assert normalize_phone(raw) == "+79123456789"


def test_foreign_numbers_keep_their_country() -> None:
    assert normalize_phone("+44 20 7946 0958") == "+442079460958"
    assert normalize_phone("020 7946 0958", default_region="GB") == "+442079460958"


@pytest.mark.parametrize("raw", ["", "call me maybe", "12345", "+7 000 000 00 00", "8" * 50])
def test_invalid_numbers_are_refused(raw: str) -> None:
    with pytest.raises(InvalidPhoneError):
        normalize_phone(raw)


def test_redaction() -> None:
    text = "Звоните 8 912 345-67-89 или +7(903)1234567. Дом 12, кв. 5, нас 3 человека"
    out = redact_phones(text)
    assert "345" not in out
    assert "1234567" not in out
    assert "Дом 12, кв. 5, нас 3 человека" in out
    assert out.count("[phone hidden]") == 2
    assert redact_phones("нет воды") == "нет воды"


def test_redaction_of_unusual_separators() -> None:
    for text in ("номер 8_912_345_67_89", "tel:8,912,345,67,89", "8/912/345/67/89"):
        assert "345" not in redact_phones(text), text


def test_errors_do_not_repeat_the_number() -> None:
    with pytest.raises(InvalidPhoneError) as caught:
        normalize_phone("+7 000 000 00 00")
    assert "000" not in str(caught.value)


def test_dates_and_times_in_a_text_are_not_taken_for_phones() -> None:
    # The note a repeat appends to a need: "[2026-11-28 00:51 UTC, api] …" was shown as "[[phone hidden]:51 …".
    note = "[2026-11-28 00:51 UTC, api] нужна вода"
    assert redact_phones(note) == note
    # A number written right after a date is still hidden.
    out = redact_phones("2026-11-28 00:51 89161234567")
    assert out.startswith("2026-11-28 00:51")
    assert "916" not in out
    assert "1234567" not in redact_phones("[2026-11-28 00:51 UTC, sms] звоните +7 916 123-45-67")


def test_a_phone_written_like_a_date_with_more_digits_is_still_hidden() -> None:
    for text in ("звоните 8916-12-34-567", "тел +7 9161-23-45-67", "+7 4951-23-45-67 дом", "2016-12-31-567-89"):
        out = redact_phones(text)
        assert "[phone hidden]" in out, text
        assert not any(run in out for run in ("567", "67")), (text, out)
