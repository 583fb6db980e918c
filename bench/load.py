"""Load the API under gunicorn and PostgreSQL; print req/s and p50/p95/p99 per endpoint.

    .venv/bin/python bench/load.py                      # 1,000 and 100,000 versions
    .venv/bin/python bench/load.py --json               # one JSON object
    .venv/bin/python bench/load.py --sizes 200 --audit-events 2000 \\
        --duration 2 --warmup 0.5 --users 2             # smoke run, < 1 minute

For each catalogue size it prepares a database once (``bench/load_seed.py``:
migrations, then COPY of the catalogue and of a valid audit chain) and keeps
it as a PostgreSQL template database, so a second run only clones it
(``CREATE DATABASE ... TEMPLATE``, seconds). It starts gunicorn with
``deploy/gunicorn.conf.py`` and production-like settings (DEBUG off, a
signing key file, the throttles and cache on Redis), then drives one
endpoint at a time with locust (as a library, headless, ``--users``
closed-loop users without think time, ``--duration`` seconds after
``--warmup`` seconds whose figures are dropped). Locust runs on the same
machine, so its own CPU use counts against the server's; the table states
the load average seen and the processor.

The user throttle (``API_THROTTLE_USER``) is raised for the run: a handful of
benchmark users at hundreds of requests per second would otherwise measure
429s. Everything else is as ``deploy/env.example`` sets it.
"""

# locust patches the standard library with gevent when imported: first.
from locust import FastHttpUser, constant, events  # isort: skip
from locust.env import Environment  # isort: skip

import argparse
import hashlib
import itertools
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import gevent

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from engine.perf import describe_processor, processor  # noqa: E402

PY = sys.executable
OUT = ROOT / "bench" / "out" / "load"
SEED = ROOT / "bench" / "load_seed.py"
ENDPOINTS = (
    ("versions_filtered", "list versions (filtered)"),
    ("versions_filtered_uncached", "  the same, no read cache"),
    ("version_detail", "version detail"),
    ("version_detail_uncached", "  the same, no read cache"),
    ("lineage", "lineage"),
    ("audit_list", "audit list"),
    ("register_version", "register a version"),
    ("request_evaluation", "request an evaluation"),
    ("public_register", "public register list"),
)
# The baseline of the catalogue read cache (registry/read_cache.py): the same
# calls against a second server started with CIVITAS_READ_CACHE_ENTRIES=0.
UNCACHED = {
    "versions_filtered_uncached": "versions_filtered",
    "version_detail_uncached": "version_detail",
}


def label(size: int) -> str:
    """``1k``, ``100k``, or the number itself."""
    return f"{size // 1000}k" if size % 1000 == 0 and size >= 1000 else str(size)


# --- databases ------------------------------------------------------------------


def psql(base_url: str, sql: str) -> str:
    """Run one statement on the maintenance database; return its output."""
    result = subprocess.run(
        ["psql", f"{base_url}/postgres", "-XAtq", "-c", sql],
        check=True, capture_output=True, text=True,
    )
    return result.stdout.strip()


def seed_fingerprint(size: int, audit_events: int) -> str:
    """What the prepared database depends on: the seeder, the migrations, sizes."""
    digest = hashlib.sha256(f"{size}:{audit_events}".encode())
    digest.update(SEED.read_bytes())
    for path in sorted(ROOT.glob("*/migrations/0*.py")):
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:10]


def prepare(args, size: int) -> tuple[str, dict, dict]:
    """The template database for ``size`` (built now if missing) and its facts."""
    fingerprint = seed_fingerprint(size, args.audit_events)
    template = f"{args.db_prefix}_{label(size)}_{fingerprint}"
    info = args.out_dir / f"{template}.json"
    exists = psql(
        args.database, f"SELECT 1 FROM pg_database WHERE datname='{template}'"
    )
    timing = {"cached": True, "seconds": 0.0}
    if args.rebuild or not exists or not info.exists():
        started = time.monotonic()
        stale = psql(
            args.database,
            "SELECT string_agg(datname, ' ') FROM pg_database "
            f"WHERE datname LIKE '{args.db_prefix}_{label(size)}_%'",
        )
        for name in stale.split():
            psql(args.database, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
            (args.out_dir / f"{name}.json").unlink(missing_ok=True)
        psql(args.database, f"CREATE DATABASE {template}")
        env = {**server_env(args, template), "LOG_LEVEL": "WARNING"}
        subprocess.run(
            [PY, str(SEED), "--versions", str(size), "--audit-events",
             str(args.audit_events), "--out", str(info)],
            check=True, env=env, cwd=ROOT, stdout=subprocess.DEVNULL,
        )
        timing = {"cached": False, "seconds": round(time.monotonic() - started, 1)}
    return template, json.loads(info.read_text()), timing


def clone(args, template: str, size: int) -> tuple[str, float]:
    """A fresh copy of the template for one run (writes never reach the template)."""
    started = time.monotonic()
    name = f"{args.db_prefix}_{label(size)}_run"
    psql(args.database, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    psql(args.database, f"CREATE DATABASE {name} TEMPLATE {template}")
    return name, round(time.monotonic() - started, 1)


# --- the server -------------------------------------------------------------------


def server_env(args, database: str, *, read_cache: bool = True) -> dict[str, str]:
    """Production-like settings (deploy/env.example) on this machine's services."""
    var = args.out_dir / "var"
    var.mkdir(parents=True, exist_ok=True)
    key = var / "signing-key.pem"
    if not key.exists():
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric.ed25519 import (
            Ed25519PrivateKey,
        )

        pem = Ed25519PrivateKey.generate().private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        key.write_bytes(pem)
        key.chmod(0o600)
    env = {k: v for k, v in os.environ.items() if not k.startswith("DJANGO_")}
    env.update(
        DEBUG="false",
        SECRET_KEY="bench-only-secret-key-not-used-anywhere-else-0123456789",
        ALLOWED_HOSTS="127.0.0.1,localhost",
        CIVITAS_HTTPS="false",
        DATABASE_URL=f"{args.database}/{database}",
        DATABASE_CONN_MAX_AGE="60",
        CELERY_BROKER_URL=args.redis,
        CELERY_TASK_DEFAULT_QUEUE="civitas-bench",
        CIVITAS_VAR_DIR=str(var),
        CIVITAS_SIGNING_KEY_FILE=str(key),
        API_THROTTLE_USER="1000000/min",
        LOG_LEVEL="INFO",
        LOG_FORMAT="json",
        PYTHONPATH=str(ROOT),
    )
    if not read_cache:
        env["CIVITAS_READ_CACHE_ENTRIES"] = "0"
    if args.workers:
        env["WEB_CONCURRENCY"] = str(args.workers)
    if args.threads:
        env["GUNICORN_THREADS"] = str(args.threads)
    return env


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(args, database: str, token: str, *, read_cache: bool = True):
    """gunicorn with deploy/gunicorn.conf.py; returns (process, base URL, log path)."""
    port = free_port()
    env = {**server_env(args, database, read_cache=read_cache), "PORT": str(port)}
    suffix = "" if read_cache else "-no-read-cache"
    log = args.out_dir / f"gunicorn-{database}{suffix}.log"
    # DEBUG off serves hashed static names from the manifest, as production
    # does after the image's collectstatic (the register's pages link them).
    subprocess.run(
        [PY, "manage.py", "collectstatic", "--noinput"],
        check=True, cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
    )
    gunicorn = shutil.which("gunicorn", path=str(Path(PY).parent)) or "gunicorn"
    process = subprocess.Popen(
        [gunicorn, "-c", "deploy/gunicorn.conf.py", "config.wsgi:application"],
        cwd=ROOT, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"gunicorn exited ({process.returncode}); see {log}")
        try:
            request = urllib.request.Request(
                f"{base}/api/v1/me/", headers={"Authorization": f"Token {token}"}
            )
            with urllib.request.urlopen(request, timeout=2) as response:
                if response.status == 200:
                    return process, base, log
        except OSError:
            gevent.sleep(0.2)
    stop_server(process)
    raise SystemExit(f"gunicorn did not answer within 60 s; see {log}")


def stop_server(process) -> None:
    if process.poll() is None:
        # Quick shutdown: locust's idle keep-alive connections would hold a
        # graceful one for the whole graceful_timeout.
        os.killpg(process.pid, signal.SIGINT)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


# --- the load ---------------------------------------------------------------------


class Catalogue:
    """What the users pick from: tokens, and their agency's versions and models."""

    def __init__(self, info: dict) -> None:
        self.versions = info["versions_by_agency"]
        self.models = info["models_by_agency"]
        # A small catalogue leaves some agencies without versions: their
        # people have nothing of their own to read or evaluate.
        self.tokens = [
            token
            for token in info["tokens"]
            if self.versions[str(token["agency_index"])]
            and self.models[str(token["agency_index"])]
        ]
        self.suite = info["suite"]
        self._next = itertools.count()

    def caller(self) -> dict:
        return self.tokens[next(self._next) % len(self.tokens)]


FILTERS = (
    "agency={agency}",
    "status=approved",
    "licence=MIT&released=true",
    "jurisdiction=DE&task=text-generation",
)


def make_user(catalogue: Catalogue, endpoint: str, host: str):
    """A locust user class that calls one endpoint as one agency maintainer."""

    class ApiUser(FastHttpUser):
        wait_time = constant(0)

        def on_start(self) -> None:
            me = catalogue.caller()
            self.agency = me["agency"]
            index = str(me["agency_index"])
            self.own_versions = catalogue.versions[index]
            self.own_models = catalogue.models[index]
            self.headers = {"Authorization": f"Token {me['token']}"}
            self.rng = random.Random()

        def call(self, method: str, path: str, name: str, body=None) -> None:
            self.client.request(
                method, path, name=name, headers=self.headers, json=body
            )

        def act(self) -> None:
            version = self.rng.choice(self.own_versions)
            action = UNCACHED.get(endpoint, endpoint)
            if action == "versions_filtered":
                query = self.rng.choice(FILTERS).format(agency=self.agency)
                self.call("GET", f"/api/v1/model-versions/?{query}", endpoint)
            elif action == "version_detail":
                self.call("GET", f"/api/v1/model-versions/{version}/", endpoint)
            elif endpoint == "lineage":
                self.call("GET", f"/api/v1/model-versions/{version}/lineage/", endpoint)
            elif endpoint == "audit_list":
                self.call("GET", "/api/v1/audit/events/", endpoint)
            elif endpoint == "register_version":
                body = {
                    "model": self.rng.choice(self.own_models),
                    "version": f"9.0.0-b{uuid.uuid4().hex}",
                    "licence": "MIT",
                }
                self.call("POST", "/api/v1/model-versions/", endpoint, body)
            elif endpoint == "public_register":
                # Anonymous, as the public reads it; bench/register.py measures
                # it with 10,000 entries (this seed approves no use case).
                self.client.request("GET", "/", name=endpoint)
            elif endpoint == "request_evaluation":
                body = {"suite": catalogue.suite}
                path = f"/api/v1/model-versions/{version}/evaluations/"
                self.call("POST", path, endpoint, body)

    ApiUser.host = host
    ApiUser.tasks = [ApiUser.act]
    return ApiUser


def drive(args, catalogue: Catalogue, host: str, endpoint: str) -> dict:
    """Closed-loop load on one endpoint; its figures after the warm-up."""
    user_class = make_user(catalogue, endpoint, host)
    env = Environment(user_classes=[user_class], events=events)
    runner = env.create_local_runner()
    runner.start(args.users, spawn_rate=args.users)
    gevent.sleep(args.warmup)
    env.stats.reset_all()
    started = time.monotonic()
    gevent.sleep(args.duration)
    method = "POST" if endpoint in ("register_version", "request_evaluation") else "GET"
    entry = env.stats.get(endpoint, method)
    # On a saturated machine a short phase may end before any answer: wait
    # (at most a minute more) for one, so every row has figures.
    while entry.num_requests == 0 and time.monotonic() - started < args.duration + 60:
        gevent.sleep(0.1)
    elapsed = time.monotonic() - started
    runner.quit()
    fails = entry.num_failures
    done = entry.num_requests
    result = {
        "requests": done,
        "failures": fails,
        "rps": round((done - fails) / elapsed, 1) if elapsed else 0.0,
    }
    for q in (0.5, 0.95, 0.99):
        result[f"p{int(q * 100)}_ms"] = (
            entry.get_response_time_percentile(q) if done else None
        )
    if fails:
        result["errors"] = sorted(
            {str(e.error)[:200] for e in env.stats.errors.values()}
        )[:3]
    return result


# --- the run ----------------------------------------------------------------------


def purge_queue(args) -> None:
    """Drop the evaluation messages the run queued (no worker consumes them)."""
    import redis

    redis.Redis.from_url(args.redis).delete("civitas-bench")


def drive_all(args, catalogue: Catalogue, database: str, *, read_cache: bool) -> dict:
    """Serve the database and drive each selected endpoint of one server."""
    wanted = [
        endpoint
        for endpoint, _title in ENDPOINTS
        if (endpoint in UNCACHED) != read_cache
        and (not args.endpoints or endpoint in args.endpoints)
    ]
    if not wanted:
        return {}
    process, host, log = start_server(
        args, database, catalogue.tokens[0]["token"], read_cache=read_cache
    )
    results = {}
    try:
        for endpoint in wanted:
            load_before = os.getloadavg()[0]
            results[endpoint] = drive(args, catalogue, host, endpoint)
            results[endpoint]["load_avg_1m"] = round(
                max(load_before, os.getloadavg()[0]), 2
            )
    finally:
        stop_server(process)
        purge_queue(args)
    return {"results": results, "log": str(log)}


def run_size(args, size: int) -> dict:
    """Prepare, clone, serve and drive every endpoint for one catalogue size."""
    template, info, prepared = prepare(args, size)
    database, cloned = clone(args, template, size)
    catalogue = Catalogue(info)
    served = [
        drive_all(args, catalogue, database, read_cache=True),
        drive_all(args, catalogue, database, read_cache=False),
    ]
    if not args.keep:
        psql(args.database, f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")
    results = {
        name: row for part in served for name, row in part.get("results", {}).items()
    }
    return {
        "versions": size,
        "audit_events": info["chain_seq"],
        "template": template,
        "prepare": {**prepared, "seed_seconds": info["seconds"]},
        "clone_seconds": cloned,
        "endpoints": {name: results[name] for name, _ in ENDPOINTS if name in results},
        "read_cache_speedup": {
            base: round(results[base]["rps"] / results[name]["rps"], 2)
            for name, base in UNCACHED.items()
            if results.get(base, {}).get("rps") and results.get(name, {}).get("rps")
        },
        "server_log": [part["log"] for part in served if part],
    }


def ratios(runs: list[dict]) -> dict:
    """p99 at the largest catalogue over p99 at the smallest, per endpoint."""
    if len(runs) < 2:
        return {}
    small, large = runs[0]["endpoints"], runs[-1]["endpoints"]
    out = {}
    for endpoint, _title in ENDPOINTS:
        a, b = small.get(endpoint, {}), large.get(endpoint, {})
        if a.get("p99_ms") and b.get("p99_ms"):
            out[endpoint] = round(b["p99_ms"] / a["p99_ms"], 2)
    return out


def gunicorn_settings(args) -> dict:
    """The workers and threads the server ran with (the conf file's defaults)."""
    return {
        "workers": args.workers or int(os.environ.get("WEB_CONCURRENCY", "0") or 0)
        or "deploy/gunicorn.conf.py default",
        "threads": args.threads or int(os.environ.get("GUNICORN_THREADS", "0") or 0)
        or "deploy/gunicorn.conf.py default",
    }


def print_table(report: dict) -> None:
    cpu = report["processor"]
    print(f"processor: {describe_processor(cpu)}")
    print(
        f"load: {report['users']} users, {report['duration_s']} s per endpoint "
        f"after {report['warmup_s']} s warm-up; gunicorn {report['gunicorn']}"
    )
    head = f"{'endpoint':<26}{'versions':>9}{'req/s':>9}{'p50 ms':>8}{'p95 ms':>8}"
    print(head + f"{'p99 ms':>8}{'fail':>6}{'load':>6}")
    for run in report["runs"]:
        for endpoint, title in ENDPOINTS:
            row = run["endpoints"].get(endpoint)
            if row is None:
                continue
            cells = [row["rps"], row["p50_ms"], row["p95_ms"], row["p99_ms"]]
            text = "".join(
                f"{'-' if c is None else round(c):>{w}}"
                for c, w in zip(cells[1:], (8, 8, 8), strict=True)
            )
            print(
                f"{title:<26}{label(run['versions']):>9}{cells[0]:>9.1f}{text}"
                f"{row['failures']:>6}{row['load_avg_1m']:>6.2f}"
            )
        prep = run["prepare"]
        how = "cached template" if prep["cached"] else f"built in {prep['seconds']} s"
        print(
            f"  {label(run['versions'])}: {run['audit_events']:,} audit events; "
            f"database {how}, cloned in {run['clone_seconds']} s"
        )
        for endpoint, value in run["read_cache_speedup"].items():
            print(
                f"  {label(run['versions'])}: {dict(ENDPOINTS)[endpoint]} with the "
                f"read cache / without: {value:.2f}x req/s"
            )
    if report["p99_ratio"]:
        print("p99 at the largest catalogue / p99 at the smallest:")
        for endpoint, value in report["p99_ratio"].items():
            print(f"  {dict(ENDPOINTS)[endpoint]:<26}{value:>6.2f}x")


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,100000",
                        help="catalogue sizes, comma-separated (default 1000,100000)")
    parser.add_argument("--audit-events", type=int, default=1_000_000)
    parser.add_argument("--duration", type=float, default=15.0,
                        help="measured seconds per endpoint (default 15)")
    parser.add_argument("--warmup", type=float, default=3.0,
                        help="unmeasured seconds before each endpoint (default 3)")
    parser.add_argument("--users", type=int, default=8,
                        help="concurrent closed-loop users (default 8)")
    parser.add_argument("--workers", type=int, default=0,
                        help="gunicorn workers (default: deploy/gunicorn.conf.py)")
    parser.add_argument("--threads", type=int, default=0,
                        help="gunicorn threads per worker (default: the conf file)")
    parser.add_argument("--endpoints", default="",
                        help="comma-separated subset of: "
                        + ", ".join(name for name, _ in ENDPOINTS))
    parser.add_argument("--database", default="postgres://postgres@127.0.0.1:5432",
                        help="PostgreSQL server URL without a database name")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/10",
                        help="Redis database for the broker and the cache")
    parser.add_argument("--db-prefix", default="civitas_bench",
                        help="names of the databases made (default civitas_bench)")
    parser.add_argument("--out-dir", type=Path, default=OUT,
                        help="prepared-database facts, server logs, signing key")
    parser.add_argument("--rebuild", action="store_true",
                        help="prepare the databases again even if cached")
    parser.add_argument("--keep", action="store_true",
                        help="keep the run's database clone afterwards")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    args.sizes = [int(s) for s in args.sizes.split(",") if s]
    args.endpoints = [e for e in args.endpoints.split(",") if e]
    unknown = set(args.endpoints) - {name for name, _ in ENDPOINTS}
    if unknown:
        parser.error(f"unknown endpoints: {', '.join(sorted(unknown))}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    runs = [run_size(args, size) for size in args.sizes]
    report = {
        "processor": processor(),
        "users": args.users,
        "duration_s": args.duration,
        "warmup_s": args.warmup,
        "gunicorn": gunicorn_settings(args),
        "load_avg_at_end": [round(x, 2) for x in os.getloadavg()],
        "runs": runs,
        "p99_ratio": ratios(runs),
    }
    if args.json:
        print(json.dumps(report))
    else:
        print_table(report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
