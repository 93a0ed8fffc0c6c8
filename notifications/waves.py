"""Escalation waves for critical needs (GoodSAM/PulsePoint style, in kilometres).

Wave 1 asks the few nearest helpers within a small radius; if not enough of them accept within
its wait, wave 2 asks more helpers within a wider radius, and so on. Earlier waves stay open while
later ones run. Pure: the caller gives the candidates (nearest first) and who was already asked.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from notifications.errors import NotificationsError


class WaveSpecError(NotificationsError, ValueError):
    """An escalation wave specification that cannot be used."""


@dataclass(frozen=True, slots=True)
class Wave:
    """Ask up to ``helpers`` more helpers within ``radius_km``, then wait ``wait_s`` seconds."""

    radius_km: float
    helpers: int
    wait_s: float


def parse_waves(spec: str) -> tuple[Wave, ...]:
    """``km:helpers:seconds`` per wave, comma separated, e.g. ``5:3:300,15:6:600``.

    Radii must not shrink from one wave to the next; every number must be positive.
    """
    waves: list[Wave] = []
    for part in spec.split(","):
        text = part.strip()
        try:
            km, count, wait = text.split(":")
            wave = Wave(float(km), int(count), float(wait))
        except ValueError:
            raise WaveSpecError(f"escalation wave {text!r} is not km:helpers:seconds") from None
        if not (math.isfinite(wave.radius_km) and wave.radius_km > 0 and wave.helpers > 0):
            raise WaveSpecError(f"escalation wave {text!r} needs a radius > 0 km and at least one helper")
        if not (math.isfinite(wave.wait_s) and wave.wait_s > 0):
            raise WaveSpecError(f"escalation wave {text!r} needs a wait > 0 seconds")
        if waves and wave.radius_km < waves[-1].radius_km:
            raise WaveSpecError(
                f"escalation wave {text!r} has a radius of {wave.radius_km:g} km, "
                f"smaller than the {waves[-1].radius_km:g} km of the wave before it"
            )
        waves.append(wave)
    return tuple(waves)


def pick_wave(
    wave: Wave, candidates: Sequence[tuple[int, float]], *, asked: Iterable[int], busy: Iterable[int]
) -> list[tuple[int, float]]:
    """Whom a wave asks: up to ``wave.helpers`` candidates within its radius, nearest first.

    ``candidates`` are (helper id, km) nearest first and may repeat a helper (several offers);
    helpers in ``asked`` (already asked for this need, in any wave) and ``busy`` (at their cap of
    open tasks) are skipped, so nobody is asked twice for one need.
    """
    skip = set(asked) | set(busy)
    chosen: list[tuple[int, float]] = []
    for helper_id, km in candidates:
        if len(chosen) == wave.helpers or km > wave.radius_km:
            break
        if helper_id in skip:
            continue
        skip.add(helper_id)
        chosen.append((helper_id, km))
    return chosen
