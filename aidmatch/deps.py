"""Typed dependencies shared by the routers: settings, session, caller, geocoder."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from aidmatch.audit.service import act_as
from aidmatch.auth import service as auth_service
from aidmatch.auth.service import Principal
from aidmatch.config import Settings
from aidmatch.database import SessionDep
from aidmatch.errors import AuthenticationError, ForbiddenError
from aidmatch.matches.live import LiveOfferIndex
from aidmatch.matches.live_needs import LiveNeeds
from geo.geocoding import Geocoder, GeocodeResult


# Dependencies that only read app.state are ``async def``: FastAPI runs a plain ``def``
# dependency in the thread pool, a hand-off to a thread and back for every request.
async def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


SettingsDep = Annotated[Settings, Depends(get_settings)]

_bearer = HTTPBearer(auto_error=False, description="a token from `aidmatch token create`")


def get_principal(
    session: SessionDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal | None:
    """The caller behind the bearer token; None when anonymous; 401 for a bad token."""
    if credentials is None:
        return None
    principal = auth_service.authenticate(session=session, plaintext=credentials.credentials)
    if principal is None:
        raise AuthenticationError("the bearer token is unknown or revoked")
    act_as(session, f"{principal.role.value}:{principal.name}")
    return principal


OptionalPrincipal = Annotated[Principal | None, Depends(get_principal)]


def require_token(principal: OptionalPrincipal) -> Principal:
    if principal is None:
        raise AuthenticationError("this route needs a bearer token (aidmatch token create)")
    return principal


def require_coordinator(principal: OptionalPrincipal) -> Principal:
    principal = require_token(principal)
    if not principal.is_coordinator:
        raise ForbiddenError("this route is for coordinators only")
    return principal


TokenHolder = Annotated[Principal, Depends(require_token)]
Coordinator = Annotated[Principal, Depends(require_coordinator)]


class _LazyGeocoder:
    """The app's geocoder, built (the gazetteer loads for seconds after start-up) only when a
    request really geocodes: an offer or need posted with coordinates does not wait for it."""

    def __init__(self, factory: Callable[[], Geocoder]) -> None:
        self._factory = factory

    def geocode(self, query: str, *, region_hint: str | None = None) -> GeocodeResult:
        return self._factory().geocode(query, region_hint=region_hint)

    def __getattr__(self, name: str) -> Any:  # find_in_text and the like, where the geocoder has them
        return getattr(self._factory(), name)


def get_geocoder(request: Request) -> Geocoder:
    return _LazyGeocoder(request.app.state.geocoder)


GeocoderDep = Annotated[Geocoder, Depends(get_geocoder)]


async def get_live_index(request: Request) -> LiveOfferIndex:
    live: LiveOfferIndex = request.app.state.live_index
    return live


LiveIndexDep = Annotated[LiveOfferIndex, Depends(get_live_index)]


def get_live_needs(request: Request) -> LiveNeeds:
    needs: LiveNeeds = request.app.state.live_needs
    return needs


LiveNeedsDep = Annotated[LiveNeeds, Depends(get_live_needs)]


# For routes open to anyone that show more to a token holder: the token is optional in OpenAPI.
OPTIONAL_BEARER: dict[str, object] = {"security": [{}, {"HTTPBearer": []}]}
