"""
The benchmark's outputs: the Markdown tables, the PNG chart (matplotlib,
optional) and the closing summary, all from ``results.json``'s structure.

Every row of the main table exists in every run, the smoke run included: a
figure that could not be measured reads ``n/a`` with the reason, so that a
missing row means a broken benchmark, not a skipped one.
"""

from __future__ import annotations

from typing import List, Optional

from bench.stats import (MET, MIN_CERTIFICATES_FOR_INTERVAL, MISSED, bootstrap_ratio_of_means, mean,
                         polls_histogram, ratio, verdict_at_most)

SCENARIOS = (
    ("reuse", "single", "1 name, authz reuse on"),
    ("reuse", "multi3", "3 names, authz reuse on"),
    ("noreuse", "single", "1 name, authz reuse off"),
    ("noreuse", "multi3", "3 names, authz reuse off"),
    # The same 3-name certificates again: a renewal, which the gateway
    # plans as one order for the whole name set (with ARI replaces when
    # the CA offers renewalInfo).
    ("reuse", "renew3", "3-name renewal, authz reuse on"),
)

#: The native client following the v1 shape (bench/driver.py
#: ``NativeV1Shaped``): sequential 3-name certificates, authorization reuse on.
SHAPED = "native-v1"

#: The modes of the sequential tables, in the order they are shown.
SEQUENTIAL_MODES = ("native", SHAPED, "legacy")

KIND_ORDER = ("directory", "newNonce", "newAccount", "newOrder", "authorization", "challenge",
              "finalize", "order", "certificate", "account", "other")


class Row:
    def __init__(self, section, measure, native="n/a", legacy="n/a", ratio_text="—", target="—",
                 verdict="—", key=None):
        self.section = section
        self.measure = measure
        self.native = native
        self.legacy = legacy
        self.ratio = ratio_text
        self.target = target
        self.verdict = verdict
        self.key = key  # the target's short name, for the summary

    def cells(self):
        return [self.section, self.measure, self.native, self.legacy, self.ratio, self.target, self.verdict]


def _phase(results, stack, name, mode):
    return results.get("phases", {}).get(f"{stack}/{name}/{mode}")


def _fmt(value, digits=3, unit=""):
    if value is None:
        return "n/a"
    return f"{value:.{digits}f}{unit}"


def _ratio_text(value):
    return "—" if value is None else f"{value:.2f}×"


def _issued_note(phase):
    if phase is None:
        return " (not run)"
    if phase["issued"] < phase["attempted"]:
        return f" ({phase['issued']}/{phase['attempted']} issued)"
    return ""


def _cell(phase, getter, digits=3, unit=""):
    if phase is None:
        return "n/a (not run)"
    if not phase["issued"]:
        error = phase["errors"][0] if phase.get("errors") else "no certificate issued"
        return f"fails: {_short_error(error)} (0/{phase['attempted']})"
    return _fmt(getter(phase), digits, unit) + _issued_note(phase)


def _short_error(error: str) -> str:
    error = error.replace("|", "/")
    for marker in ("authorizations for these names not found or expired",):
        if marker in error:
            return "403 " + marker
    return error[:80]


def _verdict(ok: Optional[bool]) -> str:
    if ok is None:
        return "n/a"
    return "met" if ok else "**MISSED**"


def _both_clean(native, legacy) -> bool:
    return bool(native and legacy and not native["failed"] and not legacy["failed"])


def _judge(native, legacy, ok: Optional[bool]) -> str:
    """A verdict only for a clean comparison: failures make it n/a, said why."""
    if native and legacy and (native["failed"] or legacy["failed"]):
        who = [m for m, p in (("native", native), ("gateway", legacy)) if p["failed"]]
        return f"n/a: {' and '.join(who)} had failures"
    return _verdict(ok)


#: Issue 15's target for the issuance time: gateway ÷ native.
ISSUANCE_TARGET = 1.10


def compare_means(legacy, native) -> Optional[dict]:
    """
    Gateway against native on the mean time per certificate: the ratio of
    the means, its 95 % bootstrap interval (rounds drawn again paired,
    then certificates within them: ``stats.bootstrap_ratio_of_means``;
    ``None`` with fewer than ``MIN_CERTIFICATES_FOR_INTERVAL`` per mode)
    and the verdict against
    ``ISSUANCE_TARGET`` (``stats.verdict_at_most``).  ``None`` when a mode
    issued nothing.
    """
    if not (native and legacy and native["issued"] and legacy["issued"]):
        return None
    interval = bootstrap_ratio_of_means(legacy["durations"], native["durations"],
                                        legacy_rounds=legacy.get("round_sizes"),
                                        native_rounds=native.get("round_sizes"))
    return {"ratio": ratio(mean(legacy["durations"]), mean(native["durations"])),
            "interval": interval, "verdict": verdict_at_most(interval, ISSUANCE_TARGET)}


def _interval_text(compared: Optional[dict]) -> str:
    if compared is None or compared["ratio"] is None:
        return "—"
    text = _ratio_text(compared["ratio"])
    if compared["interval"] is None:
        return f"{text} [no interval: < {MIN_CERTIFICATES_FOR_INTERVAL} certificates]"
    low, high = compared["interval"]
    return f"{text} [{low:.2f}, {high:.2f}]"


def _judge_interval(native, legacy, compared: Optional[dict]) -> str:
    """The interval's verdict, for a clean comparison only (as ``_judge``)."""
    if native and legacy and (native["failed"] or legacy["failed"]):
        return _judge(native, legacy, None)
    if compared is None:
        return "n/a"
    if compared["verdict"] == MISSED:
        return "**MISSED**"
    if compared["verdict"] == MET:
        return "met"
    return "undecided"


def rows(results) -> List[Row]:
    out: List[Row] = []
    # 1. issuance time --------------------------------------------------------
    # The target is judged on the mean per certificate (what N certificates
    # cost) with its bootstrap interval; the median and p95 are shown as
    # information (bench/README.md, "Issuance time: the statistic").
    for name, label in (("single", "1 name"), ("multi3", "3 names")):
        native = _phase(results, "reuse", name, "native")
        legacy = _phase(results, "reuse", name, "legacy")
        compared = compare_means(legacy, native)
        get_mean = lambda p: mean(p["durations"])  # noqa: E731
        out.append(Row(
            "1 issuance time", f"{label}, sequential, mean per certificate (s)",
            _cell(native, get_mean), _cell(legacy, get_mean), _interval_text(compared),
            f"≤ {ISSUANCE_TARGET:.2f}× (95 % interval)", _judge_interval(native, legacy, compared),
            key=f"issuance time {label} mean",
        ))
        for stat, statlabel in (("p50", "median"), ("p95", "p95")):
            get = (lambda s: (lambda p: p["latency"][s]))(stat)
            r = None
            if native and legacy and native["issued"] and legacy["issued"]:
                r = ratio(get(legacy), get(native))
            out.append(Row(
                "1 issuance time", f"{label}, sequential, {statlabel} per certificate (s)",
                _cell(native, get), _cell(legacy, get), _ratio_text(r), "(info)",
            ))
    # The 3-name time against the native client following the v1 shape:
    # how much of the gateway's time over native is the shape (four
    # orders for three names), how much the gateway's own.
    shaped = _phase(results, "reuse", "multi3", SHAPED)
    legacy = _phase(results, "reuse", "multi3", "legacy")
    for stat, statlabel in (("p50", "median"), ("mean", "mean")):
        get = (lambda s: (lambda p: p["latency"][s]))(stat)
        r = None
        if shaped and legacy and shaped["issued"] and legacy["issued"]:
            r = ratio(get(legacy), get(shaped))
        text = _ratio_text(r)
        if stat == "mean" and r is not None:
            text = _interval_text(compare_means(legacy, shaped))
        out.append(Row("1 issuance time", f"3 names, sequential, {statlabel} per certificate, against "
                       "native following the v1 shape (s)", _cell(shaped, get), _cell(legacy, get),
                       text, "(info)"))
    # 2. cost to the CA -------------------------------------------------------
    for stack, name, label in SCENARIOS:
        native = _phase(results, stack, name, "native")
        legacy = _phase(results, stack, name, "legacy")
        get = lambda p: p["requests_per_cert"]  # noqa: E731
        r = None
        if native and legacy and native["issued"] and legacy["issued"]:
            r = ratio(get(legacy), get(native))
        verdict = _judge(native, legacy, None if r is None else r <= 1.0)
        if legacy and not legacy["issued"]:
            verdict = "n/a: fails (documented)" if name == "multi3" else "**MISSED** (fails)"
        out.append(Row("2 cost to the CA", f"upstream requests per certificate, {label}",
                       _cell(native, get, 2), _cell(legacy, get, 2), _ratio_text(r), "≤ 1.0×", verdict,
                       key=f"upstream requests/cert, {label}"))
        if (stack, name) == ("reuse", "multi3"):
            shaped = _phase(results, stack, name, SHAPED)
            r = None
            if shaped and legacy and shaped["issued"] and legacy["issued"]:
                r = ratio(get(legacy), get(shaped))
            out.append(Row("2 cost to the CA", f"upstream requests per certificate, {label}, against "
                           "native following the v1 shape", _cell(shaped, get, 2), _cell(legacy, get, 2),
                           _ratio_text(r), "(info)"))
    for stack, name, label in SCENARIOS:
        native = _phase(results, stack, name, "native")
        legacy = _phase(results, stack, name, "legacy")
        get = lambda p: p["orders_per_cert"]  # noqa: E731
        value = legacy["orders_per_cert"] if legacy and legacy["issued"] else None
        r = None
        if native and legacy and native["issued"] and legacy["issued"]:
            r = ratio(get(legacy), get(native))
        if name in ("single", "renew3"):
            target, verdict, key = "= 1.0", _verdict(None if value is None else abs(value - 1.0) < 1e-9), \
                f"orders per certificate, {label}"
        else:
            target, verdict, key = "(info)", "—", None
            if legacy and not legacy["issued"]:
                verdict = "n/a: fails (documented)"
        out.append(Row("2 cost to the CA", f"upstream orders per certificate, {label}",
                       _cell(native, get, 2), _cell(legacy, get, 2), _ratio_text(r), target, verdict,
                       key=key))
    # 3. concurrency ------------------------------------------------------------
    ks = results.get("settings", {}).get("concurrency", [])
    worker_counts = results.get("settings", {}).get("workers", [1])
    for workers in worker_counts:
        for k in ks:
            stack = _concurrency_stack(k, workers)
            native = _phase(results, stack, f"k{k}", "native")
            legacy = _phase(results, stack, f"k{k}", "legacy")
            clients = f"K={k} clients" + _workers_text(workers)
            get = lambda p: p["certs_per_s"]  # noqa: E731
            r = None
            if native and legacy and native["issued"] and legacy["issued"]:
                r = ratio(get(legacy), get(native))
            targeted = k == 32
            out.append(Row("3 concurrency", f"{clients}: certificates per second",
                           _cell(native, get, 2), _cell(legacy, get, 2), _ratio_text(r),
                           "≥ 0.90×" if targeted else "(info)",
                           _judge(native, legacy, None if r is None else r >= 0.90) if targeted else "—",
                           key=f"throughput K=32{_workers_text(workers)}" if targeted else None))
            for stat in ("p50", "p99"):
                get = (lambda s: (lambda p: p["latency"][s]))(stat)
                r = None
                if native and legacy and native["issued"] and legacy["issued"]:
                    r = ratio(get(legacy), get(native))
                out.append(Row("3 concurrency", f"{clients}: {stat} latency per certificate (s)",
                               _cell(native, get), _cell(legacy, get), _ratio_text(r), "(info)"))
    # 4. gateway-local cost --------------------------------------------------------
    for workers, load in _loads(results):
        connections = load.get("connections", 64)
        for method in ("HEAD", "GET"):
            measured = load.get(method)
            tool = f" [{measured['tool']}]" if measured else ""
            for field, label, digits in (("rps", "requests per second", 0),
                                         ("p50_ms", "p50 latency (ms)", 2),
                                         ("p99_ms", "p99 latency (ms)", 2)):
                value = measured.get(field) if measured else None
                target, verdict, key = "(info)", "—", None
                if method == "HEAD" and field == "p99_ms":
                    target, key = "< 5 ms", f"HEAD /directory p99{_workers_text(workers)}"
                    verdict = _verdict(None if value is None else value < 5.0)
                out.append(Row("4 gateway-local", f"{method} /directory at {connections} connections"
                               f"{_workers_text(workers)}: {label}{tool}", "—", _fmt(value, digits), "—",
                               target, verdict, key=key))
    cpu_sources = [("reuse", "single", "1 name, sequential"), ("reuse", "multi3", "3 names, sequential")]
    if ks:
        cpu_sources.append((f"k{max(ks)}", f"k{max(ks)}", f"1 name, K={max(ks)}"))
    for stack, name, label in cpu_sources:
        legacy = _phase(results, stack, name, "legacy")
        value = legacy.get("gateway_cpu_ms_per_cert") if legacy and legacy["issued"] else None
        out.append(Row("4 gateway-local", f"gateway CPU time per issued certificate, {label} (ms)",
                       "—", _fmt(value, 1), "—", "(info)"))
    # 5. memory -------------------------------------------------------------------
    memory = results.get("memory")
    samples = memory["samples"] if memory else []
    idle = samples[0]["VmRSS"] if samples else None
    warm = samples[1] if len(samples) > 1 else None
    last = samples[-1] if len(samples) > 1 else None
    total = last["issued"] if last else results.get("settings", {}).get("issuances_for_memory")
    out.append(Row("5 memory", "gateway RSS idle, just started (MB)", "—", _fmt(idle, 1)))
    out.append(Row("5 memory", f"gateway RSS after a warm-up of {warm['issued'] if warm else '?'} "
                   "issuances (MB)", "—", _fmt(warm["VmRSS"] if warm else None, 1)))
    out.append(Row("5 memory", f"gateway RSS after {total} issuances (MB)", "—",
                   _fmt(last["VmRSS"] if last else None, 1)))
    growth = (last["VmRSS"] - idle) if last and idle is not None else None
    out.append(Row("5 memory", f"RSS growth, idle → after {total} issuances (MB)", "—", _fmt(growth, 1),
                   "—", "< 10 MB", _verdict(None if growth is None else growth < 10.0),
                   key=f"memory growth after {total} issuances"))
    steady = (last["VmRSS"] - warm["VmRSS"]) if last and warm else None
    per_1000 = None
    if last and warm and last["issued"] > warm["issued"]:
        per_1000 = steady * 1000 / (last["issued"] - warm["issued"])
    out.append(Row("5 memory", "RSS growth after the warm-up, per 1000 issuances (MB)", "—",
                   _fmt(per_1000, 1), "—", "(info)"))
    # 6. replicas ------------------------------------------------------------------
    settings = results.get("settings", {})
    k = settings.get("replica_clients")
    if settings.get("replicas"):
        configs = [("sqlite", "1 gateway, SQLite")] + [
            (f"pg{n}", f"{n} replica{'s' if n > 1 else ''}, PostgreSQL") for n in settings["replicas"]]
        for label, description in configs:
            native = _phase(results, f"rep-{label}", f"k{k}", "native")
            legacy = _phase(results, f"rep-{label}", f"k{k}", "legacy")
            for measure, get, digits in (
                    ("certificates per second", lambda p: p["certs_per_s"], 2),
                    ("p50 latency per certificate (s)", lambda p: p["latency"]["p50"], 3)):
                r = None
                if native and legacy and native["issued"] and legacy["issued"]:
                    r = ratio(get(legacy), get(native))
                out.append(Row("6 replicas", f"K={k}, {description}: {measure}",
                               _cell(native, get, digits), _cell(legacy, get, digits),
                               _ratio_text(r), "(info)"))
            gateway_cpu = (lambda p: p.get("gateway_cpu_ms_per_cert"))
            out.append(Row("6 replicas", f"K={k}, {description}: gateway CPU per certificate (ms, all replicas)",
                           "—", _cell(legacy, gateway_cpu, 1), "—", "(info)"))
    return out


def _concurrency_stack(k: int, workers: int) -> str:
    return f"k{k}" if workers == 1 else f"k{k}w{workers}"


def _workers_text(workers) -> str:
    return "" if int(workers) == 1 else f", {workers} workers"


def _loads(results):
    """Section 4's measurements: ``[(workers, load), …]``, one worker first."""
    loads = []
    if results.get("http_load") or 1 in results.get("settings", {}).get("workers", [1]):
        loads.append((1, results.get("http_load", {})))
    for workers, load in sorted((results.get("http_load_workers") or {}).items(), key=lambda i: int(i[0])):
        loads.append((int(workers), load))
    return loads


def _table(header, body) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for cells in body:
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    return "\n".join(lines)


def main_table(results) -> str:
    return _table(["§", "measure", "native v2 (ClientV2 → Pebble)", "legacy v1 via gateway",
                   "gateway / native", "target", "verdict"], [r.cells() for r in rows(results)])


def kinds_table(results) -> str:
    body = []
    present = set()
    for stack, name, _ in SCENARIOS:
        for mode in SEQUENTIAL_MODES:
            phase = _phase(results, stack, name, mode)
            if phase:
                present.update(phase["upstream"]["requests"])
    kinds = [k for k in KIND_ORDER if k in present] + sorted(present - set(KIND_ORDER))
    for stack, name, label in SCENARIOS:
        for mode in SEQUENTIAL_MODES:
            phase = _phase(results, stack, name, mode)
            if not phase:
                continue
            count = phase["issued"] or phase["attempted"]
            per = "per issued" if phase["issued"] else "per attempt (none issued)"
            cells = [label, mode, per]
            for kind in kinds:
                cells.append(f"{phase['upstream']['requests'].get(kind, 0) / count:.2f}")
            cells.append(f"{phase['upstream']['total'] / count:.2f}")
            cells.append(f"{phase['upstream']['orders_created'] / count:.2f}")
            cells.append(_fmt(phase.get("pebble_cpu_ms_per_cert"), 1))
            cells.append(_fmt(phase.get("polls_per_cert"), 1))
            body.append(cells)
    return _table(["scenario", "mode", "certificate"] + kinds +
                  ["total", "orders", "Pebble CPU ms", "client polls"], body)


def load_table(results) -> str:
    loads = [(w, load) for w, load in _loads(results) if load]
    if not loads:
        return "(not measured)"
    body = []

    def line(label, load, m):
        return [label, load.get("workers", 1), m.get("connections", load.get("connections", "?")), m["tool"],
                f"{m['rps']:.0f}", _fmt(m["p50_ms"], 2), _fmt(m["p99_ms"], 2), m["errors"], m["requests"],
                _fmt(m.get("gateway_cpu_us_per_request"), 0), _fmt(m.get("gateway_cores_busy"), 2),
                _fmt(m.get("generator_cores_busy"), 2), m.get("machine_load", "?")]

    for _, load in loads:
        for method in ("HEAD", "GET"):
            if method in load:
                body.append(line(f"{method} /directory", load, load[method]))
        if "HEAD@1" in load:
            body.append(line("HEAD /directory, one connection", load, load["HEAD@1"]))
        for method, m in (load.get("cross_check") or {}).items():
            body.append(line(f"{method} /directory (cross-check)", load, m))
    table = _table(["request", "workers", "connections", "generator", "req/s", "p50 ms", "p99 ms", "errors",
                    "requests", "gateway CPU µs/request", "gateway cores busy", "generator cores busy",
                    "load average after"], body)
    for workers, load in loads:
        if "signed_request_after_s" in load:
            after = load["signed_request_after_s"]
            table += (f"\n\nA legacy client's start-up through the gateway ({workers} worker"
                      f"{'s' if workers > 1 else ''}; process start, directory, new-reg "
                      f"answered 409): {_fmt(load.get('signed_request_before_s'), 2)} s before the load, "
                      + (f"{after:.2f} s right after it." if after is not None else
                         "**did not complete** right after it (see the notes)."))
    return table


def trace_table(results) -> str:
    """
    Where the time of one sequential certificate goes, per client step,
    both modes side by side, with the upstream requests each step caused.
    """
    parts = []
    for stack, name, label in SCENARIOS:
        traces = {mode: (_phase(results, stack, name, mode) or {}).get("trace") for mode in SEQUENTIAL_MODES}
        if not any(traces.values()):
            continue
        body = []
        for mode in SEQUENTIAL_MODES:
            traced = traces[mode]
            if not traced:
                continue
            certificates = traced["certificates"]
            for step, figures in traced["steps"].items():
                upstream = ", ".join(f"{kind} {count / certificates:.2f}"
                                     for kind, count in sorted(figures["upstream"].items()))
                body.append([mode, step, f"{figures['calls'] / certificates:.2f}",
                             f"{figures['seconds'] * 1000 / certificates:.1f}", upstream or "—"])
        counted = ", ".join(f"{m} {t['certificates']}" for m, t in traces.items() if t)
        parts.append(f"**{label}** (mean per certificate; certificates traced: {counted})\n")
        parts.append(_table(["mode", "client step", "calls", "ms", "upstream requests started during it"], body))
        parts.append("")
    return "\n".join(parts) if parts else "(not traced)"


def modes_text(phase) -> str:
    """
    The distribution's modes in one cell: certificates by number of client
    polls (authorization and order), each group's mean time -- ``2 polls:
    22 × 0.031 s; 3 polls: 18 × 0.131 s``.
    """
    polls = phase.get("cert_polls")
    if not polls or len(polls) != len(phase["durations"]):
        return "n/a (not recorded)"
    return "; ".join(f"{count} poll{'s' if count != 1 else ''}: {certificates} × {seconds:.3f} s"
                     for count, certificates, seconds in polls_histogram(polls, phase["durations"]))


#: Said under the issuance table, and in bench/README.md.
ISSUANCE_RULE = (
    "Issuance time is judged on the **mean** per certificate (N certificates issued one after another "
    "cost N × the mean), as the ratio gateway ÷ native of the means with a 95 % percentile bootstrap "
    f"interval ({MIN_CERTIFICATES_FOR_INTERVAL}+ certificates per mode; each resample draws the rounds "
    "again, paired (a round brings both modes' certificates: the machine's drift between rounds widens the "
    "interval), then each round's certificates, with replacement; seeded, so one results.json gives one "
    "interval). Verdict: **met** when the interval's upper end is ≤ the "
    "target, **MISSED** when its lower end is above it, **undecided** otherwise (the run cannot tell: "
    "more certificates, or a quieter machine). The median and p95 are information: with a bimodal "
    "native time (first authorization poll before or after the CA has validated) the median reports "
    "which mode half the certificates took."
)


def _issued_sequential_phases(results):
    """
    Each sequential phase that issued certificates, in the tables' order:
    ``(stack, name, label, mode, phase, native phase of its scenario)``.
    """
    for stack, name, label in SCENARIOS:
        native = _phase(results, stack, name, "native")
        for mode in SEQUENTIAL_MODES:
            phase = _phase(results, stack, name, mode)
            if phase and phase["issued"]:
                yield stack, name, label, mode, phase, native


def issuance_figures(results) -> dict:
    """
    The issuance table's figures for ``results.json`` (key
    ``issuance_time``): per sequential phase its mean, its mean's ratio to
    native with the interval and the verdict against the target, and its
    certificates by number of client polls.
    """
    figures = {}
    for stack, name, _, mode, phase, native in _issued_sequential_phases(results):
        entry = {"certificates": phase["issued"], "mean_s": mean(phase["durations"]),
                 "rounds": phase.get("round_sizes")}
        compared = None if mode == "native" else compare_means(phase, native)
        if compared:
            entry.update(ratio_of_means=compared["ratio"], interval_95=compared["interval"],
                         verdict_against_target=compared["verdict"], target=ISSUANCE_TARGET)
        polls = phase.get("cert_polls")
        if polls and len(polls) == len(phase["durations"]):
            entry["client_polls"] = [{"polls": count, "certificates": certificates, "mean_s": seconds}
                                     for count, certificates, seconds in
                                     polls_histogram(polls, phase["durations"])]
        figures[f"{stack}/{name}/{mode}"] = entry
    return figures


def issuance_table(results) -> str:
    """
    The sequential issuance times in full: each mode's mean, median and
    p95, the mean's ratio to native with its interval, and the modes.
    """
    body = []
    for _, _, label, mode, phase, native in _issued_sequential_phases(results):
        against = "—" if mode == "native" else _interval_text(compare_means(phase, native))
        body.append([label, mode, f"{phase['issued']} ({len(phase.get('round_sizes') or []) or '?'})",
                     _fmt(mean(phase["durations"])), _fmt(phase["latency"]["p50"]),
                     _fmt(phase["latency"]["p95"]), against, modes_text(phase)])
    if not body:
        return "(not measured)"
    return _table(["scenario", "mode", "certificates (rounds)", "mean s", "median s", "p95 s",
                   "mean ÷ native [95 % interval]",
                   "client polls (authorization and order): certificates × mean time"],
                  body) + "\n\n" + ISSUANCE_RULE


def memory_table(results) -> str:
    memory = results.get("memory")
    if not memory:
        return "(not measured)"
    body = [[s["label"], s["issued"], _fmt(s.get("VmRSS"), 1), _fmt(s.get("VmHWM"), 1),
             _fmt(s.get("gateway_cpu_ms_per_cert"), 1),
             " ".join(f"{p['VmRSS']:.1f}" for p in (s.get("processes") or {}).values()) or "n/a"]
            for s in memory["samples"]]
    workers = memory.get("workers", 1)
    note = (f"\n\n{workers} workers: the RSS figures are the largest worker's; the last column lists "
            "every process (the supervisor first)." if workers > 1 else "")
    return _table(["point", "issued", "RSS MB", "peak RSS MB", "gateway CPU ms/cert in the batch",
                   "RSS MB of each process"], body) + note


def profile_section(results) -> str:
    profiles = results.get("profiles")
    if not profiles:
        return ""
    parts = ["## Profiles (py-spy, gateway process)\n"]
    for name, summary in profiles.items():
        parts.append(f"**{name}** — {summary.get('samples', 0)} samples ({summary.get('file', '')})\n")
        if summary.get("inclusive"):
            parts.append(_table(["inclusive %", "function"],
                                [[p, f"`{n}`"] for n, p in summary["inclusive"]]))
            parts.append("")
        if summary.get("self"):
            parts.append(_table(["self %", "function"], [[p, f"`{n}`"] for n, p in summary["self"]]))
        parts.append("")
    return "\n".join(parts) + "\n"


def header(results) -> str:
    machine = results.get("machine", {})
    settings = results.get("settings", {})
    env = results.get("pebble_env", {})
    lines = [
        f"Date: {results.get('date', '?')}. Machine: {machine.get('nproc', '?')} cores "
        f"(`nproc`), {machine.get('memory_total', '?')} RAM (`free -h`), {machine.get('cpu_model', '?')}, "
        f"Linux {machine.get('kernel', '?')}, Python {machine.get('python', '?')}; load average "
        f"{machine.get('loadavg_at_start', '?')} at the start, {machine.get('loadavg_at_end', '?')} at the end.",
        f"Command: `{results.get('command', '?')}`"
        + (f" — took {results['elapsed_s'] / 60:.1f} min." if "elapsed_s" in results else "."),
        f"Settings: N = {settings.get('n')} single-name and {settings.get('n_multi')} 3-name certificates "
        f"per mode, sequentially; K = {', '.join(map(str, settings.get('concurrency', [])))}; "
        f"poll interval {settings.get('poll_interval_s')} s in both modes; "
        f"{settings.get('key_type')}; {settings.get('client_library')}; Pebble "
        + ", ".join(f"{k}={v}" for k, v in (env.get("reuse") or {}).items())
        + " for §1 and the reuse-on rows of §2; PEBBLE_AUTHZREUSE=0 for the reuse-off rows, §3 (a fresh "
        f"Pebble, proxy and gateway per K) and §5. Each measurement alternates the modes over "
        f"{settings.get('rounds', 1)} round(s). Gateway revision: {settings.get('gateway_revision', '?')}. "
        f"Gateway processes (--workers) for §3 and §4: {', '.join(map(str, settings.get('workers', [1])))}"
        f"; sections run: {', '.join(settings.get('sections', ['all']))}.",
    ]
    if settings.get("gateway_src"):
        lines.append(f"Gateway package from: `{settings['gateway_src']}` (not this checkout).")
    if results.get("aborted"):
        lines.append(f"**The run was aborted: {results['aborted']}** — rows after that point read n/a.")
    return "\n".join(lines)


def markdown(results) -> str:
    parts = [
        "# acme-gateway benchmark\n",
        header(results) + "\n",
        main_table(results) + "\n",
        "## Issuance time per certificate: mean, interval and modes (sequential)\n",
        issuance_table(results) + "\n",
        "## Upstream requests per certificate, by kind (counted at the pass-through in front of Pebble)\n",
        kinds_table(results) + "\n",
        "## Where the time goes (sequential certificates: client steps and the upstream requests "
        "that started during each)\n",
        trace_table(results) + "\n",
        "## Gateway-local HTTP load\n",
        load_table(results) + "\n",
        "## Gateway memory (fresh gateway process)\n",
        memory_table(results) + "\n",
    ]
    if results.get("memory_diagnosis"):
        parts.append(f"Allocation sites that grew (tracemalloc): `{results['memory_diagnosis']}`\n")
    profiles = profile_section(results)
    if profiles:
        parts.append(profiles)
    notes = results.get("notes") or []
    if notes:
        parts.append("## Notes\n")
        parts.extend(f"- {n}" for n in notes)
        parts.append("")
    return "\n".join(parts)


def summary(results, out: str, chart: Optional[str]) -> str:
    lines = [f"acme-gateway benchmark — {results.get('date', '?')}"]
    for row in rows(results):
        if row.key:
            lines.append(f"  {row.verdict.replace('**', ''):>8}  {row.key}: gateway {row.legacy}, "
                         f"native {row.native}, ratio {row.ratio} (target {row.target})")
    lines.append(f"tables: {out}/results.md; data: {out}/results.json"
                 + (f"; chart: {chart}" if chart else "; chart: none"))
    for note in results.get("notes") or []:
        lines.append(f"note: {note}")
    return "\n".join(lines)


# ---------------------------------------------------------------------------
# the chart
# ---------------------------------------------------------------------------

def chart(results, path: str) -> Optional[str]:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    colors = {"native": "#4477aa", "legacy": "#ee6677"}
    fig, axes = plt.subplots(2, 3, figsize=(16, 9))
    fig.suptitle(f"acme-gateway vs native ACME v2 client — {results.get('date', '')}, "
                 f"{results.get('machine', {}).get('nproc', '?')} cores", fontsize=13)

    def bars(ax, groups, values, title, ylabel):
        width = 0.38
        for offset, mode in ((-width / 2, "native"), (width / 2, "legacy")):
            heights = [v.get(mode) or 0 for v in values]
            ax.bar([i + offset for i in range(len(groups))], heights, width,
                   label="native v2" if mode == "native" else "legacy via gateway", color=colors[mode])
        ax.set_xticks(range(len(groups)))
        ax.set_xticklabels(groups, fontsize=8)
        ax.set_title(title, fontsize=10)
        ax.set_ylabel(ylabel)
        ax.legend(fontsize=8)

    groups, values = [], []
    for name, label in (("single", "1 name"), ("multi3", "3 names")):
        for stat in ("p50", "p95"):
            groups.append(f"{label}\n{stat}")
            entry = {}
            for mode in ("native", "legacy"):
                p = _phase(results, "reuse", name, mode)
                entry[mode] = p["latency"][stat] if p and p["issued"] else None
            values.append(entry)
    bars(axes[0][0], groups, values, "1. issuance time per certificate (sequential)", "seconds")

    groups, values = [], []
    for stack, name, label in SCENARIOS:
        groups.append(label.replace(", ", "\n"))
        entry = {}
        for mode in ("native", "legacy"):
            p = _phase(results, stack, name, mode)
            entry[mode] = p.get("requests_per_cert") if p and p["issued"] else None
        values.append(entry)
    bars(axes[0][1], groups, values, "2. upstream requests per certificate", "requests")

    ks = results.get("settings", {}).get("concurrency", [])
    for ax, getter, title, ylabel in (
        (axes[0][2], lambda p: p["certs_per_s"], "3. throughput", "certificates / s"),
        (axes[1][0], lambda p: p["latency"]["p99"], "3. p99 latency per certificate", "seconds"),
    ):
        for mode in ("native", "legacy"):
            xs, ys = [], []
            for k in ks:
                p = _phase(results, f"k{k}", f"k{k}", mode)
                if p and p["issued"]:
                    xs.append(k)
                    ys.append(getter(p))
            ax.plot(xs, ys, marker="o", color=colors[mode],
                    label="native v2" if mode == "native" else "legacy via gateway")
        ax.set_xscale("log", base=2)
        ax.set_xticks(ks or [1])
        ax.set_xticklabels([str(k) for k in ks] or ["1"])
        ax.set_xlabel("concurrent clients K")
        ax.set_title(title, fontsize=10)
        ax.set_ylabel(ylabel)
        ax.legend(fontsize=8)

    ax = axes[1][1]
    load = results.get("http_load", {})
    labels, p50s, p99s = [], [], []
    for method in ("HEAD", "GET"):
        if method in load:
            labels.append(f"{method}\n{load[method]['rps']:.0f} req/s [{load[method]['tool']}]")
            p50s.append(load[method]["p50_ms"] or 0)
            p99s.append(load[method]["p99_ms"] or 0)
    ax.bar([i - 0.2 for i in range(len(labels))], p50s, 0.4, label="p50", color="#228833")
    ax.bar([i + 0.2 for i in range(len(labels))], p99s, 0.4, label="p99", color="#ccbb44")
    ax.axhline(5.0, color="black", linestyle="--", linewidth=1, label="HEAD p99 target 5 ms")
    ax.set_xticks(range(len(labels)))
    ax.set_xticklabels(labels, fontsize=8)
    ax.set_title(f"4. /directory at {load.get('connections', 64)} connections", fontsize=10)
    ax.set_ylabel("ms")
    ax.legend(fontsize=8)

    ax = axes[1][2]
    memory = results.get("memory")
    if memory:
        xs = [s["issued"] for s in memory["samples"]]
        ys = [s["VmRSS"] for s in memory["samples"]]
        ax.plot(xs, ys, marker="o", color=colors["legacy"], label="gateway RSS")
        ax.axhline(ys[0] + 10, color="black", linestyle="--", linewidth=1, label="idle + 10 MB")
        ax.legend(fontsize=8)
    ax.set_title("5. gateway resident memory", fontsize=10)
    ax.set_xlabel("issuances")
    ax.set_ylabel("MB")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
