"""
The benchmark's sequential 3-name measurement runs three modes: native,
the native client following the v1 shape, and legacy through the gateway.
Their order alternates between rounds, each mode asks for names of its own,
and the report sets the gateway against the shaped client in rows of their
own (the main rows stay gateway against native).
"""

from bench import report
from bench import run as bench_run


def test_two_modes_alternate_as_before():
    assert bench_run.round_modes(("native", "legacy"), 0) == ("native", "legacy")
    assert bench_run.round_modes(("native", "legacy"), 1) == ("legacy", "native")
    assert bench_run.round_modes(("native", "legacy"), 2) == ("native", "legacy")


def test_three_modes_first_and_last_swap_between_rounds():
    modes = ("native", bench_run.SHAPED, "legacy")
    assert bench_run.round_modes(modes, 0) == modes
    assert bench_run.round_modes(modes, 1) == ("legacy", "native-v1", "native")


def test_each_mode_asks_for_names_of_its_own():
    tags = bench_run.MODE_TAGS
    assert set(tags) == {"native", "legacy", "native-v1"}
    assert len(set(tags.values())) == len(tags)


def _phase(mode, latencies, requests_per_cert):
    durations = list(latencies)
    return bench_run.derive({
        "mode": mode, "name": "multi3", "stack": "reuse", "clients": 1, "rounds": 1,
        "attempted": len(durations), "issued": len(durations), "failed": 0, "errors": [],
        "durations": durations, "polls": len(durations), "wall_s": sum(durations),
        "upstream": {"requests": {"newOrder": 4 * len(durations)},
                     "total": requests_per_cert * len(durations),
                     "orders_created": 4 * len(durations), "bad_nonce": 0},
        "gateway_cpu_s": 0.0, "pebble_cpu_s": 0.0,
    })


def _rows(phases):
    results = {"phases": {f"reuse/multi3/{mode}": phase for mode, phase in phases.items()},
               "settings": {"concurrency": [], "workers": [1]}}
    return {row.measure: row for row in report.rows(results)}


def test_shaped_rows_set_the_gateway_against_the_shaped_client():
    rows = _rows({
        "native": _phase("native", [0.04, 0.04, 0.04], 13),
        "native-v1": _phase("native-v1", [0.10, 0.10, 0.10], 16),
        "legacy": _phase("legacy", [0.11, 0.11, 0.11], 16),
    })
    against_native = rows["3 names, sequential, median per certificate (s)"]
    assert (against_native.native, against_native.legacy, against_native.ratio) == ("0.040", "0.110", "2.75×")
    median = rows["3 names, sequential, median per certificate, against native following the v1 shape (s)"]
    assert (median.native, median.legacy, median.ratio) == ("0.100", "0.110", "1.10×")
    mean = rows["3 names, sequential, mean per certificate, against native following the v1 shape (s)"]
    assert mean.ratio == "1.10× [no interval: < 10 certificates]"
    requests = rows["upstream requests per certificate, 3 names, authz reuse on, against native "
                    "following the v1 shape"]
    assert (requests.native, requests.legacy, requests.ratio) == ("16.00", "16.00", "1.00×")


def test_shaped_rows_say_not_run_without_the_shaped_phase():
    rows = _rows({
        "native": _phase("native", [0.04], 13),
        "legacy": _phase("legacy", [0.11], 16),
    })
    median = rows["3 names, sequential, median per certificate, against native following the v1 shape (s)"]
    assert (median.native, median.ratio) == ("n/a (not run)", "—")
