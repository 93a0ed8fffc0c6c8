"""Quality of the offline gazetteer geocoder on the 1,117 Russian towns of HFLabs' city.csv.

Every town is geocoded by its Cyrillic name alone («Шатура») and with its region as a person would
write it («Шатура, Московская обл»); the answer is compared with the town's own coordinates
(geo_lat, geo_lon). Printed side by side with the baseline, the original lookup: exact folded
name over GeoNames names and alternate names, largest population wins, no region, no cases, no
typos. Reports the share within 10 km and 50 km, not found, median error, and how the
confidence score separates right answers from wrong ones.

The data is not part of the repository (CC BY-SA 4.0, HFLabs); it is read from
../shared/data/russia_towns/city.csv beside the project, or from --data. Without it the script
says so and exits 0.

    .venv/bin/python benchmarks/gazetteer_eval.py
    .venv/bin/python benchmarks/gazetteer_eval.py --show-failures 20
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import contextlib

from common import machine_info

from geo.errors import GeocodingError
from geo.geocoding import GazetteerGeocoder, Places, fold, load_places
from geo.sphere import EARTH_RADIUS_KM

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "russia_towns" / "city.csv"
# English disaster messages (Haiti 2010, Pakistan 2010, news): almost none names a Russian place,
# so whatever find_in_text finds there is mostly a false place. Stop words were tuned on the
# validation split; the figure is on the test split.
DEFAULT_MESSAGES = Path(__file__).resolve().parents[2] / "shared" / "data" / "disaster_messages" / "test.csv"
NEAR_KM, FAR_KM = 10.0, 50.0
SETTLEMENT_PREFIXES = ("г ", "город ")


def load_towns(path: Path) -> list[dict[str, str]]:
    """Rows with the town's name, a region as people write it, and the reference coordinates."""
    towns = []
    with path.open(newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            # `city` is empty for Moscow, St Petersburg, Sevastopol and ten district towns; the
            # address always ends with «г <town>».
            town = row["address"].split(",")[-1].strip()
            town = town[2:] if town.startswith("г ") else town
            kind, name = row["region_type"], row["region"]
            if kind == "Респ":
                region = f"Респ {name}"
            elif kind in ("обл", "край", "АО", "Аобл"):
                region = f"{name} {kind}"
            else:  # federal cities (г Москва) and «Чувашская Республика»
                region = name
            towns.append({"town": town, "region": region, "lat": row["geo_lat"], "lon": row["geo_lon"], "kind": kind})
    return towns


def baseline(places: Places) -> Callable[[str], tuple[float, float, float]]:
    """The original GazetteerGeocoder.geocode: exact folded name, largest population wins."""
    index: dict[str, list[int]] = {}
    for i in range(len(places)):
        for n in {places.name[i], places.name_ru[i], *places.alternate_names[i]}:
            key = fold(n)
            if key:
                index.setdefault(key, []).append(i)
    by_pop = {k: sorted(set(v), key=lambda i: -int(places.population[i])) for k, v in index.items()}

    def geocode(query: str) -> tuple[float, float, float]:
        key = fold(query)
        for prefix in SETTLEMENT_PREFIXES:
            key = key.removeprefix(prefix)
        hits = by_pop.get(key)
        if not hits:
            raise GeocodingError(query)
        return float(places.lat_deg[hits[0]]), float(places.lon_deg[hits[0]]), 1.0 if len(hits) == 1 else 0.6

    return geocode


def with_typo(name: str, rng: np.random.Generator) -> str:
    """One letter of a name of six letters or more replaced by another Cyrillic letter."""
    letters = [k for k, c in enumerate(name) if c.isalpha()]
    if len(letters) < 6:
        return name
    k = int(rng.choice(letters[1:]))  # people rarely get the first letter wrong
    other = [c for c in "абвгдежзиклмнопрстуфхцчшщыэюя" if c != name[k].lower()]
    return name[:k] + str(rng.choice(other)) + name[k + 1 :]


def haversine_km(lat1: np.ndarray, lon1: np.ndarray, lat2: np.ndarray, lon2: np.ndarray) -> np.ndarray:
    p1, p2 = np.radians(lat1), np.radians(lat2)
    dphi, dlmb = p2 - p1, np.radians(lon2 - lon1)
    a = np.sin(dphi / 2) ** 2 + np.cos(p1) * np.cos(p2) * np.sin(dlmb / 2) ** 2
    return np.asarray(2 * EARTH_RADIUS_KM * np.arcsin(np.sqrt(np.clip(a, 0.0, 1.0))))


def run(
    name: str, geocode: Callable[[str], tuple[float, float, float]], queries: list[str], towns: list[dict[str, str]]
) -> dict[str, object]:
    lat = np.full(len(queries), np.nan)
    lon = np.full(len(queries), np.nan)
    conf = np.full(len(queries), np.nan)
    t0 = time.perf_counter()
    for k, q in enumerate(queries):
        with contextlib.suppress(GeocodingError):
            lat[k], lon[k], conf[k] = geocode(q)
    seconds = time.perf_counter() - t0
    ref_lat = np.array([float(t["lat"]) for t in towns])
    ref_lon = np.array([float(t["lon"]) for t in towns])
    found = ~np.isnan(lat)
    err = np.full(len(queries), np.inf)
    err[found] = haversine_km(lat[found], lon[found], ref_lat[found], ref_lon[found])
    return {
        "name": name,
        "n": len(queries),
        "near": float(np.mean(err <= NEAR_KM)),
        "far": float(np.mean(err <= FAR_KM)),
        "not_found": int((~found).sum()),
        "median_km": float(np.median(err[found])) if found.any() else float("nan"),
        "us_per_query": 1e6 * seconds / len(queries),
        "err": err,
        "conf": conf,
        "queries": queries,
    }


def confidence_line(r: dict[str, object]) -> str:
    err, conf = np.asarray(r["err"]), np.asarray(r["conf"])
    found = ~np.isnan(conf)
    parts = []
    for lo, hi in ((0.9, 1.01), (0.7, 0.9), (0.0, 0.7)):
        sel = found & (conf >= lo) & (conf < hi)
        if sel.any():
            parts.append(
                f"conf {lo:.1f}-{min(hi, 1.0):.1f}: {sel.sum():4d} answers, {np.mean(err[sel] <= NEAR_KM):6.1%} ≤10 km"
            )
    return f"  {r['name']:<38s} " + "; ".join(parts)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, default=DEFAULT_DATA, help="path to russia_towns/city.csv")
    p.add_argument("--messages", type=Path, default=DEFAULT_MESSAGES, help="disaster_messages/test.csv")
    p.add_argument("--seed", type=int, default=5, help="seed of the synthetic typos")
    p.add_argument("--show-failures", type=int, default=10, help="list this many worst answers with the region")
    args = p.parse_args()
    if not args.data.is_file():
        print(f"skipped: {args.data} not found (the evaluation data lives beside the project, not in it)")
        return 0

    print("\n".join(machine_info()))
    towns = load_towns(args.data)
    t0 = time.perf_counter()
    places = load_places("RU")
    gazetteer = GazetteerGeocoder(places)
    print(
        f"gazetteer: {len(places)} GeoNames settlements of RU (population ≥ 500), loaded in {time.perf_counter() - t0:.1f} s"
    )
    print(f"data:      {args.data} ({len(towns)} towns)\n")

    def ours(query: str) -> tuple[float, float, float]:
        hit = gazetteer.geocode(query)
        return hit.lat_deg, hit.lon_deg, hit.confidence

    rng = np.random.default_rng(args.seed)
    plain = [t["town"] for t in towns]
    with_region = [f"{t['town']}, {t['region']}" for t in towns]
    typo = [f"{with_typo(t['town'], rng)}, {t['region']}" for t in towns]
    results = [
        run("baseline (exact name, largest)", baseline(places), plain, towns),
        run("gazetteer, town", ours, plain, towns),
        run("gazetteer, town + region", ours, with_region, towns),
        run("baseline, typo", baseline(places), [q.split(",")[0] for q in typo], towns),
        run("gazetteer, typo + region", ours, typo, towns),
    ]
    changed = sum(q.split(",")[0] != t["town"] for q, t in zip(typo, towns, strict=True))
    print(f"typos: one letter replaced in {changed} of {len(towns)} names (those of ≥ 6 letters), seed {args.seed}\n")
    header = f"{'method':<38s} {'≤10 km':>8s} {'≤50 km':>8s} {'not found':>10s} {'median km':>10s} {'µs/query':>9s}"
    print(header)
    print("-" * len(header))
    for r in results:
        print(
            f"{r['name']:<38s} {r['near']:>8.1%} {r['far']:>8.1%} {r['not_found']:>10d} "
            f"{r['median_km']:>10.2f} {r['us_per_query']:>9.0f}"
        )
    print("\nconfidence against correctness (≤10 km):")
    for r in results[1:3] + results[4:]:
        print(confidence_line(r))

    outside = np.array([t["region"] in ("Респ Крым", "Севастополь") for t in towns])
    print(f"\n{outside.sum()} towns are in Crimea and Sevastopol, which GeoNames files under UA; without them:")
    for r in results[:3]:
        err = np.asarray(r["err"])[~outside]
        print(f"  {r['name']:<38s} {np.mean(err <= NEAR_KM):>8.1%} ≤10 km, {np.isinf(err).sum()} not found")
    best = results[2]  # town + region
    err = np.asarray(best["err"])
    worst = np.argsort(-err)[: args.show_failures]
    print(f"worst {len(worst)} answers with the region (error km, query):")
    for k in worst:
        e = "not found" if np.isinf(err[k]) else f"{err[k]:.0f} km"
        print(f"  {e:>10s}  {with_region[k]}")
    false_places(gazetteer, args.messages)
    return 0


def false_places(gazetteer: GazetteerGeocoder, path: Path) -> None:
    """find_in_text over English disaster messages that name no Russian place (mostly)."""
    if not path.is_file():
        print(f"\nfalse places: skipped, {path} not found")
        return
    with path.open(newline="", encoding="utf-8") as f:
        messages = [row["message"] for row in csv.DictReader(f)]
    t0 = time.perf_counter()
    found = [(m, gazetteer.find_in_text(m)) for m in messages]
    seconds = time.perf_counter() - t0
    hits = [(m, h) for m, h in found if h is not None]
    print(
        f"\nfind_in_text on {len(messages)} English disaster messages ({path.name}): a place in {len(hits)} "
        f"({len(hits) / len(messages):.2%}), {1e6 * seconds / len(messages):.0f} µs/message"
    )
    for m, h in hits:
        assert h is not None
        print(f"  {h.name:<14s} conf {h.confidence:.2f}  {m[:90]!r}")


if __name__ == "__main__":
    raise SystemExit(main())
