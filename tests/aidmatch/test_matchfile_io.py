"""CSV input of `aidmatch match-file`: defaults, validation with line numbers."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest

from aidmatch.matchfile import CsvError, read_needs, read_offers, write_matches


def _write(tmp_path: Path, text: str, name: str = "f.csv") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_needs_with_defaults_and_any_column_order(tmp_path: Path) -> None:
    path = _write(
        tmp_path, "urgency,category,lon,lat,id,quantity\ncritical,water,40.2,55.1,n1,2\n,Food,40.3,55.2,n2,\n"
    )
    needs = read_needs(path)
    assert needs.ids.tolist() == ["n1", "n2"]
    np.testing.assert_array_equal(needs.lat, [55.1, 55.2])
    np.testing.assert_array_equal(needs.category, [0, 1])  # water, food
    np.testing.assert_array_equal(needs.quantity, [2, 1])
    np.testing.assert_array_equal(needs.urgency, [0, 2])  # critical, normal by default


def test_optional_columns_may_be_absent(tmp_path: Path) -> None:
    needs = read_needs(_write(tmp_path, "id,lat,lon,category\na,0,0,power\n"))
    assert needs.quantity.tolist() == [1]
    assert needs.urgency.tolist() == [2]
    offers = read_offers(_write(tmp_path, "id,lat,lon,categories,radius_km\no,1,2,water; food ;,25\n", "o.csv"))
    assert offers.capacity.tolist() == [1]
    assert offers.category_mask.tolist() == [0b11]
    assert offers.radius_km.tolist() == [25.0]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("id,lat,lon,category\nn1,55,40,water\nn2,91,40,water\n", r"line 3: lat = '91'"),
        ("id,lat,lon,category\nn1,55,-181,water\n", r"line 2: lon = '-181'"),
        ("id,lat,lon,category\nn1,55,40,water\nn2,55,40,unicorn\n", r"line 3: category = 'unicorn'"),
        ("id,lat,lon,category,quantity\nn1,55,40,water,0\n", r"line 2: quantity = '0'"),
        ("id,lat,lon,category,quantity\nn1,55,40,water,1.5\n", r"line 2: quantity = '1.5'"),
        ("id,lat,lon,category\nn1,north,40,water\n", r"line 2: lat = 'north'"),
        ("id,lat,lon,category\nn1,nan,40,water\n", r"line 2: lat = 'nan'"),
        ("id,lat,lon,category,urgency\nn1,55,40,water,asap\n", r"line 2: urgency = 'asap'"),
        ("id,lat,lon\nn1,55,40\n", r"line 1: missing column\(s\) category"),
        ("id,lat,lon,category\nn1,55,40\n", r"line 2: 3 fields, the header has 4"),
        ("id,lat,lon,category\n,55,40,water\n", r"line 2: id is empty"),
        ("id,lat,lon,category\nn1,55,40,water\nn1,55,41,food\n", r"line 3: id 'n1' again \(first on line 2\)"),
        ("id,lat,lon,category,quantity\nn1,55,40,water,1e19\n", r"line 2: quantity = '1e19' is not an integer from 1"),
        ("id,lat,lon,category,quantity\nn1,55,40,water,10001\n", r"line 2: quantity = '10001'"),
        ("id,lat,lon,category\nn1,55,40,water\x00\n", r"line 2: a NUL character"),
        ("id,lat,lon,category,urgency\nn1,55,40,water,normal\nn2,55,40,water,bogus\x00\n", r"line 3: a NUL"),
        ("", r"empty file"),
        ("id,lat,lon,category,lat\nn1,55,40,water,56\n", r"line 1: column\(s\) lat appear more than once"),
    ],
)
def test_bad_needs_name_the_line(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(CsvError, match=message):
        read_needs(_write(tmp_path, text))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("id,lat,lon,categories,radius_km\no1,55,40,water;dragons,10\n", r"line 2: category 'dragons'"),
        ("id,lat,lon,categories,radius_km\no1,55,40,;,10\n", r"line 2: categories is empty"),
        ("id,lat,lon,categories,radius_km\no1,55,40,water,0\n", r"line 2: radius_km = '0'"),
        ("id,lat,lon,categories,radius_km,capacity\no1,55,40,water,5,-1\n", r"line 2: capacity = '-1'"),
        ("id,lat,lon,categories,radius_km,capacity\no1,55,40,water,5,9e18\n", r"line 2: capacity = '9e18'"),
        ("id,lat,lon,categories,radius_km\no1,55,40,water,5\no1,56,40,food,5\n", r"line 3: id 'o1' again"),
        ("id,lat,lon,categories\no1,55,40,water\n", r"missing column\(s\) radius_km"),
    ],
)
def test_bad_offers_name_the_line(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(CsvError, match=message):
        read_offers(_write(tmp_path, text))


def test_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(CsvError, match="cannot open"):
        read_needs(tmp_path / "absent.csv")


def test_write_matches() -> None:
    out = io.StringIO()
    write_matches(out, ["n1", "n2"], ["o1", "o1"], np.array([2, 1]), np.array([1.23456, 0.0]))
    assert out.getvalue() == "need_id,offer_id,quantity,distance_km\nn1,o1,2,1.235\nn2,o1,1,0.000\n"


def test_line_numbers_count_physical_lines_across_quoted_newlines(tmp_path: Path) -> None:
    text = 'id,lat,lon,category\nn1,55,40,water\n"n2\nsecond line",55,40,water\nn3,95,40,water\n'
    with pytest.raises(CsvError, match=r"line 5: lat = '95'"):
        read_needs(_write(tmp_path, text))


def test_a_giant_field_is_a_clear_error(tmp_path: Path) -> None:
    text = "id,lat,lon,category\n" + '"' + "x" * 200_000 + '",55,40,water\n'
    with pytest.raises(CsvError, match="line 2"):
        read_needs(_write(tmp_path, text))


def test_a_byte_that_is_not_utf8_names_its_line(tmp_path: Path) -> None:
    path = tmp_path / "latin1.csv"
    path.write_bytes("id,lat,lon,category\nn1,55,40,water\nn2,55,40,wäter\n".encode("latin-1"))
    with pytest.raises(CsvError, match=r"line 3: byte 0xe4 is not UTF-8"):
        read_needs(path)


def test_a_byte_order_mark_is_not_part_of_the_header(tmp_path: Path) -> None:
    path = tmp_path / "bom.csv"
    path.write_bytes("\ufeffid,lat,lon,category\nn1,55,40,water\n".encode())
    assert read_needs(path).ids.tolist() == ["n1"]


def test_blank_lines_are_skipped_and_later_lines_keep_their_numbers(tmp_path: Path) -> None:
    needs = read_needs(_write(tmp_path, "id,lat,lon,category\nn1,55,40,water\n\nn2,55,41,food\n\n\n"))
    assert needs.ids.tolist() == ["n1", "n2"]
    with pytest.raises(CsvError, match=r"line 4: lat = '91'"):
        read_needs(_write(tmp_path, "id,lat,lon,category\nn1,55,40,water\n\nn2,91,41,food\n"))


def test_columns_not_read_may_repeat_and_loose_quoting_still_reads(tmp_path: Path) -> None:
    needs = read_needs(
        _write(tmp_path, 'id,lat,lon,category,note,Note\n"n1" ,55,40,water,a,b\nO"Brien,55,41,food ,c,d\n')
    )
    assert needs.ids.tolist() == ["n1", 'O"Brien']  # as spreadsheets write them, read as before (ids stripped)
