"""
Closed-loop HTTP load against the gateway: requests per second and p50/p99
latency, from Debian's ``wrk`` or ``hey``, or the built-in Python generator
when neither is installed.

``wrk`` cannot measure ``HEAD`` against the gateway: Twisted answers HEAD
without ``Content-Length`` (allowed: a HEAD response has no body), and
``wrk``'s response parser does not know the request was HEAD, so it waits
for a body until the connection closes and counts no request at all.  So
``auto`` uses ``wrk`` for GET and ``hey`` (Go's HTTP client, which knows)
for HEAD, and also runs GET through ``hey`` so that HEAD and GET can be
compared from one tool.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile

NOTES: list = []


def _note(text: str) -> None:
    if text not in NOTES:
        NOTES.append(text)


def pick(method: str, tool: str = "auto") -> str:
    if tool != "auto":
        if tool == "wrk" and method == "HEAD":
            _note("wrk cannot parse the gateway's HEAD responses (no Content-Length); HEAD used hey "
                  "or the Python generator instead")
        else:
            if tool == "python" or shutil.which(tool):
                return tool
            _note(f"{tool} is not installed; fell back to the next load generator")
    if method != "HEAD" and shutil.which("wrk"):
        return "wrk"
    if shutil.which("hey"):
        return "hey"
    _note("neither wrk nor hey is installed (apt-get install wrk hey): HTTP load used the built-in "
          "Python generator, which shares the 2 cores with the gateway and reads pessimistic")
    return "python"


def run(url: str, method: str, connections: int, duration: float, tool: str = "auto") -> dict:
    chosen = pick(method, tool)
    if chosen == "wrk":
        return _wrk(url, method, connections, duration)
    if chosen == "hey":
        return _hey(url, method, connections, duration)
    from bench import loadgen

    return loadgen.run(url, method, connections, duration)


def cross_check(url: str, connections: int, duration: float):
    """GET through hey as well, when GET used wrk and hey exists."""
    if shutil.which("wrk") and shutil.which("hey"):
        return {"GET": _hey(url, "GET", connections, duration)}
    return None


_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1000.0, "m": 60000.0}


def _duration_ms(text: str) -> float:
    match = re.match(r"^([0-9.]+)(us|ms|s|m)$", text.strip())
    if not match:
        raise ValueError(f"unparsable wrk duration {text!r}")
    return float(match.group(1)) * _UNITS[match.group(2)]


def _wrk(url: str, method: str, connections: int, duration: float) -> dict:
    threads = max(1, min(2, os.cpu_count() or 1))
    command = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{max(1, round(duration))}s", "--latency"]
    script = None
    if method != "GET":
        script = tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False)
        script.write(f'wrk.method = "{method}"\n')
        script.close()
        command += ["-s", script.name]
    try:
        output = subprocess.run(command + [url], capture_output=True, text=True,
                                timeout=duration + 60, check=True).stdout
    finally:
        if script:
            os.unlink(script.name)
    percentiles = dict(re.findall(r"^\s+(50|75|90|99)%\s+(\S+)$", output, re.M))
    requests = int(re.search(r"(\d+) requests in", output).group(1))
    rps = float(re.search(r"Requests/sec:\s+([0-9.]+)", output).group(1))
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", output)
    socket_errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output)
    errors = int(non2xx.group(1)) if non2xx else 0
    if socket_errors:
        errors += sum(int(g) for g in socket_errors.groups())
    return {
        "tool": "wrk",
        "requests": requests,
        "rps": rps,
        "p50_ms": _duration_ms(percentiles["50"]) if "50" in percentiles else None,
        "p99_ms": _duration_ms(percentiles["99"]) if "99" in percentiles else None,
        "errors": errors,
    }


def _hey(url: str, method: str, connections: int, duration: float) -> dict:
    command = ["hey", "-z", f"{duration:g}s", "-c", str(connections), "-m", method, url]
    output = subprocess.run(command, capture_output=True, text=True, timeout=duration + 60,
                            check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([0-9.]+)", output).group(1))
    percentiles = dict(re.findall(r"^\s+(\d+)% in ([0-9.]+) secs", output, re.M))
    statuses = re.findall(r"^\s+\[(\d+)\]\s+(\d+) responses", output, re.M)
    requests = sum(int(n) for _, n in statuses)
    errors = sum(int(n) for code, n in statuses if not code.startswith("2"))
    error_block = output.split("Error distribution:", 1)
    if len(error_block) == 2:
        errors += sum(int(n) for n in re.findall(r"^\s+\[(\d+)\]", error_block[1], re.M))
    return {
        "tool": "hey",
        "requests": requests,
        "rps": rps,
        "p50_ms": float(percentiles["50"]) * 1000 if "50" in percentiles else None,
        "p99_ms": float(percentiles["99"]) * 1000 if "99" in percentiles else None,
        "errors": errors,
    }
