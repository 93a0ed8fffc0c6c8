"""App-tier fixtures: settings, the app, a client, tokens, sessions."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr
from sqlalchemy.orm import Session, sessionmaker

from aidmatch.auth import service as auth_service
from aidmatch.config import Settings
from aidmatch.database import make_engine, make_sessionmaker
from aidmatch.enums import Role
from aidmatch.main import create_app
from geo.geocoding import GazetteerGeocoder, load_places


@pytest.fixture(scope="session")
def gazetteer() -> GazetteerGeocoder:
    return GazetteerGeocoder(load_places("RU"))


@pytest.fixture
def settings(database_url: str) -> Settings:
    # Limits far above what tests post; tests of the limits set their own.
    return Settings(
        database_url=database_url,
        public_url="http://testserver",
        scheduler_enabled=False,
        public_post_burst=100_000,
        sms_per_phone_burst=100_000,
        _env_file=None,
    )


@pytest.fixture
def client(settings: Settings, gazetteer: GazetteerGeocoder) -> Iterator[TestClient]:
    with TestClient(create_app(settings, geocoder=gazetteer), raise_server_exceptions=False) as c:
        yield c


@pytest.fixture
def db(settings: Settings) -> Iterator[Session]:
    """A session on the same database, to look behind the API."""
    engine = make_engine(settings.database_url)
    with make_sessionmaker(engine)() as session:
        yield session
    engine.dispose()


def _token(settings: Settings, role: Role) -> str:
    engine = make_engine(settings.database_url)
    try:
        with make_sessionmaker(engine)() as session:
            _, plaintext = auth_service.create(session=session, name=f"test {role.value}", role=role)
            session.commit()
    finally:
        engine.dispose()
    return plaintext


@pytest.fixture
def coordinator_headers(settings: Settings) -> dict[str, str]:
    return {"Authorization": f"Bearer {_token(settings, Role.coordinator)}"}


@pytest.fixture
def volunteer_headers(settings: Settings) -> dict[str, str]:
    return {"Authorization": f"Bearer {_token(settings, Role.volunteer)}"}


@pytest.fixture
def sessions(settings: Settings) -> Iterator[sessionmaker[Session]]:
    """A sessionmaker of its own (as a second worker, or a drain beside the app, would have)."""
    engine = make_engine(settings.database_url)
    yield make_sessionmaker(engine)
    engine.dispose()


# The Twilio account the SMS tests sign their webhooks with, and the address Twilio calls.
TOKEN = "test-auth-token"
PUBLIC = "https://aid.example.org"


@pytest.fixture
def sms_settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"twilio_auth_token": SecretStr(TOKEN), "public_url": PUBLIC})


@pytest.fixture
def sms(sms_settings: Settings, gazetteer: GazetteerGeocoder) -> Iterator[TestClient]:
    with TestClient(create_app(sms_settings, geocoder=gazetteer), raise_server_exceptions=False) as c:
        yield c
