"""The web pages: forms for people in need and helpers, the coordinator dashboard, static files."""

from __future__ import annotations

import secrets
from pathlib import Path

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates

from aidmatch.config import Settings

WEB_DIR = Path(__file__).resolve().parent


def install(app: FastAPI, settings: Settings) -> None:
    """Mount the pages, our static files and Leaflet (from the xstatic-leaflet package, no CDN)."""
    import xstatic.pkg.leaflet

    from aidmatch.web.router import router

    app.state.web_secret = settings.secret_key.get_secret_value() or secrets.token_urlsafe(32)
    app.state.templates = Jinja2Templates(directory=WEB_DIR / "templates")
    app.mount("/static/leaflet", StaticFiles(directory=xstatic.pkg.leaflet.BASE_DIR), name="leaflet")
    app.mount("/static", StaticFiles(directory=WEB_DIR / "static"), name="static")
    app.include_router(router)
