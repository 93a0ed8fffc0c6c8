"""Escalation waves: the spec parser and who each wave asks (against a plain-loop oracle)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from notifications.waves import Wave, WaveSpecError, parse_waves, pick_wave


def test_parse_waves_reads_km_helpers_seconds() -> None:
    assert parse_waves("5:3:300, 15:6:600") == (Wave(5.0, 3, 300.0), Wave(15.0, 6, 600.0))


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("5:3", "is not km:helpers:seconds"),
        ("5:x:300", "is not km:helpers:seconds"),
        ("", "is not km:helpers:seconds"),
        ("0:3:300", "radius > 0 km"),
        ("5:0:300", "at least one helper"),
        ("nan:3:300", "radius > 0 km"),
        ("5:3:0", "wait > 0 seconds"),
        ("5:3:inf", "wait > 0 seconds"),
        ("15:3:300,5:6:600", "smaller than the 15 km"),
    ],
)
def test_bad_wave_specs_say_what_is_wrong(spec: str, message: str) -> None:
    with pytest.raises(WaveSpecError, match=message):
        parse_waves(spec)


def _oracle(wave: Wave, candidates: list[tuple[int, float]], skip: set[int]) -> list[tuple[int, float]]:
    out: list[tuple[int, float]] = []
    for helper, km in sorted(candidates, key=lambda c: c[1]):
        if km <= wave.radius_km and helper not in skip and helper not in {h for h, _ in out}:
            out.append((helper, km))
    return out[: wave.helpers]


@given(
    st.lists(st.tuples(st.integers(0, 15), st.floats(0, 60)), max_size=30),
    st.sets(st.integers(0, 15)),
    st.sets(st.integers(0, 15)),
    st.floats(0.5, 50),
    st.integers(1, 8),
)
def test_a_wave_asks_the_nearest_new_helpers_within_its_radius(
    candidates: list[tuple[int, float]], asked: set[int], busy: set[int], radius: float, helpers: int
) -> None:
    wave = Wave(radius, helpers, 60.0)
    ordered = sorted(candidates, key=lambda c: c[1])  # the live index gives them nearest first
    chosen = pick_wave(wave, ordered, asked=asked, busy=busy)
    assert chosen == _oracle(wave, ordered, asked | busy)
    assert len({h for h, _ in chosen}) == len(chosen) <= helpers
    assert not {h for h, _ in chosen} & (asked | busy)
