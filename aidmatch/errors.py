"""Our exceptions and the one place that turns any error into the one HTTP error shape.

Every 4xx/5xx body is an RFC 9457 problem document::

    {"type": "...", "title": "...", "status": 422, "detail": "...", "errors": [...]}

``errors`` is always present (empty when there is nothing per-field to say).
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy.exc import DataError
from starlette.exceptions import HTTPException as StarletteHTTPException

from aidmatch.accesslog import redact
from aidmatch.headers import SECURITY_HEADERS

logger = logging.getLogger(__name__)

PROBLEM_JSON = "application/problem+json"


class AidmatchError(Exception):
    """Base of every error the service raises on purpose."""

    status_code = 400
    type_ = "bad-request"
    title = "Bad request"


class InvalidInputError(AidmatchError, ValueError):
    status_code = 422
    type_ = "invalid-input"
    title = "Invalid input"

    def __init__(self, detail: str, *, field: str | None = None) -> None:
        super().__init__(detail)
        self.field = field


class NotFoundError(AidmatchError, LookupError):
    status_code = 404
    type_ = "not-found"
    title = "Not found"


class ConflictError(AidmatchError, RuntimeError):
    status_code = 409
    type_ = "conflict"
    title = "Conflict"


class TaskLimitError(ConflictError):
    """A helper's YES beyond their cap of accepted tasks (``max_active_tasks``): the request stays
    theirs to take once they complete or give back one (a 409 like any conflict over HTTP)."""

    def __init__(self, detail: str, *, limit: int) -> None:
        super().__init__(detail)
        self.limit = limit


class AuthenticationError(AidmatchError, PermissionError):
    status_code = 401
    type_ = "unauthenticated"
    title = "Authentication required"


class ForbiddenError(AidmatchError, PermissionError):
    status_code = 403
    type_ = "forbidden"
    title = "Forbidden"


class TooManyRequestsError(AidmatchError):
    status_code = 429
    type_ = "too-many-requests"
    title = "Too many requests"

    def __init__(self, detail: str, *, retry_after_s: float | None = None) -> None:
        super().__init__(detail)
        self.retry_after_s = retry_after_s


class PayloadTooLargeError(AidmatchError):
    status_code = 413
    type_ = "payload-too-large"
    title = "Payload too large"


class Problem(BaseModel):
    """Every 4xx/5xx answer (RFC 9457 problem details); ``errors`` lists field problems."""

    type: str
    title: str
    status: int
    detail: str
    errors: list[dict[str, Any]]


def _documented(description: str) -> dict[str, Any]:
    return {"model": Problem, "description": description, "content": {PROBLEM_JSON: {}}}


# Declared for every route in the OpenAPI schema, so clients (and the fuzzer) know the error shape.
PROBLEM_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: _documented("Bad request"),
    401: _documented("A bearer token is needed (or was not recognised)"),
    403: _documented("Not allowed for this caller"),
    404: _documented("Not found"),
    409: _documented("Conflict with the current state"),
    413: _documented("Request body too large"),
    422: _documented("Invalid input"),
    429: _documented("Too many requests; see Retry-After"),
    500: _documented("Internal error"),
}


def problem(
    status: int,
    type_: str,
    title: str,
    detail: str,
    errors: list[dict[str, Any]] | None = None,
    headers: Mapping[str, str] | None = None,
) -> JSONResponse:
    body = {
        "type": f"/errors/{type_}",
        "title": title,
        "status": status,
        "detail": detail,
        "errors": errors or [],
    }
    headers = dict(headers or {})
    if status == 401:
        headers["WWW-Authenticate"] = "Bearer"
    return JSONResponse(body, status_code=status, media_type=PROBLEM_JSON, headers=headers or None)


def _field_errors(exc: RequestValidationError) -> list[dict[str, Any]]:
    out = []
    for err in exc.errors():
        loc = [str(part) for part in err.get("loc", ()) if part not in ("body", "query", "path")]
        # Never echo the input back: it may be a megabyte of text or someone's phone number.
        out.append({"field": ".".join(loc) or None, "message": str(err.get("msg", "invalid")), "type": err.get("type")})
    return out


def _allowed_methods(request: Request) -> list[str]:
    """Every method the OpenAPI schema documents for the request's path."""
    app = request.app
    patterns: list[tuple[re.Pattern[str], list[str]]] | None = getattr(app.state, "allowed_methods", None)
    if patterns is None:
        patterns = [
            (re.compile("^" + re.sub(r"\\{[^/]+?\\}", "[^/]+", re.escape(path)) + "$"), [m.upper() for m in ops])
            for path, ops in app.openapi().get("paths", {}).items()
        ]
        app.state.allowed_methods = patterns
    path = request.url.path
    return sorted({m for pattern, methods in patterns if pattern.match(path) for m in methods})


def install_error_handlers(app: FastAPI) -> None:
    """Map every exception to the one problem shape."""

    @app.exception_handler(AidmatchError)
    async def _ours(request: Request, exc: AidmatchError) -> JSONResponse:
        errors = []
        if isinstance(exc, InvalidInputError) and exc.field:
            errors.append({"field": exc.field, "message": str(exc), "type": "value_error"})
        headers = None
        if isinstance(exc, TooManyRequestsError) and exc.retry_after_s is not None:
            headers = {"Retry-After": str(max(1, math.ceil(exc.retry_after_s)))}
        return problem(exc.status_code, exc.type_, exc.title, str(exc), errors, headers)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = _field_errors(exc)
        first = errors[0] if errors else {"field": None, "message": "invalid request"}
        detail = f"{first['field']}: {first['message']}" if first["field"] else str(first["message"])
        if len(errors) > 1:
            detail += f" (and {len(errors) - 1} more)"
        return problem(422, "invalid-input", "Invalid input", detail, errors)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        titles = {401: "Authentication required", 403: "Forbidden", 404: "Not found", 405: "Method not allowed"}
        title = titles.get(exc.status_code, "Error")
        headers = dict(exc.headers or {})
        if exc.status_code == 405:
            # Starlette lists only the methods of the first route on the path; list them all.
            headers["Allow"] = ", ".join(_allowed_methods(request))
        return problem(exc.status_code, title.lower().replace(" ", "-"), title, str(exc.detail), headers=headers)

    @app.exception_handler(DataError)
    async def _unstorable(request: Request, exc: DataError) -> JSONResponse:
        # A NUL in text that got past the checks (PostgreSQL refuses it): the client's to fix, not
        # a 500. Any other value the database refuses is our bug (the checks let it through).
        if "NUL" not in str(exc.orig):
            return await _unexpected(request, exc)
        logger.warning("the database refused a NUL on %s %s", request.method, redact(request.url.path))
        return problem(422, "invalid-input", "Invalid input", "text may not contain NUL characters")

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        # Never a helper's private link in the log: a task page that fails would write it there.
        logger.exception("unhandled error on %s %s", request.method, redact(request.url.path))
        # Starlette answers this one outside every middleware: the security headers are added here.
        return problem(
            500,
            "internal",
            "Internal error",
            "an unexpected error occurred; it has been logged",
            headers={k.decode(): v.decode() for k, v in SECURITY_HEADERS},
        )
