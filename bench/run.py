#!/usr/bin/env python3
"""
acme-gateway benchmarks: what the gateway costs, measured side by side
against a native ACME v2 client, in one run, against one local Pebble.

    .venv/bin/python bench/run.py                      # the full run (~10 min on 2 cores)
    .venv/bin/python bench/run.py --smoke --out DIR    # N=2, K=1, tiny memory run (CI)
    ./bench/run [ARGS]                                 # installs wrk/hey/matplotlib first

Both sides use the acme 1.32 library from the legacy venv: native =
``ClientV2`` straight to Pebble, legacy = the v1 ``Client`` through the
gateway (its own process, ``acme-gateway serve``); for sequential 3-name
certificates also ``native-v1``, ``ClientV2`` straight to Pebble following
the v1 shape (one order per name, then one for all: what the legacy flow
makes the gateway send), to tell the v1 protocol's cost from the gateway's.  Both reach Pebble through
one counting TLS pass-through (``bench/helper.py``), so upstream requests and
orders are counted the same way for both.  Every figure is a ratio against
the native baseline measured in the same run.  See ``bench/README.md``.

Output in ``--out`` (default ``bench/results/<UTC date-time>``):
``results.md`` (the tables), ``results.json`` (everything), ``chart.png``
(when matplotlib is installed), logs under ``work/`` with ``--keep-work``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import types
import urllib.request
from typing import Dict, List, Optional

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
REPO_ROOT = os.path.dirname(BENCH_DIR)
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)

from bench import report  # noqa: E402
from bench.stats import summarize  # noqa: E402

DEFAULT_LEGACY_VENV = os.path.join(REPO_ROOT, ".venvs", "certbot1")
PEBBLE_BENCH_ENV = {"PEBBLE_VA_NOSLEEP": "1", "PEBBLE_WFE_NONCEREJECT": "0"}
CLK_TCK = os.sysconf("SC_CLK_TCK")


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", flush=True)


# ---------------------------------------------------------------------------
# process accounting
# ---------------------------------------------------------------------------

def cpu_seconds(pid: int) -> float:
    """utime + stime of a process, from /proc (its own accounting)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def process_tree(pid: int) -> List[int]:
    """
    ``pid`` and its descendants (a ``--workers`` supervisor and its
    workers), from /proc.
    """
    found = [pid]
    for current in found:
        try:
            tasks = os.listdir(f"/proc/{current}/task")
        except OSError:
            continue
        for task in tasks:
            try:
                with open(f"/proc/{current}/task/{task}/children") as f:
                    found.extend(int(child) for child in f.read().split())
            except OSError:
                pass
    return found


def rss_mb(pid: int) -> Dict[str, float]:
    """VmRSS and VmHWM in MB (10^6 bytes)."""
    values = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            name, _, rest = line.partition(":")
            if name in ("VmRSS", "VmHWM"):
                values[name] = int(rest.split()[0]) * 1024 / 1e6
    return values


def gateway_rss(gateway) -> Dict[str, object]:
    """
    RSS of a gateway: ``VmRSS``/``VmHWM`` of the process serving (the
    largest worker's, with ``--workers``), and every process's by PID.
    """
    processes = {}
    for pid in gateway_pids(gateway):
        try:
            sizes = rss_mb(pid)
        except OSError:
            continue
        # A child that has just exited (a zombie until it is reaped, such
        # as a DNS hook) still has /proc/PID/status but no VmRSS line: it
        # has no memory to count.
        if "VmRSS" in sizes:
            processes[str(pid)] = sizes
    if not processes:
        # Every process of it has ended: a memory figure now would be
        # nothing's, so the benchmark stops and says why.
        tail = gateway.log() if hasattr(gateway, "log") else ""
        raise RuntimeError("the gateway is not running (it exited); the end of its output:\n"
                           + "\n".join(tail.splitlines()[-15:]))
    serving = [p for pid, p in processes.items() if int(pid) != gateway.process.pid] \
        if len(processes) > 1 else list(processes.values())
    largest = max(serving, key=lambda p: p["VmRSS"])
    return {**largest, "processes": processes}


def load_line(method: str, connections: int, measured: dict) -> str:
    """
    The log line of one /directory load: a generator may return no
    percentiles (``hey`` when every request failed or none finished), and
    that must read "n/a" rather than abort the whole benchmark.
    """
    cpu = measured.get("gateway_cpu_us_per_request")
    return (f"  {method} /directory @{connections}: {measured['rps']:.0f} req/s, "
            f"p50 {report._fmt(measured.get('p50_ms'), 2, ' ms')}, "
            f"p99 {report._fmt(measured.get('p99_ms'), 2, ' ms')} ({measured['tool']}); gateway CPU "
            f"{report._fmt(cpu, 0, ' us/request')}, "
            f"{report._fmt(measured.get('gateway_cores_busy'), 2, ' cores busy')}")


def machine_info() -> dict:
    cpu = platform.processor() or "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        memory = subprocess.run(["free", "-h"], capture_output=True, text=True, timeout=10).stdout
        total = memory.splitlines()[1].split()[1]
    except (OSError, IndexError, subprocess.SubprocessError):
        total = "?"
    return {"nproc": os.cpu_count(), "memory_total": total, "cpu_model": cpu,
            "kernel": platform.release(), "python": platform.python_version(),
            "loadavg_at_start": load_average()}


def gateway_revision(src: Optional[str]) -> str:
    """The commit measured, and whether gateway/ had uncommitted changes (read-only git)."""
    if src:
        return f"copy at {src}"
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO_ROOT, capture_output=True,
                              text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "gateway"], cwd=REPO_ROOT,
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{head or 'unknown'}{' + uncommitted changes in gateway/' if dirty else ''}"


def load_average() -> str:
    """The 1/5/15-minute load averages: other work on the machine skews every figure."""
    try:
        with open("/proc/loadavg") as f:
            return " ".join(f.read().split()[:3])
    except OSError:
        return "?"


# ---------------------------------------------------------------------------
# the stack: DNS, Pebble, the helper (counting proxy + http-01), the gateway
# ---------------------------------------------------------------------------

def make_key(path: str) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1())
    with open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()))


class Helper:
    """bench/helper.py as a child process (stopped by its PID)."""

    def __init__(self, workdir: str, pebble, webroot: str):
        from gateway.process.devstack import make_tls_certificates

        self.workdir = workdir
        self.tls = make_tls_certificates(os.path.join(workdir, "proxy-tls"))
        self.log_path = os.path.join(workdir, f"helper-{pebble.port}.log")
        command = [sys.executable, os.path.join(BENCH_DIR, "helper.py"),
                   "--upstream", f"https://localhost:{pebble.port}", "--upstream-ca", pebble.ca_bundle,
                   "--tls-cert", self.tls["cert"], "--tls-key", self.tls["key"],
                   "--http01-port", str(pebble.http_port), "--webroot", webroot]
        self.process = subprocess.Popen(command, cwd=REPO_ROOT, stdout=subprocess.PIPE,
                                        stderr=open(self.log_path, "wb"), text=True)
        line = _read_line(self.process, time.monotonic() + 30)
        if not line:
            raise RuntimeError(f"bench helper did not start: {_tail(self.log_path)}")
        ports = json.loads(line)
        self.proxy_port, self.control_port = ports["proxy_port"], ports["control_port"]

    @property
    def directory_url(self) -> str:
        return f"https://localhost:{self.proxy_port}/dir"

    @property
    def ca_bundle(self) -> str:
        return self.tls["ca"]

    def counts(self) -> dict:
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with opener.open(f"http://127.0.0.1:{self.control_port}/counts", timeout=10) as response:
            return json.loads(response.read())

    def timeline(self) -> list:
        """The requests passed through lately: ``[kind, status, start, end]`` (wall clock)."""
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with opener.open(f"http://127.0.0.1:{self.control_port}/timeline", timeout=10) as response:
            return json.loads(response.read())

    def stop(self):
        _stop(self.process)


def _stop(process: Optional[subprocess.Popen], timeout: float = 10) -> None:
    if process is None or process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _tail(path: str, lines: int = 40) -> str:
    try:
        with open(path, errors="replace") as f:
            return "".join(f.readlines()[-lines:])
    except OSError as error:
        return f"({path}: {error})"


def _read_line(process: subprocess.Popen, deadline: float) -> str:
    """One line of a child's stdout, or '' at EOF or the deadline."""
    selector = selectors.DefaultSelector()
    selector.register(process.stdout, selectors.EVENT_READ)
    try:
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return ""
            if selector.select(min(remaining, 1.0)):
                return process.stdout.readline()
            if process.poll() is not None:
                return process.stdout.readline()
    finally:
        selector.unregister(process.stdout)


def start_gateway(workdir: str, helper: Helper, keys_dir: str, name: str,
                  gateway_src: Optional[str] = None, tracemalloc_file: Optional[str] = None,
                  state: Optional[str] = None, env: Optional[dict] = None, workers: int = 1):
    """
    ``acme-gateway serve`` (through bench/gateway_main.py) in front of the
    proxy; ``state`` a PostgreSQL URI for a replica (its password in ``env``);
    ``workers`` > 1 serves it from that many processes (``--workers``).
    """
    from tests.support.gateway_process import GatewayProcess

    prefix = [sys.executable, os.path.join(BENCH_DIR, "gateway_main.py")]
    if gateway_src:
        prefix += ["--bench-src", gateway_src]
    if tracemalloc_file:
        prefix += ["--bench-tracemalloc", tracemalloc_file]
    prefix.append("--")

    class BenchGateway(GatewayProcess):
        def command(self):
            return prefix + [
                "serve",
                "--upstream", self.pebble.directory_url,
                "--upstream-ca-bundle", self.pebble.ca_bundle,
                "--keys", self.keys_dir,
                "--state", self.state,
                "--listen", f"tcp:{self.port}:interface=127.0.0.1",
                *(["--workers", str(workers)] if workers > 1 else []),
                *self.extra_args,
            ]

    if gateway_src and workers > 1:
        # The workers are ``python -m gateway``: the same package for them.
        env = dict(env or {}, PYTHONPATH=os.path.abspath(gateway_src))
    upstream = types.SimpleNamespace(directory_url=helper.directory_url, ca_bundle=helper.ca_bundle)
    gateway = BenchGateway(os.path.join(workdir, name), upstream, keys_dir, state=state, env=env)
    gateway.workers = workers
    return gateway.start(timeout=60)


class Stack:
    """One Pebble (with the given authorization reuse), its helper and a gateway."""

    def __init__(self, bench: "Bench", label: str, authz_reuse: int, workers: int = 1):
        from tests.support.stack import Pebble, free_port

        self.bench = bench
        self.workers = workers
        self.label = label
        self.workdir = os.path.join(bench.workdir, label)
        os.makedirs(self.workdir, exist_ok=True)
        self.webroot = os.path.join(self.workdir, "webroot")
        os.makedirs(self.webroot, exist_ok=True)
        env = dict(PEBBLE_BENCH_ENV, PEBBLE_AUTHZREUSE=str(authz_reuse))
        self.pebble_env = env
        self.authz_reuse = authz_reuse
        self.pebble = Pebble(os.path.join(self.workdir, "pebble"), bench.dns.address,
                             http_port=free_port(), env=env).start()
        self.helper = None
        self.gateway = None
        try:
            self.helper = Helper(self.workdir, self.pebble, self.webroot)
            self.gateway = self.start_gateway()
        except Exception:
            self.stop()
            raise

    def start_gateway(self):
        return start_gateway(self.workdir, self.helper, self.bench.legacy_keys_dir, "gateway",
                             self.bench.args.gateway_src, workers=self.workers)

    def new_gateway(self, name: str, tracemalloc_file: Optional[str] = None, workers: int = 1):
        return start_gateway(self.workdir, self.helper, self.bench.legacy_keys_dir, name,
                             self.bench.args.gateway_src, tracemalloc_file, workers=workers)

    def stop(self):
        for part in (self.gateway, self.helper, self.pebble):
            if part is not None:
                try:
                    part.stop()
                except Exception as error:  # keep stopping the rest
                    log(f"stopping {part}: {error}")


class ReplicaSet:
    """
    ``count`` gateways on one PostgreSQL database behind nginx running the
    compose example's balancer (deploy/compose/balancer.conf): what the
    drivers see as one gateway.  Its CPU is the sum of the replicas'.
    """

    def __init__(self, workdir: str, helper: Helper, bench: "Bench", count: int):
        from tests.support.nginx import NginxBalancer
        from tests.support.stack import free_port

        cluster = bench.postgres()
        database = cluster.create_database()
        self.gateways = []
        self.balancer = None
        try:
            for index in range(count):
                self.gateways.append(start_gateway(
                    workdir, helper, bench.legacy_keys_dir, f"replica-{index}", bench.args.gateway_src,
                    state=cluster.uri(database), env={"ACME_GATEWAY_STATE_PASSWORD": cluster.password}))
            self.balancer = NginxBalancer(os.path.join(workdir, "balancer"), free_port(),
                                          [f"127.0.0.1:{g.port}" for g in self.gateways]).start()
        except Exception:
            self.stop()
            raise

    @property
    def directory_url(self) -> str:
        return self.balancer.url + "/directory"

    @property
    def pids(self) -> List[int]:
        return [g.process.pid for g in self.gateways]

    def stop(self):
        if self.balancer is not None:
            self.balancer.stop()
        for gateway in self.gateways:
            gateway.stop()


class ReplicaStack(Stack):
    """A `Stack` whose gateway is a `ReplicaSet` (``count`` replicas on PostgreSQL)."""

    def __init__(self, bench: "Bench", label: str, authz_reuse: int, count: int):
        self.count = count
        super().__init__(bench, label, authz_reuse)

    def start_gateway(self):
        return ReplicaSet(self.workdir, self.helper, self.bench, self.count)


def gateway_pids(gateway) -> List[int]:
    """
    The processes of a gateway: one, a ``--workers`` supervisor and its
    workers, or every replica of a `ReplicaSet` (with theirs).
    """
    roots = getattr(gateway, "pids", None) or [gateway.process.pid]
    return [pid for root in roots for pid in process_tree(root)]


def gateway_cpu_seconds(gateway) -> float:
    """CPU seconds of a gateway: the sum over its processes (`gateway_pids`)."""
    total = 0.0
    for pid in gateway_pids(gateway):
        try:
            total += cpu_seconds(pid)
        except OSError:  # a worker that just ended
            pass
    return total


# ---------------------------------------------------------------------------
# client phases
# ---------------------------------------------------------------------------

class Bench:
    def __init__(self, args, out: str, workdir: str):
        self.args = args
        self.out = out
        self.workdir = workdir
        self.legacy_python = os.path.join(args.legacy_venv, "bin", "python")
        self.results: dict = {"phases": {}, "notes": []}
        self.dns = None
        self.stacks: List[Stack] = []
        self.keys_dir = os.path.join(workdir, "keys")
        self.legacy_keys_dir = os.path.join(self.keys_dir, "legacy")
        self.native_keys_dir = os.path.join(self.keys_dir, "native")
        self.accounts = max(max(args.concurrency), args.memory_clients, args.replica_clients, 1)
        self.driver_seq = 0
        self.postgres_cluster = None

    def postgres(self):
        """The run's PostgreSQL (durable: fsync on, as in production), started on first use."""
        if self.postgres_cluster is None:
            from tests.support.postgres import PostgresCluster

            self.postgres_cluster = PostgresCluster(durable=True).start()
        return self.postgres_cluster

    def note(self, text: str) -> None:
        self.results["notes"].append(text)
        log("note: " + text)

    # -- setup -----------------------------------------------------------------

    def prepare(self):
        for d in (self.legacy_keys_dir, self.native_keys_dir):
            os.makedirs(d, exist_ok=True)
        for i in range(self.accounts):
            make_key(os.path.join(self.legacy_keys_dir, f"legacy-{i}.pem"))
            make_key(os.path.join(self.native_keys_dir, f"native-{i}.pem"))
        # The native client following the v1 shape runs sequentially only,
        # with an account of its own.
        make_key(os.path.join(self.native_keys_dir, f"{SHAPED}-0.pem"))
        from tests.support.stack import DNSServer

        for attempt in range(3):  # its TCP port is its UDP port: taken, now and then
            try:
                self.dns = DNSServer(os.path.join(self.workdir, "dns")).start()
                break
            except RuntimeError:
                if attempt == 2:
                    raise
                log("the loopback DNS server could not bind its port; trying another")

    def start_stack(self, label: str, authz_reuse: int, workers: int = 1) -> Stack:
        log(f"starting Pebble (PEBBLE_AUTHZREUSE={authz_reuse}), the counting proxy and the gateway "
            f"({workers} worker{'s' if workers > 1 else ''}) [{label}]")
        stack = Stack(self, label, authz_reuse, workers)
        self.stacks.append(stack)
        return stack

    def stop_stack(self, stack: Stack):
        stack.stop()
        self.stacks.remove(stack)

    def stop_all(self):
        for stack in list(self.stacks):
            self.stop_stack(stack)
        if self.dns is not None:
            self.dns.stop()
            self.dns = None
        if self.postgres_cluster is not None:
            self.postgres_cluster.stop()
            self.postgres_cluster = None

    # -- one phase: W drivers, each with a list of certificates ----------------

    def run_phase(self, stack: Stack, mode: str, name: str, plan: List[List[List[str]]],
                  gateway=None, record: bool = True) -> dict:
        """
        Run ``len(plan)`` drivers of ``mode`` concurrently (driver i issues
        ``plan[i]``, a list of name lists, one after another) behind a start
        barrier, and measure: per-certificate latency, wall time, upstream
        requests and orders (counted at the proxy), gateway and Pebble CPU.
        """
        gateway = gateway or stack.gateway
        phase_dir = os.path.join(self.workdir, "drivers", f"{stack.label}-{name}-{mode}")
        os.makedirs(phase_dir, exist_ok=True)
        processes = []
        try:
            for index, certs in enumerate(plan):
                self.driver_seq += 1
                job = {
                    "mode": mode,
                    "key": os.path.join(self.legacy_keys_dir if mode == "legacy" else self.native_keys_dir,
                                        f"{mode}-{index}.pem"),
                    "directory": gateway.directory_url if mode == "legacy" else stack.helper.directory_url,
                    "ca_bundle": None if mode == "legacy" else stack.helper.ca_bundle,
                    "webroot": stack.webroot,
                    "poll_interval": self.args.poll_interval,
                    "timeout": self.args.cert_timeout,
                    "certs": certs,
                    "out": os.path.join(phase_dir, f"result-{index}.json"),
                }
                job_path = os.path.join(phase_dir, f"job-{index}.json")
                with open(job_path, "w") as f:
                    json.dump(job, f)
                env = {k: v for k, v in os.environ.items()
                       if k not in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "PYTHONPATH", "VIRTUAL_ENV")
                       and not k.lower().endswith("_proxy")}
                env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"
                processes.append(subprocess.Popen(
                    [self.legacy_python, os.path.join(BENCH_DIR, "driver.py"), job_path],
                    stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                    stderr=open(os.path.join(phase_dir, f"driver-{index}.log"), "wb"),
                    text=True, env=env, cwd=phase_dir,
                ))
            deadline = time.monotonic() + 60 + 2 * len(plan)
            for index, process in enumerate(processes):
                if _read_line(process, deadline).strip() != "READY":
                    raise RuntimeError(f"driver {mode} #{index} did not get ready:\n"
                                       + _tail(os.path.join(phase_dir, f"driver-{index}.log")))
            counts_before = stack.helper.counts()
            gateway_cpu_before = gateway_cpu_seconds(gateway)
            pebble_cpu_before = cpu_seconds(stack.pebble.process.pid)
            started = time.monotonic()
            for process in processes:
                process.stdin.write("go\n")
                process.stdin.flush()
            total = sum(len(c) for c in plan)
            budget = 120 + self.args.cert_timeout * max(len(c) for c in plan)
            for index, process in enumerate(processes):
                try:
                    process.wait(max(1, started + budget - time.monotonic()))
                except subprocess.TimeoutExpired:
                    raise RuntimeError(f"driver {mode} #{index} did not finish in {budget}s")
            finished = time.monotonic()
            counts_after = stack.helper.counts()
            gateway_cpu = gateway_cpu_seconds(gateway) - gateway_cpu_before
            pebble_cpu = cpu_seconds(stack.pebble.process.pid) - pebble_cpu_before
        finally:
            for process in processes:
                _stop(process)
        results, chains = [], []
        for index in range(len(plan)):
            path = os.path.join(phase_dir, f"result-{index}.json")
            if not os.path.exists(path):
                raise RuntimeError(f"driver {mode} #{index} wrote no result:\n"
                                   + _tail(os.path.join(phase_dir, f"driver-{index}.log")))
            with open(path) as f:
                data = json.load(f)
            results.extend(data["results"])
            if data.get("first_chain"):
                chains.append((data["results"][0]["names"], data["first_chain"]))
        ok = [r for r in results if r["ok"]]
        failed = [r for r in results if not r["ok"]]
        if ok:
            wall = max(r["end"] for r in ok) - min(r["start"] for r in results)
        else:
            wall = finished - started
        phase = derive({
            "mode": mode, "name": name, "stack": stack.label, "clients": len(plan), "rounds": 1,
            "attempted": total, "issued": len(ok), "failed": len(failed),
            "errors": sorted({r["error"] for r in failed})[:5],
            "durations": [r["end"] - r["start"] for r in ok],
            # Per issued certificate, in the order of ``durations``: its
            # client polls (the distribution's modes), and how many
            # of them this round issued (the bootstrap's strata).
            "cert_polls": [r["polls"] for r in ok],
            "round_sizes": [len(ok)],
            "polls": sum(r["polls"] for r in ok),
            "wall_s": wall,
            "upstream": _count_delta(counts_before, counts_after),
            "gateway_cpu_s": gateway_cpu,
            "pebble_cpu_s": pebble_cpu,
        })
        if len(plan) == 1 and name in TRACED_PHASES and ok:
            phase["trace"] = trace(ok, stack.helper.timeline())
        if chains and self.args.verify:
            phase["verified"] = self.verify(stack, chains[0])
        key = f"{stack.label}/{name}/{mode}"
        if record:
            self.record(key, phase)
        _log_phase(key, phase)
        return phase

    def record(self, key: str, phase: dict) -> dict:
        """Keep a phase; a second round of the same key is merged into the first."""
        phases = self.results["phases"]
        phases[key] = merge(phases[key], phase) if key in phases else phase
        return phases[key]

    def verify(self, stack: Stack, sample) -> bool:
        """Check one issued chain against Pebble's root (cryptography's verifier)."""
        from cryptography import x509

        from tests.support.stack import verify_chain

        names, pem = sample
        certificates = x509.load_pem_x509_certificates(pem.encode("ascii"))
        leaf = certificates[0].public_bytes(_der())
        issuers = [c.public_bytes(_der()) for c in certificates[1:]]
        try:
            verify_chain(leaf, issuers, stack.pebble.root_pem(), names[0])
        except Exception as error:
            self.note(f"chain verification failed for {names}: {error}")
            return False
        return True

    # -- the plan ----------------------------------------------------------------

    @staticmethod
    def names(prefix: str, count: int, per_cert: int) -> List[List[str]]:
        return [[f"{prefix}-{i}-{j}.bench.test" for j in range(per_cert)] for i in range(count)]

    def alternating(self, stack: Stack, name: str, plan_for, rounds: int, restart=None,
                    modes=("native", "legacy")):
        """
        Each of ``modes``, ``rounds`` times, alternating their order
        (native, legacy, legacy, native, ...: ``round_modes``) so that
        drift on a shared machine falls on all; the rounds of a mode are
        merged.

        With ``restart`` (a function returning a fresh stack), a round in
        which certificates failed is run again on a fresh stack, at most
        twice: Debian's Pebble 2.4 sometimes stops answering under many
        concurrent clients (its handlers are entered and never return),
        whichever mode is running.  Every rerun is noted.
        """
        for index in range(rounds):
            for mode in round_modes(modes, index):
                phase = self.run_phase(stack, mode, name, plan_for(mode, index), record=False)
                attempt = 0
                while phase["failed"] and restart is not None and attempt < 2:
                    attempt += 1
                    self.note(f"{stack.label}/{name}/{mode} round {index + 1}: {phase['failed']} of "
                              f"{phase['attempted']} certificates failed ({phase['errors'][0][:160]}); "
                              f"Pebble's goroutines were dumped to {stack.pebble.log_path} and the round "
                              "was run again on a fresh Pebble, proxy and gateway")
                    self.dump_pebble(stack)
                    stack = restart(stack)
                    phase = self.run_phase(stack, mode, name, plan_for(mode, index), record=False)
                self.record(f"{stack.label}/{name}/{mode}", phase)
        return stack

    def dump_pebble(self, stack: Stack) -> None:
        """SIGQUIT makes Go print every goroutine's stack (to Pebble's log) and exit."""
        process = stack.pebble.process
        if process is not None and process.poll() is None:
            os.kill(process.pid, signal.SIGQUIT)
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                pass
            keep = os.path.join(self.out, f"pebble-goroutines-{stack.label}-{int(time.time())}.log")
            try:
                shutil.copyfile(stack.pebble.log_path, keep)
            except OSError:
                pass

    @staticmethod
    def split(total: int, rounds: int, index: int) -> int:
        return total // rounds + (1 if index < total % rounds else 0)

    def sequential(self, stack: Stack, tag: str):
        rounds = self.args.rounds
        n, m = self.args.n, self.args.n_multi
        self.alternating(stack, "single", lambda mode, i: [self.names(
            f"{tag}{MODE_TAGS[mode]}s{i}", self.split(n, min(rounds, n), i), 1)], min(rounds, n))
        # With authorization reuse on, also the native client following
        # the v1 shape (its last order needs the CA to reuse the
        # authorizations it validated, as the gateway's new-cert does).
        self.alternating(stack, "multi3", lambda mode, i: [self.names(
            f"{tag}{MODE_TAGS[mode]}m{i}", self.split(m, min(rounds, m), i), 3)], min(rounds, m),
            modes=("native", SHAPED, "legacy") if stack.authz_reuse else ("native", "legacy"))
        if stack.authz_reuse:
            # The same certificates again: each a renewal of one the client
            # holds (through the gateway: one planned order for the three
            # names).  Without reuse the gateway's first 3-name issuance
            # fails (no means here), so there is nothing to renew.
            self.alternating(stack, "renew3", lambda mode, i: [self.names(
                f"{tag}{MODE_TAGS[mode]}m{i}", self.split(m, min(rounds, m), i), 3)], min(rounds, m))

    def warm_up(self, stack: Stack, tag: str, gateway=None):
        """Register every account and issue one certificate per mode (untimed)."""
        clients = self.accounts
        for mode in ("native", "legacy"):
            short = "n" if mode == "native" else "l"
            plan = [self.names(f"{tag}w{short}{i}", 1 if i == 0 else 0, 1) for i in range(clients)]
            self.run_phase(stack, mode, "warmup", plan, gateway=gateway, record=False)

    def concurrency(self):
        """
        Each K on a fresh stack (Pebble with authorization reuse off: the
        names are unique, so reuse changes nothing but Pebble's lock
        traffic), both modes alternating over ``--rounds`` rounds.
        """
        for workers in self.args.workers:
            for k in self.args.concurrency:
                self.concurrency_of(k, workers)

    def concurrency_of(self, k: int, workers: int):
        """One K against a gateway of ``workers`` processes (stack ``k<K>``, ``k<K>w<N>``)."""
        label = concurrency_label(k, workers)
        holder = {"stack": self.start_stack(label, 0, workers), "restarts": 0}

        def restart(old):
            self.stop_stack(old)
            holder["restarts"] += 1
            holder["stack"] = self.start_stack(label, 0, workers)
            self.warm_up(holder["stack"], f"{label}r{holder['restarts']}")
            return holder["stack"]

        try:
            self.warm_up(holder["stack"], label)
            per_client = max(self.args.certs_per_client, math.ceil(self.args.min_certs_per_k / k))
            self.alternating(holder["stack"], f"k{k}", lambda mode, i: [
                self.names(f"{label}{mode[0]}{i}c{c}r{holder['restarts']}", per_client, 1)
                for c in range(k)], self.args.rounds, restart=restart)
        finally:
            if holder["stack"] in self.stacks:
                self.stop_stack(holder["stack"])

    def replicas(self):
        """
        Throughput at K = ``--replica-clients`` through one gateway on SQLite
        and through 1, 2, 3 (``--replicas``) replicas on one PostgreSQL
        behind the compose example's nginx balancer, each against native in
        the same rounds, each on a fresh stack (as section 3).
        """
        k = self.args.replica_clients
        configs = [("sqlite", None)] + [(f"pg{n}", n) for n in self.args.replicas]
        for label, count in configs:
            def fresh(label=label, count=count):
                log(f"starting Pebble, the counting proxy and {label} [replicas]")
                stack = (Stack(self, f"rep-{label}", 0) if count is None
                         else ReplicaStack(self, f"rep-{label}", 0, count))
                self.stacks.append(stack)
                return stack

            holder = {"stack": fresh(), "restarts": 0}

            def restart(old, holder=holder, fresh=fresh, label=label):
                self.stop_stack(old)
                holder["restarts"] += 1
                holder["stack"] = fresh()
                self.warm_up(holder["stack"], f"rep{label}r{holder['restarts']}")
                return holder["stack"]

            try:
                self.warm_up(holder["stack"], f"rep{label}")
                per_client = max(self.args.certs_per_client, math.ceil(self.args.min_certs_per_k / k))
                self.alternating(holder["stack"], f"k{k}", lambda mode, i, label=label: [
                    self.names(f"rep{label}{mode[0]}{i}c{c}r{holder['restarts']}", per_client, 1)
                    for c in range(k)], self.args.rounds, restart=restart)
            finally:
                if holder["stack"] in self.stacks:
                    self.stop_stack(holder["stack"])

    def http_load(self, stack: Stack, gateway=None, workers: int = 1):
        """
        Section 4 against ``gateway`` (default: the stack's), served by
        ``workers`` processes: kept as ``http_load`` for one worker, under
        ``http_load_workers`` by count for more.
        """
        from bench import httpload

        gateway = gateway or stack.gateway
        url = gateway.directory_url
        results = {"workers": workers}
        duration = self.args.load_duration
        connections = self.args.load_connections
        results["signed_request_before_s"] = self.signed_probe(stack, gateway)

        def measured(method, conns, seconds, tool):
            cpu_before, wall_before = gateway_cpu_seconds(gateway), time.monotonic()
            generator_before = _children_cpu_seconds()
            r = httpload.run(url, method, conns, seconds, tool)
            cpu, wall = gateway_cpu_seconds(gateway) - cpu_before, time.monotonic() - wall_before
            generator = _children_cpu_seconds() - generator_before
            r["gateway_cpu_us_per_request"] = (cpu * 1e6 / r["requests"]) if r["requests"] else None
            r["gateway_cores_busy"] = cpu / wall if wall else None
            # The load generator runs on the same 2 cores: its own CPU time
            # (a child process of this one; the built-in generator runs
            # in this process and is not counted).
            r["generator_cpu_s"] = generator if r["tool"] != "python" else None
            r["generator_cores_busy"] = generator / wall if wall and r["tool"] != "python" else None
            r["machine_load"] = load_average()
            r["connections"] = conns
            return r

        for method in ("HEAD", "GET"):
            httpload.run(url, method, connections, min(2.0, duration), self.args.load_tool)  # warm-up
            results[method] = r = measured(method, connections, duration, self.args.load_tool)
            log(load_line(method, connections, r))
        # The same with one connection: the service time when nothing queues.
        results["HEAD@1"] = measured("HEAD", 1, min(duration, 5.0), self.args.load_tool)
        cross = httpload.cross_check(url, connections, duration)
        if cross:
            results["cross_check"] = cross
        # Does the load leave work queued behind it?  A legacy client's
        # start-up (new-reg, answered 409, which reads the store) right after.
        results["signed_request_after_s"] = self.signed_probe(stack, gateway)
        log(f"  a legacy client's start-up (new-reg) took {results['signed_request_before_s']} s before "
            f"the load and {results['signed_request_after_s']} s right after it")
        results["connections"] = connections
        results["duration_s"] = duration
        if workers == 1:
            self.results["http_load"] = results
        else:
            self.results.setdefault("http_load_workers", {})[str(workers)] = results
        for note in httpload.NOTES:
            self.note(note)

    def http_load_workers(self, stack: Stack):
        """Section 4 again on a fresh gateway of each ``--workers`` count above 1."""
        for workers in self.args.workers:
            if workers == 1:
                continue
            log(f"section 4: gateway-local HTTP load, {workers} workers")
            gateway = stack.new_gateway(f"gateway-w{workers}", workers=workers)
            try:
                self.http_load(stack, gateway, workers)
            finally:
                gateway.stop()

    def signed_probe(self, stack: Stack, gateway=None):
        """Seconds for a legacy driver to start and register (409) through the gateway."""
        started = time.monotonic()
        try:
            self.run_phase(stack, "legacy", "probe", [[]], gateway=gateway, record=False)
        except RuntimeError as error:
            self.note(f"a legacy client could not start through the gateway after "
                      f"{time.monotonic() - started:.0f} s: {str(error).splitlines()[0]}")
            return None
        return round(time.monotonic() - started, 2)

    def memory(self, stack: Stack):
        """
        A fresh gateway: RSS right after start, after a warm-up, and after
        every checkpoint up to ``--issuances-for-memory`` issuances.
        """
        workers = self.args.memory_workers
        gateway = stack.new_gateway("gateway-memory", workers=workers)
        try:
            time.sleep(1.0 if workers == 1 else 3.0)
            samples = [{"issued": 0, "label": "idle (just started)", **gateway_rss(gateway)}]
            log(f"  memory: idle RSS {samples[0]['VmRSS']:.1f} MB")
            clients = self.args.memory_clients
            issued = 0
            checkpoints = self.args.memory_checkpoints
            for index, target in enumerate(checkpoints):
                count = target - issued
                per_client = [count // clients + (1 if c < count % clients else 0) for c in range(clients)]
                plan = [self.names(f"m{index}c{c}", per_client[c], 1) for c in range(clients)]
                phase = self.run_phase(stack, "legacy", f"memory-{target}", plan, gateway=gateway,
                                       record=False)
                issued += phase["issued"]
                if phase["failed"]:
                    self.note(f"memory run: {phase['failed']} issuance(s) failed: {phase['errors'][:1]}")
                sample = {"issued": issued, "label": f"after {issued} issuances", **gateway_rss(gateway),
                          "gateway_cpu_ms_per_cert": phase.get("gateway_cpu_ms_per_cert")}
                samples.append(sample)
                log(f"  memory: after {issued} issuances RSS {sample['VmRSS']:.1f} MB")
            self.results["memory"] = {"samples": samples, "clients": clients, "workers": workers,
                                      "warmup_issuances": checkpoints[0]}
        finally:
            gateway.stop()

    def memory_diagnosis(self, stack: Stack):
        """
        tracemalloc in the gateway (slow; untimed): what the Python heap
        holds after the warm-up and after ``--memory-diagnosis`` more
        issuances.
        """
        trace = os.path.join(self.out, "memory-diagnosis.txt")
        if os.path.exists(trace):
            os.unlink(trace)
        gateway = stack.new_gateway("gateway-tracemalloc", tracemalloc_file=trace)
        try:
            clients = self.args.memory_clients
            plan = [self.names(f"tdw{c}", 2, 1) for c in range(clients)]
            self.run_phase(stack, "legacy", "diag-warm", plan, gateway=gateway, record=False)
            self._snapshot(gateway, trace, 1)
            count = self.args.memory_diagnosis
            plan = [self.names(f"td{c}", count // clients, 1) for c in range(clients)]
            self.run_phase(stack, "legacy", "diag", plan, gateway=gateway, record=False)
            self._snapshot(gateway, trace, 2)
        finally:
            gateway.stop()
        log(f"  memory diagnosis written to {trace}")
        self.results["memory_diagnosis"] = os.path.relpath(trace, self.out)

    @staticmethod
    def _snapshot(gateway, trace: str, number: int, timeout: float = 120) -> None:
        """Ask the traced gateway for snapshot ``number`` and wait until it is written."""
        os.kill(gateway.process.pid, signal.SIGUSR1)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                with open(trace) as f:
                    text = f.read()
            except OSError:
                text = ""
            if text.count("=== end of snapshot") >= number:
                return
            time.sleep(0.5)
        log(f"  tracemalloc snapshot {number} not written within {timeout:.0f}s")

    def profile_issuance(self, stack: Stack):
        """py-spy on the gateway during a K=max legacy phase."""
        from bench import profiling

        if not profiling.available():
            self.note("--profile: py-spy is not installed (pip install py-spy); no profile taken")
            return
        k = max(self.args.concurrency)
        per_client = max(self.args.certs_per_client, math.ceil(self.args.min_certs_per_k / k))
        plan = [self.names(f"pk{k}l{i}", per_client, 1) for i in range(k)]
        with profiling.Recorder(stack.gateway.process.pid, os.path.join(self.out, f"profile-k{k}-legacy")) as rec:
            self.run_phase(stack, "legacy", f"profile-k{k}", plan, record=False)
        self.results.setdefault("profiles", {})[f"k{k}-legacy"] = rec.summary

    def profile_sequential(self, stack: Stack):
        """
        py-spy on the gateway while one legacy client gets 3-name
        certificates one after another (the sequential path of § 1).
        """
        from bench import profiling

        if not profiling.available():
            return
        plan = [self.names("psl", max(4, self.args.n_multi), 3)]
        with profiling.Recorder(stack.gateway.process.pid,
                                os.path.join(self.out, "profile-sequential-multi3-legacy")) as rec:
            self.run_phase(stack, "legacy", "profile-multi3", plan, record=False)
        self.results.setdefault("profiles", {})["sequential-multi3-legacy"] = rec.summary

    def profile_head(self, stack: Stack):
        """py-spy on the gateway during HEAD /directory load."""
        from bench import httpload, profiling

        if not profiling.available():
            return
        with profiling.Recorder(stack.gateway.process.pid, os.path.join(self.out, "profile-head")) as rec:
            httpload.run(stack.gateway.directory_url, "HEAD", self.args.load_connections,
                         self.args.load_duration, self.args.load_tool)
        self.results.setdefault("profiles", {})["head-directory"] = rec.summary

    # -- everything --------------------------------------------------------------

    def run_all(self):
        self.prepare()
        started = time.monotonic()
        sections = self.args.sections
        self.results["pebble_env"] = {}
        if {"issuance", "load"} & sections or self.args.profile:
            main = self.start_stack("reuse", 100)
            self.results["pebble_env"]["reuse"] = main.pebble_env
            self.warm_up(main, "r")
            if "issuance" in sections:
                log("section 1+2: sequential issuance, authorization reuse on")
                self.sequential(main, "r")
            if self.args.profile:
                log("profiling the gateway (py-spy) during sequential 3-name legacy issuance")
                self.profile_sequential(main)
                log("profiling the gateway (py-spy) during a K=max legacy run")
                self.profile_issuance(main)
            # The HTTP load goes last on this gateway: what it leaves queued
            # behind (if anything) must not slow a later measurement.
            if "load" in sections:
                if 1 in self.args.workers:
                    log("section 4: gateway-local HTTP load")
                    self.http_load(main)
                self.http_load_workers(main)
            if self.args.profile:
                log("profiling the gateway (py-spy) during HEAD load")
                self.profile_head(main)
            self.stop_stack(main)

        if "concurrency" in sections:
            log("section 3: concurrency (a fresh stack per K and worker count)")
            self.concurrency()
        if self.args.replicas and "replicas" in sections:
            log("section 6: replicas on PostgreSQL (a fresh stack per configuration)")
            self.replicas()

        if {"noreuse", "memory"} & sections:
            other = self.start_stack("noreuse", 0)
            self.results["pebble_env"]["noreuse"] = other.pebble_env
            self.warm_up(other, "o")
            if "noreuse" in sections:
                log("section 2: sequential issuance, authorization reuse off")
                self.sequential(other, "o")
            if "memory" in sections:
                log("section 5: memory (a fresh gateway)")
                self.memory(other)
            if self.args.memory_diagnosis:
                log("memory diagnosis (tracemalloc, untimed)")
                self.memory_diagnosis(other)
            self.stop_stack(other)
        self.results["elapsed_s"] = time.monotonic() - started


#: The native client following the v1 shape (bench/driver.py ``NativeV1Shaped``).
SHAPED = report.SHAPED

#: Each mode's letter in the names it asks certificates for (unique per mode).
MODE_TAGS = {"native": "n", "legacy": "l", SHAPED: "v"}


def round_modes(modes, index: int) -> tuple:
    """
    The order in which round ``index`` runs ``modes``: as given in even
    rounds, reversed in odd ones, so that what drifts over a run falls on
    the first and the last mode alike.
    """
    return tuple(modes) if index % 2 == 0 else tuple(reversed(modes))


#: Sequential phases whose client steps are lined up with the upstream requests.
TRACED_PHASES = ("single", "multi3", "renew3")

#: Upstream requests made while the client was between two of its steps
#: (its poll interval's sleep, making the CSR): the gateway on its own.
BETWEEN_STEPS = "(between client steps)"


def trace(certificates: List[dict], timeline: list) -> dict:
    """
    Where the time of sequentially issued certificates goes: per client
    step (``new-authz``, ``authorization poll``, ``finalize``, …) its calls
    and seconds, and the upstream requests that started during it, by
    kind; requests that started while the client was between steps (the
    gateway's own follow-up reads while the client sleeps) are counted
    apart.  Sums, so that rounds add up (`merge`).
    """
    steps: Dict[str, dict] = {}

    def entry(name):
        return steps.setdefault(name, {"calls": 0, "seconds": 0.0, "upstream": {}})

    intervals = []
    for certificate in certificates:
        start = certificate["wall_start"]
        end = start + (certificate["end"] - certificate["start"])
        inside = 0.0
        for name, began, ended in certificate.get("steps", []):
            step = entry(name)
            step["calls"] += 1
            step["seconds"] += ended - began
            inside += ended - began
            intervals.append((began, ended, name))
        entry(BETWEEN_STEPS)["seconds"] += max(0.0, (end - start) - inside)
        intervals.append((start, end, BETWEEN_STEPS))
    # Steps first, then the certificates' spans (the between-steps catch-all).
    intervals.sort(key=lambda i: (i[2] == BETWEEN_STEPS, i[0]))
    for kind, _status, began, _ended in timeline:
        for low, high, name in intervals:
            if low <= began <= high:
                counts = entry(name)["upstream"]
                counts[kind] = counts.get(kind, 0) + 1
                break
    return {"certificates": len(certificates), "steps": steps}


def merge_traces(a: Optional[dict], b: Optional[dict]) -> Optional[dict]:
    if not a or not b:
        return a or b
    steps = {name: dict(step, upstream=dict(step["upstream"])) for name, step in a["steps"].items()}
    for name, step in b["steps"].items():
        into = steps.setdefault(name, {"calls": 0, "seconds": 0.0, "upstream": {}})
        into["calls"] += step["calls"]
        into["seconds"] += step["seconds"]
        for kind, count in step["upstream"].items():
            into["upstream"][kind] = into["upstream"].get(kind, 0) + count
    return {"certificates": a["certificates"] + b["certificates"], "steps": steps}


def derive(phase: dict) -> dict:
    """The figures of a phase, from its raw sums and durations."""
    issued = phase["issued"]
    phase["latency"] = summarize(phase["durations"])
    phase["polls_per_cert"] = phase["polls"] / issued if issued else None
    phase["certs_per_s"] = issued / phase["wall_s"] if issued and phase["wall_s"] > 0 else 0.0
    for field in ("upstream_per_cert", "requests_per_cert", "orders_per_cert",
                  "pebble_cpu_ms_per_cert", "gateway_cpu_ms_per_cert"):
        phase.pop(field, None)
    if issued:
        phase["upstream_per_cert"] = {k: v / issued for k, v in phase["upstream"]["requests"].items()}
        phase["requests_per_cert"] = phase["upstream"]["total"] / issued
        phase["orders_per_cert"] = phase["upstream"]["orders_created"] / issued
        phase["pebble_cpu_ms_per_cert"] = phase["pebble_cpu_s"] * 1000 / issued
        if phase["mode"] == "legacy":
            phase["gateway_cpu_ms_per_cert"] = phase["gateway_cpu_s"] * 1000 / issued
    return phase


def merge(a: dict, b: dict) -> dict:
    """Two rounds of one phase as one: sums, pooled durations, walls added."""
    upstream = {
        "requests": {k: a["upstream"]["requests"].get(k, 0) + b["upstream"]["requests"].get(k, 0)
                     for k in set(a["upstream"]["requests"]) | set(b["upstream"]["requests"])},
        "total": a["upstream"]["total"] + b["upstream"]["total"],
        "orders_created": a["upstream"]["orders_created"] + b["upstream"]["orders_created"],
        "bad_nonce": a["upstream"]["bad_nonce"] + b["upstream"]["bad_nonce"],
    }
    merged = dict(a)
    merged.update({
        "rounds": a.get("rounds", 1) + b.get("rounds", 1),
        "attempted": a["attempted"] + b["attempted"],
        "issued": a["issued"] + b["issued"],
        "failed": a["failed"] + b["failed"],
        "errors": sorted(set(a["errors"]) | set(b["errors"]))[:5],
        "durations": a["durations"] + b["durations"],
        "cert_polls": a.get("cert_polls", []) + b.get("cert_polls", []),
        "round_sizes": a.get("round_sizes", []) + b.get("round_sizes", []),
        "polls": a["polls"] + b["polls"],
        "wall_s": a["wall_s"] + b["wall_s"],
        "upstream": upstream,
        "gateway_cpu_s": a["gateway_cpu_s"] + b["gateway_cpu_s"],
        "pebble_cpu_s": a["pebble_cpu_s"] + b["pebble_cpu_s"],
        "verified": a.get("verified", True) and b.get("verified", True),
        "trace": merge_traces(a.get("trace"), b.get("trace")),
    })
    return derive(merged)


def _log_phase(key: str, phase: dict) -> None:
    lat = phase["latency"]
    log(f"  {key}: {phase['issued']}/{phase['attempted']} issued, {phase['certs_per_s']:.2f} certs/s, "
        f"p50 {_ms(lat.get('p50'))} p95 {_ms(lat.get('p95'))} p99 {_ms(lat.get('p99'))}, "
        f"upstream {phase.get('requests_per_cert', float('nan')):.2f} req/cert, "
        f"{phase.get('orders_per_cert', float('nan')):.2f} orders/cert"
        + (f"; first error: {phase['errors'][0]}" if phase["failed"] else ""))


def _children_cpu_seconds() -> float:
    """CPU seconds of this process's waited-for children (the load generators among them)."""
    import resource

    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def concurrency_label(k: int, workers: int) -> str:
    """The stack of K concurrent clients against a gateway of ``workers`` processes."""
    return f"k{k}" if workers == 1 else f"k{k}w{workers}"


def _der():
    from cryptography.hazmat.primitives.serialization import Encoding

    return Encoding.DER


def _ms(seconds) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.0f}ms"


def _count_delta(before: dict, after: dict) -> dict:
    kinds = set(before["requests"]) | set(after["requests"])
    requests = {k: after["requests"].get(k, 0) - before["requests"].get(k, 0) for k in kinds}
    requests = {k: v for k, v in requests.items() if v}
    return {
        "requests": requests,
        "total": after["total"] - before["total"],
        "orders_created": after["orders_created"] - before["orders_created"],
        "bad_nonce": after["bad_nonce"] - before["bad_nonce"],
    }


# ---------------------------------------------------------------------------
# command line
# ---------------------------------------------------------------------------

def _int_list(text: str) -> List[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a comma-separated list of integers, got {text!r}")
    if not values or any(v < 1 for v in values):
        raise argparse.ArgumentTypeError("expected positive integers")
    return values


#: ``--sections``: §1 and the reuse-on rows of §2, §4, §3, §6, the reuse-off rows of §2, §5.
SECTIONS = ("issuance", "load", "concurrency", "replicas", "noreuse", "memory")


def _section_set(text: str) -> set:
    chosen = {part.strip() for part in text.split(",") if part.strip()}
    unknown = chosen - set(SECTIONS)
    if unknown or not chosen:
        raise argparse.ArgumentTypeError(f"sections are {', '.join(SECTIONS)}; got {text!r}")
    return chosen


def _replica_list(text: str) -> List[int]:
    return [] if text.strip() == "0" else _int_list(text)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        prog="bench/run.py",
        description="Benchmark acme-gateway side by side against a native ACME v2 client.")
    parser.add_argument("--n", type=int, default=40,
                        help="sequential single-name certificates per mode (default: %(default)s)")
    parser.add_argument("--n-multi", type=int, default=None,
                        help="sequential 3-name certificates per mode (default: --n)")
    parser.add_argument("--concurrency", type=_int_list, default=[1, 8, 32],
                        help="concurrent clients K, comma-separated (default: 1,8,32)")
    parser.add_argument("--certs-per-client", type=int, default=3,
                        help="certificates each concurrent client obtains (default: %(default)s)")
    parser.add_argument("--min-certs-per-k", type=int, default=24,
                        help="at least this many certificates per K and mode (default: %(default)s)")
    parser.add_argument("--workers", type=_int_list, default=[1],
                        help="gateway processes (--workers) for sections 3 and 4, comma-separated: "
                             "each K and the HTTP load run against a gateway of each count "
                             "(default: 1)")
    parser.add_argument("--sections", type=_section_set, default=set(SECTIONS),
                        help="what to run, comma-separated, of: " + ", ".join(SECTIONS)
                             + " (default: all)")
    parser.add_argument("--memory-workers", type=int, default=1,
                        help="gateway processes of the memory run (section 5; default: %(default)s)")
    parser.add_argument("--replicas", type=_replica_list, default=[1, 2, 3],
                        help="section 6: replica counts on PostgreSQL, comma-separated, measured "
                             "beside one gateway on SQLite; 0 skips the section (default: 1,2,3)")
    parser.add_argument("--replica-clients", type=int, default=32,
                        help="concurrent clients K of section 6 (default: %(default)s)")
    parser.add_argument("--rounds", type=int, default=2,
                        help="alternate the two modes over this many rounds per measurement "
                             "(native first, then legacy first, ...; default: %(default)s)")
    parser.add_argument("--issuances-for-memory", type=int, default=1000,
                        help="issuances through a fresh gateway for the memory figure (default: %(default)s)")
    parser.add_argument("--memory-clients", type=int, default=8,
                        help="concurrent legacy clients in the memory run (default: %(default)s)")
    parser.add_argument("--memory-diagnosis", type=int, default=0, metavar="N",
                        help="also run N issuances under tracemalloc and write the allocation sites "
                             "that grew (untimed; default: off)")
    parser.add_argument("--poll-interval", type=float, default=0.1,
                        help="seconds between polls, both modes (default: %(default)s)")
    parser.add_argument("--cert-timeout", type=float, default=60.0,
                        help="give up on one certificate after this long (default: %(default)s)")
    parser.add_argument("--load-duration", type=float, default=10.0,
                        help="seconds of HTTP load per measurement (default: %(default)s)")
    parser.add_argument("--load-connections", type=int, default=64,
                        help="connections of the HTTP load (default: %(default)s)")
    parser.add_argument("--load-tool", choices=("auto", "wrk", "hey", "python"), default="auto",
                        help="HTTP load generator (auto: wrk for GET, hey for HEAD, the built-in "
                             "Python one when they are missing)")
    parser.add_argument("--profile", action="store_true",
                        help="also record py-spy profiles of the gateway (K=max legacy, HEAD load)")
    parser.add_argument("--gateway-src", metavar="DIR",
                        help="run the gateway package from DIR (a patched copy) instead of this checkout")
    parser.add_argument("--legacy-venv", default=os.environ.get("ACME_GATEWAY_LEGACY_VENV") or DEFAULT_LEGACY_VENV,
                        help="venv with acme 1.32 (default: .venvs/certbot1)")
    parser.add_argument("--out", help="results folder (default: bench/results/<UTC date-time>)")
    parser.add_argument("--workdir", help="scratch folder (default: a temporary one, removed)")
    parser.add_argument("--keep-work", action="store_true", help="keep the scratch folder (logs)")
    parser.add_argument("--no-verify", dest="verify", action="store_false",
                        help="skip verifying one chain per phase against Pebble's root")
    parser.add_argument("--no-chart", action="store_true", help="skip the PNG chart")
    parser.add_argument("--smoke", action="store_true",
                        help="a tiny run for CI: N=2, K=1, 10 issuances for memory, 1 s of HTTP load, "
                             "1 and 2 workers")
    args = parser.parse_args(argv)
    if args.smoke:
        args.n = 2
        args.n_multi = 2
        args.concurrency = [1]
        args.certs_per_client = 1
        args.min_certs_per_k = 2
        args.issuances_for_memory = 10
        args.memory_clients = 2
        args.load_duration = 1.0
        args.rounds = 1
        args.replicas = [2]
        args.replica_clients = 1
        args.workers = [1, 2]
        args.memory_workers = 2
    if args.n_multi is None:
        args.n_multi = args.n
    if args.n < 1 or args.n_multi < 1:
        parser.error("--n must be at least 1")
    total = args.issuances_for_memory
    if total < 4:
        parser.error("--issuances-for-memory must be at least 4")
    warm = min(max(2, total // 20), 50)
    args.memory_clients = max(1, min(args.memory_clients, warm))
    points = [warm] + [warm + (total - warm) * i // 4 for i in range(1, 5)]
    args.memory_checkpoints = sorted(set(points))
    return args


def check_requirements(args) -> List[str]:
    problems = []
    python = os.path.join(args.legacy_venv, "bin", "python")
    if not os.path.exists(python):
        problems.append(f"the legacy venv with acme 1.32 is missing ({python}): run ./scripts/setup")
    if shutil.which("pebble") is None and not os.path.exists("/usr/bin/pebble"):
        problems.append("Debian's pebble is not installed: run ./scripts/setup")
    if args.replicas:
        from tests.support.nginx import nginx_binary
        from tests.support.postgres import postgres_bin

        if nginx_binary() is None or postgres_bin() is None:
            problems.append("section 6 (replicas) needs Debian's nginx and postgresql: run "
                            "./scripts/setup, or skip it with --replicas 0")
    return problems


def main(argv=None) -> int:
    args = parse_args(argv)
    problems = check_requirements(args)
    if problems:
        for problem in problems:
            print(f"bench: {problem}", file=sys.stderr)
        return 2
    now = datetime.datetime.now(datetime.timezone.utc)
    out = os.path.abspath(args.out or os.path.join(BENCH_DIR, "results", now.strftime("%Y-%m-%d_%H%M%SZ")))
    os.makedirs(out, exist_ok=True)
    workdir = os.path.abspath(args.workdir) if args.workdir else tempfile.mkdtemp(prefix="acme-gateway-bench-")
    os.makedirs(workdir, exist_ok=True)
    bench = Bench(args, out, workdir)
    bench.results.update({
        "date": now.strftime("%Y-%m-%d %H:%M UTC"),
        "command": "bench/run.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "machine": machine_info(),
        "settings": {
            "n": args.n, "n_multi": args.n_multi, "concurrency": args.concurrency,
            "certs_per_client": args.certs_per_client, "min_certs_per_k": args.min_certs_per_k,
            "poll_interval_s": args.poll_interval, "issuances_for_memory": args.issuances_for_memory,
            "memory_clients": args.memory_clients, "memory_checkpoints": args.memory_checkpoints,
            "load_connections": args.load_connections, "load_duration_s": args.load_duration,
            "smoke": args.smoke, "gateway_src": args.gateway_src, "rounds": args.rounds,
            "replicas": args.replicas, "replica_clients": args.replica_clients,
            "workers": args.workers, "sections": sorted(args.sections),
            "memory_workers": args.memory_workers,
            "gateway_revision": gateway_revision(args.gateway_src),
            "key_type": "EC P-256 (account and certificate keys, both modes)",
            "client_library": "acme 1.32.0 (legacy venv), both modes",
        },
    })
    log(f"results -> {out}; scratch -> {workdir}")
    failed = None
    try:
        bench.run_all()
    except KeyboardInterrupt:
        failed = "interrupted"
    except Exception as error:
        failed = f"{type(error).__name__}: {error}"
        import traceback

        traceback.print_exc()
    finally:
        bench.stop_all()
    bench.results["machine"]["loadavg_at_end"] = load_average()
    if failed:
        bench.results["aborted"] = failed
    chart = None
    if not args.no_chart:
        chart = report.chart(bench.results, os.path.join(out, "chart.png"))
        if chart is None:
            bench.note("matplotlib is not installed: no chart (pip install matplotlib into .venv)")
    bench.results["issuance_time"] = report.issuance_figures(bench.results)
    with open(os.path.join(out, "results.json"), "w") as f:
        json.dump(bench.results, f, indent=2, default=str)
    table = report.markdown(bench.results)
    with open(os.path.join(out, "results.md"), "w") as f:
        f.write(table)
    print()
    print(report.summary(bench.results, out, chart))
    if failed:
        print(f"bench: aborted: {failed}; scratch kept in {workdir}", file=sys.stderr)
        return 1
    if not (args.keep_work or args.workdir):
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
