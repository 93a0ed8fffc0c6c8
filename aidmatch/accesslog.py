"""uvicorn's access log without the helpers' private links.

A helper's task page lives at ``/tasks/<secret>``: the secret is the helper's key (stored only as a
hash). uvicorn's access log would write it in clear with every visit, so ``aidmatch serve`` leaves
that log off unless asked (``--access-log``), and when it is on this filter puts ``…`` in place of
the secret.
"""

from __future__ import annotations

import logging
import re

_SECRET_IN_PATH = re.compile(r"(/tasks/)[^/?#\s]+")
ACCESS_LOGGER = "uvicorn.access"


def redact(path: str) -> str:
    """``path`` with the secret of a helper's task link (``/tasks/<secret>``) left out."""
    return _SECRET_IN_PATH.sub(r"\1…", path)


class RedactTaskLinks(logging.Filter):
    """Replaces the secret of ``/tasks/<secret>`` in an access-log record's arguments."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple) and any(isinstance(a, str) and "/tasks/" in a for a in record.args):
            record.args = tuple(_SECRET_IN_PATH.sub(r"\1…", a) if isinstance(a, str) else a for a in record.args)
        elif isinstance(record.msg, str) and "/tasks/" in record.msg:
            record.msg = _SECRET_IN_PATH.sub(r"\1…", record.msg)
        return True


def install() -> None:
    """Add the filter to uvicorn's access logger (once per process)."""
    logger = logging.getLogger(ACCESS_LOGGER)
    if not any(isinstance(f, RedactTaskLinks) for f in logger.filters):
        logger.addFilter(RedactTaskLinks())
