"""
Small statistics for the benchmark, without numpy.
"""

from __future__ import annotations

import random
from typing import Dict, List, Optional, Sequence, Tuple


def percentile(values: Sequence[float], q: float) -> Optional[float]:
    """
    The ``q`` quantile (0..1) with linear interpolation between closest
    ranks (numpy's default), or ``None`` for no values.
    """
    if not values:
        return None
    ordered = sorted(values)
    if len(ordered) == 1:
        return ordered[0]
    position = q * (len(ordered) - 1)
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def summarize(values: Sequence[float]) -> Dict[str, Optional[float]]:
    return {
        "count": len(values),
        "mean": (sum(values) / len(values)) if values else None,
        "min": min(values) if values else None,
        "p50": percentile(values, 0.50),
        "p95": percentile(values, 0.95),
        "p99": percentile(values, 0.99),
        "max": max(values) if values else None,
    }


def ratio(legacy: Optional[float], native: Optional[float]) -> Optional[float]:
    if legacy is None or native is None or native == 0:
        return None
    return legacy / native


# ---------------------------------------------------------------------------
# Issuance time: the mean per certificate, its ratio and its interval
# ---------------------------------------------------------------------------
#
# Why the mean and not the median: N certificates issued one after another
# cost N times the mean, so the mean is what a client pays.  The median of
# a bimodal distribution -- a native client whose first authorization poll
# comes before the CA has validated sleeps one poll interval, one whose
# poll comes after does not -- reports which mode half the certificates
# happened to take: one certificate more in the slow mode moves it from one
# mode to the other.  The mean moves by 1/N of the gap.

#: Fewer certificates per mode than this and the percentile bootstrap's
#: interval is too narrow to trust (it cannot show what the sample never
#: drew): no interval, and the verdict stays undecided.
MIN_CERTIFICATES_FOR_INTERVAL = 10

#: Resamples of the bootstrap: enough that the 2.5 % and 97.5 % points move
#: by well under a hundredth of the ratio from one seed to another.
BOOTSTRAP_RESAMPLES = 4000

#: The bootstrap's seed, fixed: the same results.json gives the same interval.
BOOTSTRAP_SEED = 15


def mean(values: Sequence[float]) -> Optional[float]:
    return (sum(values) / len(values)) if values else None


def strata(values: Sequence[float], sizes: Optional[Sequence[int]]) -> List[List[float]]:
    """
    ``values`` cut into consecutive groups of ``sizes`` (the certificates
    of each round, in the order they were pooled); one group when the
    sizes are missing or do not add up to the values.
    """
    values = list(values)
    if not sizes or sum(sizes) != len(values) or any(size < 0 for size in sizes):
        return [values]
    groups, start = [], 0
    for size in sizes:
        if size:
            groups.append(values[start:start + size])
        start += size
    return groups


def _resampled_mean(groups: Sequence[List[float]], rng: random.Random) -> float:
    total, count = 0.0, 0
    for group in groups:
        total += sum(rng.choices(group, k=len(group)))
        count += len(group)
    return total / count


def bootstrap_ratio_of_means(
        legacy: Sequence[float], native: Sequence[float], *,
        legacy_rounds: Optional[Sequence[int]] = None, native_rounds: Optional[Sequence[int]] = None,
        draw_rounds: bool = True, confidence: float = 0.95, resamples: int = BOOTSTRAP_RESAMPLES,
        seed: int = BOOTSTRAP_SEED, minimum: int = MIN_CERTIFICATES_FOR_INTERVAL,
) -> Optional[Tuple[float, float]]:
    """
    The percentile bootstrap interval of ``mean(legacy) / mean(native)``,
    in two stages when both modes ran the same number (2+) of rounds
    (``*_rounds``: certificates per round, in pooled order):

    1. draw the rounds again, with replacement, **paired** -- a round drawn
       brings both modes' certificates of that round: they ran back to
       back on the machine as it was then, so the machine's drift from
       round to round (measured: a mode's round means moving 2x within
       one run) widens the interval instead of being taken as fixed;
    2. within each round drawn, draw its certificates again, with
       replacement, each mode apart.

    With ``draw_rounds`` false, or without matching rounds, only stage 2
    (the rounds as fixed strata).  In simulations with round-to-round drift
    (4 rounds of 10, tests/test_bench_stats.py) the two stages hold the
    true ratio about 91 % of the time, stage 2 alone about 79 %; without
    drift the two stages are conservative (about 97 %), in both directions
    alike.  ``None`` when either mode has
    fewer than ``minimum`` certificates or the native mean is 0.
    """
    if len(legacy) < minimum or len(native) < minimum or not sum(native):
        return None
    rng = random.Random(seed)
    legacy_groups, native_groups = strata(legacy, legacy_rounds), strata(native, native_rounds)
    paired = draw_rounds and len(legacy_groups) == len(native_groups) >= 2
    count = len(legacy_groups)
    ratios = []
    for _ in range(resamples):
        if paired:
            drawn = [rng.randrange(count) for _ in range(count)]
            legacy_drawn = [legacy_groups[i] for i in drawn]
            native_drawn = [native_groups[i] for i in drawn]
        else:
            legacy_drawn, native_drawn = legacy_groups, native_groups
        denominator = _resampled_mean(native_drawn, rng)
        numerator = _resampled_mean(legacy_drawn, rng)
        if denominator > 0:
            ratios.append(numerator / denominator)
    if not ratios:
        return None
    tail = (1 - confidence) / 2
    return percentile(ratios, tail), percentile(ratios, 1 - tail)


#: The verdicts of a ratio with an upper target (gateway ÷ native ≤ target).
MET, MISSED, UNDECIDED = "met", "missed", "undecided"


def verdict_at_most(interval: Optional[Tuple[float, float]], target: float) -> str:
    """
    ``met`` when the whole interval is within the target (the data rule
    out a ratio above it), ``missed`` when the whole interval is above it
    (the data rule out a ratio within it), ``undecided`` otherwise or
    without an interval: the measurement cannot tell, and says so instead
    of letting the point estimate decide a coin toss.  Symmetric: neither
    outcome is the default.
    """
    if interval is None:
        return UNDECIDED
    low, high = interval
    if high <= target:
        return MET
    if low > target:
        return MISSED
    return UNDECIDED


def polls_histogram(polls: Sequence[int], durations: Sequence[float]) -> List[Tuple[int, int, float]]:
    """
    The distribution's modes: ``[(client polls, certificates, their mean
    seconds), …]`` by number of polls (authorization and order polls,
    bench/driver.py's counter).  Each poll past a certificate's first of
    each kind is one poll interval slept.
    """
    groups: Dict[int, List[float]] = {}
    for count, duration in zip(polls, durations):
        groups.setdefault(count, []).append(duration)
    return [(count, len(times), sum(times) / len(times)) for count, times in sorted(groups.items())]
