"""Schemathesis against the app's own OpenAPI schema: no 5xx, every response as documented.

Bounded (a few examples per operation) so the gate stays fast; SQLite only, the fuzzing is about
the HTTP layer. A coordinator token is sent so the protected routes are exercised too.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from pydantic import SecretStr
from schemathesis.checks import (
    content_type_conformance,
    ignored_auth,
    missing_required_header,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
    unsupported_method,
)

from aidmatch import migrate
from aidmatch.auth import service as auth_service
from aidmatch.config import Settings
from aidmatch.database import make_engine, make_sessionmaker
from aidmatch.enums import Role
from aidmatch.main import create_app
from geo.geocoding import GazetteerGeocoder


@pytest.fixture(scope="module")
def fuzz_app(tmp_path_factory: pytest.TempPathFactory, gazetteer: GazetteerGeocoder) -> tuple[object, str]:
    url = f"sqlite:///{Path(tmp_path_factory.mktemp('fuzz')) / 'fuzz.db'}"
    migrate.upgrade(url)
    engine = make_engine(url)
    with make_sessionmaker(engine)() as session:
        _, token = auth_service.create(session=session, name="fuzz", role=Role.coordinator)
        session.commit()
    engine.dispose()
    settings_ = Settings(
        database_url=url,
        public_url="http://testserver",
        scheduler_enabled=False,
        public_post_burst=1_000_000,
        twilio_auth_token=SecretStr("fuzz-token"),
        _env_file=None,
    )
    return create_app(settings_, geocoder=gazetteer), token


@pytest.fixture(scope="module")
def api_schema(fuzz_app: tuple[object, str]) -> object:
    app, _ = fuzz_app
    return schemathesis.openapi.from_asgi("/openapi.json", app)


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
@settings(max_examples=8, deadline=None, suppress_health_check=list(HealthCheck))
def test_the_api_never_fails_and_answers_as_documented(case: Any, fuzz_app: tuple[object, str]) -> None:
    _, token = fuzz_app
    # Checked: no 5xx; status codes, content types, bodies and headers as documented; auth; Allow
    # on 405. Not checked: that every schema-valid request is accepted (a bbox of four numbers in
    # range, a need code that exists: the schema cannot say so; those get 422/404) nor that every
    # schema-violating one is refused (unknown query parameters are ignored, as HTTP APIs do).
    case.call_and_validate(
        headers={"Authorization": f"Bearer {token}"},
        checks=[
            not_a_server_error,
            status_code_conformance,
            content_type_conformance,
            response_schema_conformance,
            response_headers_conformance,
            ignored_auth,
            missing_required_header,
            unsupported_method,
        ],
    )
