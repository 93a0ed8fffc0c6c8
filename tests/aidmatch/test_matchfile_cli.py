"""`aidmatch match-file` end to end: files in, a feasible optimal-looking assignment out."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
from typer.testing import CliRunner

from aidmatch.cli import app
from aidmatch.matchfile import CATEGORY_CODES
from geo.sphere import haversine_km

runner = CliRunner()


def _instance(tmp_path: Path, seed: int) -> tuple[Path, Path]:
    rng = np.random.default_rng(seed)
    n, m = 300, 120
    needs = tmp_path / "needs.csv"
    offers = tmp_path / "offers.csv"
    with needs.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "lat", "lon", "category", "quantity", "urgency"])
        for i in range(n):
            w.writerow(
                [
                    f"n{i}",
                    55 + rng.normal(0, 0.3),
                    40 + rng.normal(0, 0.5),
                    CATEGORY_CODES[rng.integers(0, 4)],
                    int(rng.integers(1, 4)),
                    ["critical", "urgent", "normal"][rng.integers(0, 3)],
                ]
            )
    with offers.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "lat", "lon", "categories", "capacity", "radius_km"])
        for j in range(m):
            cats = rng.choice(4, size=int(rng.integers(1, 3)), replace=False)
            w.writerow(
                [
                    f"o{j}",
                    55 + rng.normal(0, 0.3),
                    40 + rng.normal(0, 0.5),
                    ";".join(CATEGORY_CODES[c] for c in cats),
                    int(rng.integers(1, 4)),
                    float(rng.uniform(10, 60)),
                ]
            )
    return needs, offers


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def test_match_file_writes_a_feasible_assignment_and_a_true_summary(tmp_path: Path) -> None:
    needs_path, offers_path = _instance(tmp_path, 5)
    out = tmp_path / "out" / "matches.csv"
    result = runner.invoke(app, ["match-file", str(needs_path), str(offers_path), "--out", str(out), "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    needs = {r["id"]: r for r in _rows(needs_path)}
    offers = {r["id"]: r for r in _rows(offers_path)}
    rows = _rows(out)
    assert rows, "nothing matched on a dense instance"
    served: dict[str, int] = {}
    used: dict[str, int] = {}
    total_km = 0.0
    for r in rows:
        need, offer, q = needs[r["need_id"]], offers[r["offer_id"]], int(r["quantity"])
        assert need["category"] in offer["categories"].split(";")
        d = float(haversine_km(float(need["lat"]), float(need["lon"]), float(offer["lat"]), float(offer["lon"])))
        assert abs(d - float(r["distance_km"])) < 0.002
        assert d <= float(offer["radius_km"]) + 1e-6
        served[r["need_id"]] = served.get(r["need_id"], 0) + q
        used[r["offer_id"]] = used.get(r["offer_id"], 0) + q
        total_km += q * float(r["distance_km"])
    assert all(served[k] <= int(needs[k]["quantity"]) for k in served)
    assert all(used[k] <= int(offers[k]["capacity"]) for k in used)
    assert summary["needs"] == 300
    assert summary["offers"] == 120
    assert summary["matched_needs"] == len(served)
    assert summary["unmatched_needs"] == 300 - len(served)
    assert summary["assigned_quantity"] == sum(served.values())
    assert abs(summary["total_distance_km"] - total_km) < 0.5
    assert summary["seconds"] >= 0


def test_match_file_bad_row_is_exit_2_with_the_line(tmp_path: Path) -> None:
    needs_path, offers_path = _instance(tmp_path, 6)
    lines = needs_path.read_text().splitlines()
    lines[7] = "n6,95,40,water,1,normal"
    needs_path.write_text("\n".join(lines) + "\n")
    result = runner.invoke(app, ["match-file", str(needs_path), str(offers_path), "--out", str(tmp_path / "m.csv")])
    assert result.exit_code == 2
    assert "line 8: lat = '95'" in result.output
    assert not (tmp_path / "m.csv").exists()


def test_a_bad_out_path_is_exit_2_before_matching_and_an_old_output_stays(tmp_path: Path) -> None:
    needs_path, offers_path = _instance(tmp_path, 6)
    folder = tmp_path / "folder"
    folder.mkdir()
    result = runner.invoke(app, ["match-file", str(needs_path), str(offers_path), "--out", str(folder)])
    assert result.exit_code == 2
    assert "is a directory" in result.output
    under_file = offers_path / "m.csv"
    result = runner.invoke(app, ["match-file", str(needs_path), str(offers_path), "--out", str(under_file)])
    assert result.exit_code == 2
    assert "is a file, not a directory" in result.output
    # A bad input leaves the previous output as it was; a good run replaces it whole.
    out = tmp_path / "m.csv"
    out.write_text("previous\n")
    lines = needs_path.read_text().splitlines()
    bad = tmp_path / "bad.csv"
    bad.write_text("\n".join([*lines, lines[-1]]) + "\n")  # the last id twice
    result = runner.invoke(app, ["match-file", str(bad), str(offers_path), "--out", str(out)])
    assert result.exit_code == 2
    assert "ids must be unique" in result.output
    assert out.read_text() == "previous\n"
    result = runner.invoke(app, ["match-file", str(needs_path), str(offers_path), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert out.read_text().startswith("need_id,offer_id,quantity,distance_km\n")
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".part")] == []


def test_the_output_file_takes_the_umask_like_any_file_written(tmp_path: Path) -> None:
    import os
    import stat

    needs, offers = _instance(tmp_path, 7)
    out = tmp_path / "matches.csv"
    old = os.umask(0o022)
    try:
        result = runner.invoke(app, ["match-file", str(needs), str(offers), "--out", str(out)])
    finally:
        os.umask(old)
    assert result.exit_code == 0, result.output
    assert stat.S_IMODE(out.stat().st_mode) == 0o644  # not mkstemp's 0600
    assert not list(tmp_path.glob(".matches.csv.*"))  # no temporary file left beside it
