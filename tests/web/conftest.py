"""Web-tier fixtures: the app-tier ones (settings, app client, tokens, a session) plus a few page helpers."""

from __future__ import annotations

import re
from html.parser import HTMLParser

from tests.aidmatch.conftest import (  # noqa: F401  (fixtures shared with the app tier)
    client,
    coordinator_headers,
    db,
    gazetteer,
    settings,
    volunteer_headers,
)

PHONE_RE = re.compile(r"\+?\d[\d\s()-]{8,}\d")


class _Fields(HTMLParser):
    """Form fields and the ids that some <label for> names."""

    def __init__(self) -> None:
        super().__init__()
        self.fields: list[dict[str, str | None]] = []
        self.label_for: set[str] = set()
        self._in_label = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "label":
            self._in_label += 1
            if a.get("for"):
                self.label_for.add(str(a["for"]))
        elif tag in ("input", "select", "textarea") and a.get("type") not in ("hidden", "submit", "button"):
            self.fields.append({**a, "wrapped": "1" if self._in_label else None})

    def handle_endtag(self, tag: str) -> None:
        if tag == "label":
            self._in_label -= 1


def unlabelled_fields(html: str) -> list[str]:
    """Names of visible form fields with neither a <label for>, a wrapping <label> nor an aria-label."""
    parser = _Fields()
    parser.feed(html)
    return [
        str(f.get("name") or f.get("id"))
        for f in parser.fields
        if not f["wrapped"] and f.get("id") not in parser.label_for and not f.get("aria-label")
    ]
