"""Shared helpers for the matching benchmarks: clustered instance generator, invariant checks, machine info.

Distances here are computed independently of `matching` (own unit vectors and haversine); only the
Earth radius constant is shared so that both sides agree to ~1e-12 km.
"""

from __future__ import annotations

import datetime as dt
import os
import platform
import sys
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from geo.sphere import EARTH_RADIUS_KM

N_CATEGORIES = 12
RADIUS_KM = 50.0
KM_PER_DEG = np.pi * EARTH_RADIUS_KM / 180.0
URGENCY_P = (0.15, 0.25, 0.60)  # critical, urgent, normal
URGENCY_W = np.array([4.0, 2.0, 1.0])
PENALTY_KM = 1000.0
LAYOUTS = {
    "dense": "one disaster region: 30 need clusters (sigma 5-15 km) with centres in a 75 km disc, "
    "offers around 5 cities (sigma 10-25 km) in a 100 km disc",
    "spread": "300 clusters (sigma 5-20 km) over lat 36-60, lon -10..40; needs and offers share the "
    "clusters with independent Pareto weights",
    "region": "40 clusters (sigma 5-20 km) in lat 54-57, lon 37-45 (the knn.py geography); needs and "
    "offers share clusters and weights",
    "demo": "the service's demo wildfire scenario (aidmatch.demo.scenario.generate(n, n, seed)): needs around "
    "the 2010 fire towns, helpers around Moscow and the region's cities, radii 5-300 km, 14 categories, "
    "quantities 1-20, capacities 1-20 (the other settings printed do not apply)",
}


def _around(rng: np.random.Generator, c_lat: np.ndarray, c_lon: np.ndarray, sig_km: np.ndarray, w: np.ndarray, m: int):
    c = rng.choice(len(c_lat), size=m, p=w / w.sum())
    lat = c_lat[c] + rng.normal(0.0, 1.0, m) * sig_km[c] / KM_PER_DEG
    lon = c_lon[c] + rng.normal(0.0, 1.0, m) * sig_km[c] / (KM_PER_DEG * np.cos(np.radians(c_lat[c])))
    return np.clip(lat, -89.9, 89.9), (lon + 180.0) % 360.0 - 180.0


def _disc(rng: np.random.Generator, lat0: float, lon0: float, r_km: float, k: int):
    r = r_km * np.sqrt(rng.uniform(0.0, 1.0, k))
    a = rng.uniform(0.0, 2 * np.pi, k)
    return lat0 + r * np.sin(a) / KM_PER_DEG, lon0 + r * np.cos(a) / (KM_PER_DEG * np.cos(np.radians(lat0)))


def make_instance(layout: str, n: int, seed: int) -> dict[str, np.ndarray]:
    """n needs and n offers; quantity and capacity 1-3, 12 categories, offer radius 50 km, max_km inf."""
    if layout == "demo":
        return _demo_instance(n, seed)
    rng = np.random.default_rng(seed)
    if layout == "dense":
        k_need, k_city = 30, 5
        n_lat, n_lon = _disc(rng, 49.0, 36.0, 75.0, k_need)
        o_lat, o_lon = _disc(rng, 49.0, 36.0, 100.0, k_city)
        need_lat, need_lon = _around(rng, n_lat, n_lon, rng.uniform(5, 15, k_need), rng.pareto(1.5, k_need) + 1, n)
        offer_lat, offer_lon = _around(rng, o_lat, o_lon, rng.uniform(10, 25, k_city), rng.pareto(1.5, k_city) + 1, n)
    elif layout in ("spread", "region"):
        k = 300 if layout == "spread" else 40
        lat_rng, lon_rng = ((36.0, 60.0), (-10.0, 40.0)) if layout == "spread" else ((54.0, 57.0), (37.0, 45.0))
        c_lat, c_lon = rng.uniform(*lat_rng, k), rng.uniform(*lon_rng, k)
        sig = rng.uniform(5.0, 20.0, k)
        w_need = rng.pareto(1.5, k) + 1.0
        w_offer = rng.pareto(1.5, k) + 1.0 if layout == "spread" else w_need
        need_lat, need_lon = _around(rng, c_lat, c_lon, sig, w_need, n)
        offer_lat, offer_lon = _around(rng, c_lat, c_lon, sig, w_offer, n)
    else:
        raise ValueError(f"unknown layout {layout!r}; choose from {sorted(LAYOUTS)}")
    cat_p = 1.0 / np.arange(1, N_CATEGORIES + 1) ** 0.5  # some categories are more common
    cat_p /= cat_p.sum()
    n_cats = rng.integers(1, 4, size=n)
    mask = np.zeros(n, dtype=np.int64)
    for j in range(3):  # 1-3 picks per offer; duplicate picks collapse
        picked = rng.choice(N_CATEGORIES, size=n, p=cat_p).astype(np.int64)
        mask |= np.where(j < n_cats, np.int64(1) << picked, 0)
    return {
        "need_lat": need_lat,
        "need_lon": need_lon,
        "need_cat": rng.choice(N_CATEGORIES, size=n, p=cat_p).astype(np.int64),
        "need_qty": rng.integers(1, 4, size=n).astype(np.int64),
        "need_urg": rng.choice(3, size=n, p=URGENCY_P).astype(np.int64),
        "need_max_km": np.full(n, np.inf),
        "offer_lat": offer_lat,
        "offer_lon": offer_lon,
        "offer_mask": mask,
        "offer_cap": rng.integers(1, 4, size=n).astype(np.int64),
        "offer_radius": np.full(n, RADIUS_KM),
    }


def _demo_instance(n: int, seed: int) -> dict[str, np.ndarray]:
    """The demo scenario as the service's batch loads it right after seeding: every need open with
    no maximum distance, every offer active and available (benchmarks/service.py, without a database)."""
    from aidmatch.demo.scenario import generate

    s = generate(n, n, seed=seed)
    return {
        "need_lat": s.need_lat,
        "need_lon": s.need_lon,
        "need_cat": s.need_category,
        "need_qty": s.need_quantity,
        "need_urg": s.need_urgency,
        "need_max_km": np.full(n, np.inf),
        "offer_lat": s.offer_lat,
        "offer_lon": s.offer_lon,
        "offer_mask": s.offer_category_mask,
        "offer_cap": s.offer_capacity,
        "offer_radius": s.offer_radius_km.astype(np.float64),
    }


def to_matching(d: dict[str, np.ndarray]):
    """The instance as matching.Needs, matching.Offers (public API only)."""
    import matching

    needs = matching.Needs(d["need_lat"], d["need_lon"], d["need_cat"], d["need_qty"], d["need_urg"], d["need_max_km"])
    offers = matching.Offers(d["offer_lat"], d["offer_lon"], d["offer_mask"], d["offer_cap"], d["offer_radius"])
    return needs, offers


def xyz(lat_deg: np.ndarray, lon_deg: np.ndarray) -> np.ndarray:
    la, lo = np.radians(lat_deg), np.radians(lon_deg)
    return np.column_stack([np.cos(la) * np.cos(lo), np.cos(la) * np.sin(lo), np.sin(la)])


def haversine_km(lat1: np.ndarray, lon1: np.ndarray, lat2: np.ndarray, lon2: np.ndarray) -> np.ndarray:
    la1, lo1, la2, lo2 = (np.radians(a) for a in (lat1, lon1, lat2, lon2))
    s = np.sin((la2 - la1) * 0.5) ** 2 + np.cos(la1) * np.cos(la2) * np.sin((lo2 - lo1) * 0.5) ** 2
    return 2.0 * EARTH_RADIUS_KM * np.arcsin(np.sqrt(np.minimum(s, 1.0)))


def penalty(d: dict[str, np.ndarray]) -> np.ndarray:
    return PENALTY_KM * URGENCY_W[d["need_urg"]]


def objective(d: dict[str, np.ndarray], qty: np.ndarray, dist_km: np.ndarray, served: np.ndarray) -> float:
    return float(np.dot(qty, dist_km)) + float(np.dot(penalty(d), d["need_qty"] - served))


def check_assignment(
    d: dict[str, np.ndarray], need: np.ndarray, offer: np.ndarray, qty: np.ndarray, tol_km: float = 1e-6
) -> list[str]:
    """Invariant violations of an assignment (rows need, offer, qty); empty when all hold."""
    n, m = len(d["need_lat"]), len(d["offer_lat"])
    bad = []
    if (qty <= 0).any():
        bad.append("non-positive row quantity")
    if ((d["offer_mask"][offer] >> d["need_cat"][need]) & 1 != 1).any():
        bad.append("offer does not serve the need's category")
    km = haversine_km(d["need_lat"][need], d["need_lon"][need], d["offer_lat"][offer], d["offer_lon"][offer])
    if (km > np.minimum(d["offer_radius"][offer], d["need_max_km"][need]) + tol_km).any():
        bad.append("row beyond a radius")
    if (np.bincount(need, weights=qty, minlength=n) > d["need_qty"]).any():
        bad.append("need over-served")
    if (np.bincount(offer, weights=qty, minlength=m) > d["offer_cap"]).any():
        bad.append("offer over capacity")
    return bad


def machine_info(*, cores_note: str = "", with_sklearn: bool = False) -> list[str]:
    """Date, CPU, cores, Python and library versions, one printable line each."""
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import scipy

    versions = f"numpy:   {np.__version__}, scipy: {scipy.__version__}"
    if with_sklearn:
        import sklearn

        versions += f", scikit-learn: {sklearn.__version__}"
    return [
        f"date:    {dt.datetime.now(dt.UTC).strftime('%Y-%m-%d %H:%M UTC')}",
        f"cpu:     {cpu}",
        f"cores:   {os.cpu_count()}" + (f" ({cores_note})" if cores_note else ""),
        f"python:  {platform.python_version()} ({platform.machine()})",
        versions,
    ]


def save_loglog(fig: Any, ax: Any, path: str, title: str) -> None:
    """Finish a time-vs-size plot (log-log, grid, legend) and write it as a PNG."""
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("needs = offers (n)")
    ax.set_ylabel("wall time, s")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    print(f"plot written to {path}")


def fmt(x: float | None, spec: str = "9.3f") -> str:
    return format(x, spec) if x is not None else format("skip", ">" + spec[: spec.index(".")] + "s")
