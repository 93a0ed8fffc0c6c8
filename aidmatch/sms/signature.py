"""Checking ``X-Twilio-Signature`` with the ``twilio`` package's ``RequestValidator``.

Twilio signs the URL it called. Behind a reverse proxy the service sees another URL, so the URL
checked is ``AIDMATCH_PUBLIC_URL`` + the request's path and query string, not the request's own.
"""

from __future__ import annotations

from collections.abc import Sequence

from twilio.request_validator import RequestValidator, get_signature_algorithm


def public_request_url(public_url: str, path: str, query: str) -> str:
    """The URL Twilio called: the configured public base, this path, this query string."""
    return public_url.rstrip("/") + path + (f"?{query}" if query else "")


def valid_signature(
    *,
    auth_token: str,
    url: str,
    params: Sequence[tuple[str, str]] | str,
    signature: str | None,
    settings_header: str | None = None,
) -> bool:
    """Whether ``signature`` signs the URL and the form parameters (or the raw JSON body when the
    URL carries ``bodySHA256``). Repeated form keys are kept, as Twilio signs them; the algorithm
    comes from ``X-Twilio-Webhooks-Signature-Settings`` (HMAC-SHA1 when absent)."""
    if not signature or not auth_token:
        return False
    validator = RequestValidator(auth_token)
    algorithm = get_signature_algorithm(settings_header)
    if isinstance(params, str):
        return bool(validator.validate(url, params, signature, algorithm))
    multi: dict[str, list[str]] = {}
    for name, value in params:
        multi.setdefault(name, []).append(value)
    return bool(validator.validate(url, _MultiDict(multi), signature, algorithm))


class _MultiDict(dict[str, list[str]]):
    """What RequestValidator expects from a multi-valued form: ``getall(name)``."""

    def getall(self, name: str) -> list[str]:
        return self[name]
