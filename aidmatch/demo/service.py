"""Seed a generated scenario into the database as needs, helpers and offers."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import numpy as np
from sqlalchemy import func, insert, select
from sqlalchemy.orm import Session

from aidmatch.auth.service import hash_secret
from aidmatch.categories import Category
from aidmatch.config import Settings
from aidmatch.database import utcnow
from aidmatch.demo.scenario import CATEGORIES, URGENCIES, Scenario
from aidmatch.enums import Language, NeedStatus, OfferStatus, Source
from aidmatch.helpers.models import Helper
from aidmatch.helpers.service import new_link_secret
from aidmatch.needs.models import Need
from aidmatch.needs.service import CODE_ALPHABET, CODE_LENGTH
from aidmatch.offers.models import Offer, OfferCategory
from notifications.errors import InvalidPhoneError
from notifications.phones import normalize_phone

_CHUNK = 5000

_FIRST_NAMES = (
    "Анна",
    "Мария",
    "Елена",
    "Ольга",
    "Наталья",
    "Татьяна",
    "Ирина",
    "Светлана",
    "Галина",
    "Нина",
    "Александр",
    "Сергей",
    "Владимир",
    "Андрей",
    "Алексей",
    "Николай",
    "Иван",
    "Дмитрий",
    "Михаил",
    "Пётр",
)
_LAST_INITIALS = "АБВГДЕЖЗИКЛМНОПРСТФШ"
_OPERATOR_CODES = ("903", "905", "906", "909", "915", "916", "917", "926", "930", "960", "962", "963", "965", "985")
_DESCRIPTIONS: dict[Category, tuple[str, ...]] = {
    Category.water: ("Нет питьевой воды, {q} семей", "Колодец пересох, нужна вода", "Нужна вода, в доме пожилые"),
    Category.food: ("Нужны продукты на {q} человек", "Дом сгорел, нечего есть", "Нужна еда для детей"),
    Category.shelter: ("Дом сгорел, нужен ночлег на {q} человек", "Нужно временное жильё"),
    Category.medical: ("Ожог руки, нужен врач", "Пожилому человеку плохо от дыма", "Нужна помощь медика"),
    Category.medicine: ("Нужны лекарства от давления", "Нужны маски-респираторы и капли для глаз"),
    Category.evacuation: ("Огонь рядом, нужно вывезти {q} человек", "Лежачий больной, не можем выехать сами"),
    Category.transport: ("Нужна машина довезти вещи", "Нужно отвезти воду в соседнюю деревню"),
    Category.firefighting: (
        "Огонь в 2 км от деревни, нужны лопаты и ранцевые огнетушители",
        "Нужна мотопомпа и рукава",
        "Торф горит у огородов, нужны люди с лопатами",
    ),
    Category.clothing: ("Нужна одежда для {q} человек", "Нужна детская одежда"),
    Category.hygiene: ("Нужны средства гигиены", "Нужны подгузники и влажные салфетки"),
    Category.labour: ("Нужны люди копать противопожарную полосу", "Нужна помощь разобрать завалы"),
    Category.animals: ("Нужен корм для скота", "Нужно вывезти собак и кошек"),
    Category.power: ("Нет света, нужен генератор", "Нужен генератор для насоса"),
    Category.other: ("Нужна помощь, позвоните",),
}


@dataclass(frozen=True, slots=True)
class SeedReport:
    needs: int
    helpers: int
    offers: int


def _valid(phone: str) -> bool:
    try:
        return normalize_phone(phone) == phone
    except InvalidPhoneError:
        return False


def _phones(rng: np.random.Generator, n: int, taken: set[str]) -> list[str]:
    out: list[str] = []
    while len(out) < n:
        phone = f"+7{rng.choice(_OPERATOR_CODES)}{int(rng.integers(0, 10_000_000)):07d}"
        if phone not in taken and _valid(phone):
            taken.add(phone)
            out.append(phone)
    return out


def _codes(rng: np.random.Generator, n: int, taken: set[str]) -> list[str]:
    alphabet = np.array(list(CODE_ALPHABET))
    out: list[str] = []
    while len(out) < n:
        for row in rng.integers(0, len(alphabet), size=(n - len(out), CODE_LENGTH)):
            code = "".join(alphabet[row])
            if code not in taken:
                taken.add(code)
                out.append(code)
    return out


def _insert_returning_ids(session: Session, model: type[Helper] | type[Offer], rows: list[dict[str, Any]]) -> list[int]:
    """Bulk insert returning the new ids in row order, in chunks: SQLAlchemy stitches the
    RETURNING rows of one huge executemany together in time quadratic in the row count."""
    ids: list[int] = []
    for start in range(0, len(rows), _CHUNK):
        chunk = rows[start : start + _CHUNK]
        ids.extend(session.scalars(insert(model).returning(model.id, sort_by_parameter_order=True), chunk))
    return ids


def database_is_empty(session: Session) -> bool:
    return not (
        session.scalar(select(func.count()).select_from(Need))
        or session.scalar(select(func.count()).select_from(Offer))
    )


def seed(*, session: Session, scenario: Scenario, settings: Settings, seed: int = 2010) -> SeedReport:
    """Insert the scenario's needs, helpers and offers (flushes; the caller commits)."""
    rng = np.random.default_rng(seed + 1)
    now = utcnow()
    places = scenario.places
    taken_codes = set(session.scalars(select(Need.code)))
    taken_phones = set(session.scalars(select(Helper.phone)))
    codes = _codes(rng, scenario.n_needs, taken_codes)
    need_phones = _phones(rng, scenario.n_needs, set(taken_phones))
    need_rows = []
    for i in range(scenario.n_needs):
        category = CATEGORIES[int(scenario.need_category[i])]
        quantity = int(scenario.need_quantity[i])
        created = now - timedelta(hours=float(scenario.need_age_h[i]))
        template = _DESCRIPTIONS[category][int(rng.integers(0, len(_DESCRIPTIONS[category])))]
        need_rows.append(
            {
                "code": codes[i],
                "category": category,
                "quantity": quantity,
                "quantity_assigned": 0,
                "urgency": URGENCIES[int(scenario.need_urgency[i])],
                "lat": round(float(scenario.need_lat[i]), 6),
                "lon": round(float(scenario.need_lon[i]), 6),
                "address": places.name_ru[int(scenario.need_place[i])],
                "location_accuracy_m": 50.0,
                "description": template.format(q=quantity),
                "contact_name": f"{_FIRST_NAMES[int(rng.integers(0, len(_FIRST_NAMES)))]} "
                f"{_LAST_INITIALS[int(rng.integers(0, len(_LAST_INITIALS)))]}.",
                "contact_phone": need_phones[i],
                "language": Language.ru,
                "source": Source.sms if rng.random() < 0.4 else Source.web,
                "status": NeedStatus.open,
                "created_at": created,
                "updated_at": now,  # written now: workers already running pick it up
                "expires_at": created + timedelta(hours=settings.need_expiry_hours),
            }
        )
    if need_rows:
        session.execute(insert(Need), need_rows)

    helper_phones = _phones(rng, scenario.n_offers, taken_phones | set(need_phones))
    helper_rows = []
    for i in range(scenario.n_offers):
        org = bool(scenario.offer_is_organisation[i])
        city = places.name_ru[int(scenario.offer_place[i])]
        name = (
            f"Добровольцы {city}"
            if org
            else f"{_FIRST_NAMES[int(rng.integers(0, len(_FIRST_NAMES)))]} {_LAST_INITIALS[int(rng.integers(0, 20))]}."
        )
        helper_rows.append(
            {
                "name": name,
                "phone": helper_phones[i],
                "language": Language.ru,
                "is_organisation": org,
                "sms_consent": True,
                "max_active_tasks": int(scenario.offer_capacity[i]) + 2,
                "link_hash": hash_secret(new_link_secret()),
                "created_at": now,
                "updated_at": now,
            }
        )
    # RETURNING keeps the ids in insert order on both SQLite and PostgreSQL.
    helper_ids = _insert_returning_ids(session, Helper, helper_rows)
    offer_rows = []
    for i in range(scenario.n_offers):
        hours = float(scenario.offer_available_h[i])
        offer_rows.append(
            {
                "helper_id": helper_ids[i],
                "capacity": int(scenario.offer_capacity[i]),
                "capacity_used": 0,
                "lat": round(float(scenario.offer_lat[i]), 6),
                "lon": round(float(scenario.offer_lon[i]), 6),
                "address": places.name_ru[int(scenario.offer_place[i])],
                "radius_km": float(scenario.offer_radius_km[i]),
                "available_until": now + timedelta(hours=hours) if np.isfinite(hours) else None,
                "status": OfferStatus.active,
                "created_at": now,
                "updated_at": now,
            }
        )
    offer_ids: list[int] = []
    if offer_rows:
        offer_ids = _insert_returning_ids(session, Offer, offer_rows)
    category_rows = [
        {"offer_id": offer_ids[i], "category": c}
        for i in range(scenario.n_offers)
        for c in scenario.offer_categories(i)
    ]
    if category_rows:
        session.execute(insert(OfferCategory), category_rows)
    session.flush()
    return SeedReport(needs=scenario.n_needs, helpers=len(helper_ids), offers=len(offer_ids))
