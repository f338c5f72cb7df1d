"""
Small statistics for the benchmark, without numpy.
"""

from __future__ import annotations

from typing import Dict, Optional, Sequence


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
