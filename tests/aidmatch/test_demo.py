"""The demo scenario: realistic, deterministic, seeded into the database."""

from __future__ import annotations

import numpy as np
import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from aidmatch.categories import Category
from aidmatch.config import Settings
from aidmatch.demo import scenario as sc
from aidmatch.demo import service as demo_service
from aidmatch.enums import Urgency
from aidmatch.helpers.models import Helper
from aidmatch.needs.models import Need
from aidmatch.offers.models import Offer, OfferCategory
from geo.sphere import haversine_km
from notifications.phones import normalize_phone


@pytest.fixture(scope="module")
def scenario() -> sc.Scenario:
    return sc.generate(3000, 800, seed=7)


def test_same_seed_same_scenario_other_seed_other(scenario: sc.Scenario) -> None:
    again = sc.generate(3000, 800, seed=7)
    for field in (
        "need_lat",
        "need_lon",
        "need_category",
        "need_quantity",
        "need_urgency",
        "offer_category_mask",
        "offer_capacity",
        "offer_radius_km",
    ):
        np.testing.assert_array_equal(getattr(scenario, field), getattr(again, field), err_msg=field)
    other = sc.generate(3000, 800, seed=8)
    assert not np.array_equal(scenario.need_lat, other.need_lat)


def test_needs_cluster_around_the_2010_fire_hot_spots(scenario: sc.Scenario) -> None:
    spots_lat = np.array([s[1] for s in sc.HOT_SPOTS])
    spots_lon = np.array([s[2] for s in sc.HOT_SPOTS])
    d = haversine_km(scenario.need_lat[:, None], scenario.need_lon[:, None], spots_lat, spots_lon).min(axis=1)
    assert d.max() < 75.0  # settlements within 60 km, scattered a few km
    assert np.median(d) < 30.0
    regions = {scenario.places.admin1[i] for i in scenario.need_place}
    assert regions <= set(sc.FIRE_REGIONS)
    assert len(regions) >= 3
    # Needs come from many real settlements, not a handful of points.
    assert len(set(scenario.need_place.tolist())) > 100


def test_category_and_urgency_mix_is_plausible(scenario: sc.Scenario) -> None:
    counts = np.bincount(scenario.need_category, minlength=len(sc.CATEGORIES)) / scenario.n_needs
    water = sc.CATEGORIES.index(Category.water)
    assert 0.12 < counts[water] < 0.22
    urgency = np.bincount(scenario.need_urgency, minlength=3) / scenario.n_needs
    assert 0.03 < urgency[0] < 0.15  # critical is rare
    assert urgency[2] > 0.5  # most needs are normal
    evac = scenario.need_category == sc.CATEGORIES.index(Category.evacuation)
    assert (scenario.need_urgency[evac] == 0).mean() > urgency[0]  # evacuation is critical more often
    assert scenario.need_quantity.min() >= 1


def test_helpers_live_in_cities_with_sane_radii_and_capacity(scenario: sc.Scenario) -> None:
    assert {scenario.places.admin1[i] for i in scenario.offer_place} <= set(sc.HELPER_REGIONS)
    assert (scenario.places.population[scenario.offer_place] >= 20_000).all()
    assert scenario.offer_radius_km.min() >= 5
    assert scenario.offer_radius_km.max() <= 300
    assert scenario.offer_capacity.min() >= 1
    assert scenario.offer_capacity.max() <= 20
    assert (scenario.offer_category_mask > 0).all()
    assert (scenario.offer_category_mask < (1 << len(sc.CATEGORIES))).all()


def test_russian_names_come_from_geonames(scenario: sc.Scenario) -> None:
    names = {scenario.places.name_ru[i] for i in scenario.need_place}
    assert any(n in names for n in ("Шатура", "Выкса", "Гусь-Хрустальный", "Спас-Клепики"))
    cyrillic = sum(1 for n in names if any("а" <= c.lower() <= "я" for c in n))
    assert cyrillic / len(names) > 0.95


def test_seed_writes_consistent_rows(database_url: str, db: Session, settings: Settings) -> None:
    small = sc.generate(300, 90, seed=3)
    assert demo_service.database_is_empty(db)
    report = demo_service.seed(session=db, scenario=small, settings=settings, seed=3)
    db.commit()
    assert (report.needs, report.helpers, report.offers) == (300, 90, 90)
    assert not demo_service.database_is_empty(db)
    assert db.scalar(select(func.count(func.distinct(Need.code)))) == 300
    phones = list(db.scalars(select(Helper.phone))) + list(db.scalars(select(Need.contact_phone)))
    assert all(normalize_phone(p) == p for p in phones)  # valid E.164
    assert len(set(phones)) == len(phones)
    critical = db.scalar(select(func.count()).select_from(Need).where(Need.urgency == Urgency.critical))
    assert critical == int((small.need_urgency == 0).sum())
    # Every offer has exactly the categories of its mask.
    offer_ids = list(db.scalars(select(Offer.id).order_by(Offer.id)))
    for i, offer_id in enumerate(offer_ids[:20]):
        cats = sorted(db.scalars(select(OfferCategory.category).where(OfferCategory.offer_id == offer_id)))
        assert cats == sorted(small.offer_categories(i))
