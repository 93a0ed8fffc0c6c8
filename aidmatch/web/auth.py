"""Coordinators in the browser: a bearer token header, or a signed session cookie set by /login.

The cookie holds only the token's row id, signed with ``AIDMATCH_SECRET_KEY`` and stamped with
when it was signed; every request re-checks that the token is still live and that no logout came
after that stamp, so revoking a token, or logging out, ends its browser sessions on the server too
(a logout ends all of the token's sessions: the server keeps no list of them).
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Annotated

from fastapi import Depends, Request
from itsdangerous import BadSignature, URLSafeTimedSerializer
from sqlalchemy.orm import Session

from aidmatch.audit.service import act_as
from aidmatch.auth import service as auth_service
from aidmatch.auth.models import ApiToken
from aidmatch.auth.service import Principal
from aidmatch.database import SessionDep, utcnow
from aidmatch.errors import AuthenticationError, ForbiddenError

SESSION_COOKIE = "aidmatch_session"
SESSION_MAX_AGE_S = 12 * 3600


def _serializer(request: Request) -> URLSafeTimedSerializer:
    secret: str = request.app.state.web_secret
    return URLSafeTimedSerializer(secret, salt="aidmatch-coordinator-session")


def session_cookie_value(request: Request, principal: Principal) -> str:
    # "at": when it was signed, to the microsecond (the serializer's own stamp counts whole seconds,
    # which would keep a session signed in the second of a logout, before it, alive).
    return _serializer(request).dumps({"tid": principal.token_id, "at": utcnow().timestamp()})


def _from_cookie(request: Request, session: Session) -> Principal | None:
    raw = request.cookies.get(SESSION_COOKIE)
    if not raw:
        return None
    try:
        data, signed = _serializer(request).loads(raw, max_age=SESSION_MAX_AGE_S, return_timestamp=True)
    except BadSignature:
        return None
    token_id = data.get("tid") if isinstance(data, dict) else None
    token = session.get(ApiToken, token_id) if isinstance(token_id, int) else None
    if token is None or token.revoked_at is not None:
        return None
    if token.sessions_valid_after is not None:
        at = data.get("at")
        # A cookie from before "at" was written: only its whole-second stamp; one of the logout's
        # second is taken as signed before it.
        signed_at = float(at) if isinstance(at, int | float) else float(int(signed.timestamp()))
        if signed_at <= token.sessions_valid_after.timestamp():
            return None
    return Principal(token_id=token.id, name=token.name, role=token.role)


def log_out(request: Request, session: Session) -> None:
    """End every browser session of the cookie's token (nothing without a valid cookie)."""
    principal = _from_cookie(request, session)
    if principal is None:
        return
    token = session.get(ApiToken, principal.token_id)
    if token is not None:
        token.sessions_valid_after = utcnow()
        session.commit()


def _from_header(request: Request, session: Session) -> Principal | None:
    scheme, _, credentials = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not credentials.strip():
        return None
    return auth_service.authenticate(session=session, plaintext=credentials.strip())


def web_principal(request: Request, session: SessionDep) -> Principal | None:
    """The caller from the Authorization header, else from the session cookie; None if neither works."""
    principal = _from_header(request, session) or _from_cookie(request, session)
    if principal is not None:
        act_as(session, f"{principal.role.value}:{principal.name}")
    return principal


WebPrincipal = Annotated[Principal | None, Depends(web_principal)]


def require_web_coordinator(principal: WebPrincipal) -> Principal:
    """For JSON/CSV routes: 401 without a valid token or session, 403 for volunteers."""
    if principal is None:
        raise AuthenticationError("this route needs a coordinator bearer token or a coordinator session")
    if not principal.is_coordinator:
        raise ForbiddenError("this route is for coordinators only")
    return principal


WebCoordinator = Annotated[Principal, Depends(require_web_coordinator)]


def csrf_token(request: Request, principal: Principal) -> str:
    """Ties the dashboard's forms to the signed-in token, so another site cannot post them."""
    secret: str = request.app.state.web_secret
    return hmac.new(secret.encode(), f"csrf:{principal.token_id}".encode(), hashlib.sha256).hexdigest()[:32]


def csrf_ok(request: Request, principal: Principal, given: str | None) -> bool:
    return given is not None and hmac.compare_digest(csrf_token(request, principal), given)
