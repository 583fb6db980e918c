"""Cold version detail reads: the serializer path and the fixed-SQL path, side by side.

    .venv/bin/python bench/detail.py                    # 1,000 and 100,000 versions
    .venv/bin/python bench/detail.py --json             # one JSON object
    .venv/bin/python bench/detail.py --sizes 200 --requests 200   # smoke run
    .venv/bin/python bench/detail.py --sizes 1000 --profile       # cProfile, both

``GET /api/v1/model-versions/{id}/`` when the catalogue read cache misses,
as nearly every read does on a large catalogue read uniformly
(bench/README.md, "load.py"). For each size it clones the catalogue
``bench/load_seed.py`` builds (kept as a template database, without audit
events), then, in one process with production settings (DEBUG off), sends
requests through Django's whole middleware stack with the test client, as
the seeded agency maintainers reading their own versions. The request alternates
between the two paths (``CIVITAS_FAST_VERSION_DETAIL`` off: the ORM and
``ModelVersionSerializer``; on: ``registry/api/detail.py``), so both see
the same machine load. The representation cache is emptied before every
request (every read is a miss); the token check stays remembered, as in
production. Per path: wall time (the application and PostgreSQL) and the
CPU time of this process (the application alone) per request, then the
ratios. A sample of responses is compared byte for byte between the paths.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable
OUT = ROOT / "bench" / "out" / "detail"
SEED = ROOT / "bench" / "load_seed.py"
PATHS = (("serializer", False), ("fixed_sql", True))
SAME_BYTES_SAMPLE = 50


def label(size: int) -> str:
    return f"{size // 1000}k" if size % 1000 == 0 and size >= 1000 else str(size)


def psql(args, sql: str) -> str:
    result = subprocess.run(
        ["psql", f"{args.database}/postgres", "-XAtq", "-c", sql],
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    return result.stdout.strip()


def child_env(args, database: str) -> dict[str, str]:
    """Production-like settings on this machine's PostgreSQL."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DJANGO_")}
    env.update(
        DEBUG="false", CIVITAS_HTTPS="false", ALLOWED_HOSTS="testserver",
        SECRET_KEY="bench-only-secret-key-not-used-anywhere-else-0123456789",
        DATABASE_URL=f"{args.database}/{database}", DATABASE_CONN_MAX_AGE="60",
        CIVITAS_VAR_DIR=str(args.out_dir / "var"), CIVITAS_SIGNING_KEY_GENERATE="true",
        API_THROTTLE_USER="1000000/min", LOG_LEVEL="WARNING", PYTHONPATH=str(ROOT),
        DJANGO_SETTINGS_MODULE="config.settings", CELERY_BROKER_URL=args.redis,
        CELERY_TASK_DEFAULT_QUEUE="civitas-bench-detail",  # throttles on Redis
    )  # fmt: skip
    return env


def template(args, size: int) -> tuple[str, dict]:
    """The seeded template for ``size`` (built now if missing) and its facts."""
    digest = hashlib.sha256(f"detail:{size}".encode())
    for path in [SEED, *sorted(ROOT.glob("*/migrations/0*.py"))]:
        digest.update(path.name.encode() + path.read_bytes())
    name = f"{args.db_prefix}_{label(size)}_{digest.hexdigest()[:10]}"
    info = args.out_dir / f"{name}.json"
    exists = psql(args, f"SELECT 1 FROM pg_database WHERE datname='{name}'")
    if args.rebuild or not exists or not info.exists():
        stale = psql(
            args,
            "SELECT string_agg(datname, ' ') FROM pg_database "
            f"WHERE datname LIKE '{args.db_prefix}_{label(size)}_%'",
        )
        for old in stale.split():
            psql(args, f"DROP DATABASE IF EXISTS {old} WITH (FORCE)")
        psql(args, f"CREATE DATABASE {name}")
        command = [PY, str(SEED), "--versions", str(size), "--audit-events", "0"]
        subprocess.run(
            [*command, "--out", str(info)], check=True, cwd=ROOT,
            env=child_env(args, name), stdout=subprocess.DEVNULL,
        )  # fmt: skip
    return name, json.loads(info.read_text())


def measure_size(args, size: int) -> dict:
    """Clone the template, measure in a child process, drop the clone."""
    name, info = template(args, size)
    run = f"{args.db_prefix}_{label(size)}_run"
    psql(args, f"DROP DATABASE IF EXISTS {run} WITH (FORCE)")
    psql(args, f"CREATE DATABASE {run} TEMPLATE {name}")
    try:
        (args.out_dir / "info.json").write_text(json.dumps(info))
        command = [PY, __file__, "--child", str(args.out_dir / "info.json")]
        options = ["--requests", str(args.requests), "--warmup", str(args.warmup)]
        if args.profile:
            options.append("--profile")
        load = os.getloadavg()[0]
        result = subprocess.run(
            [*command, *options], cwd=ROOT, capture_output=True, text=True,
            env=child_env(args, run),
        )  # fmt: skip
        sys.stderr.write(result.stderr)
        result.check_returncode()
    finally:
        if not args.keep:
            psql(args, f"DROP DATABASE IF EXISTS {run} WITH (FORCE)")
    loads = f"{load:.2f} → {os.getloadavg()[0]:.2f}"
    return {"versions": size, "load_1min": loads, **json.loads(result.stdout)}


# --- the child: one process, both paths -------------------------------------------


def calls(info: dict, count: int, rng: random.Random) -> list[tuple[str, int]]:
    """``count`` (token, version) pairs: maintainers reading their own versions."""
    versions = info["versions_by_agency"]
    tokens = [t for t in info["tokens"] if versions[str(t["agency_index"])]]
    pairs = []
    for i in range(count):
        token = tokens[i % len(tokens)]
        own = versions[str(token["agency_index"])]
        pairs.append((token["token"], rng.choice(own)))
    return pairs  # fmt: skip


def request(client, settings, cache, token: str, version: int, fast: bool):
    """One cold detail read on the chosen path: (response, wall s, CPU s)."""
    settings.CIVITAS_FAST_VERSION_DETAIL = fast
    cache.clear()
    cpu, wall = time.process_time(), time.perf_counter()
    response = client.get(
        f"/api/v1/model-versions/{version}/", HTTP_AUTHORIZATION=f"Token {token}"
    )
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    if response.status_code != 200:
        raise SystemExit(f"version {version}: {response.status_code}")
    return response, wall, cpu


def child(args) -> dict:
    import django

    django.setup()
    from django.conf import settings
    from django.test import Client

    from registry import read_cache

    info = json.loads(Path(args.child).read_text())
    client, cache = Client(), read_cache._cache  # the representations, not tokens
    rng = random.Random(20261204)
    for token, version in calls(info, 2 * args.warmup, rng):
        for _, fast in PATHS:
            request(client, settings, cache, token, version, fast)
    same = sum(
        request(client, settings, cache, t, v, False)[0].content
        == request(client, settings, cache, t, v, True)[0].content
        for t, v in calls(info, SAME_BYTES_SAMPLE, rng)
    )
    figures = {name: {"wall": [], "cpu": []} for name, _ in PATHS}
    profiles = {name: None for name, _ in PATHS}
    if args.profile:
        import cProfile

        profiles = {name: cProfile.Profile() for name, _ in PATHS}
    for i, (token, version) in enumerate(calls(info, 2 * args.requests, rng)):
        name, fast = PATHS[i % 2]
        if profiles[name]:
            profiles[name].enable()
        _, wall, cpu = request(client, settings, cache, token, version, fast)
        if profiles[name]:
            profiles[name].disable()
        figures[name]["wall"].append(wall)
        figures[name]["cpu"].append(cpu)
    if args.profile:
        print_profiles(profiles)
    return {
        "requests_per_path": args.requests,
        "same_bytes": f"{same}/{SAME_BYTES_SAMPLE}",
        "paths": {name: summary(f["wall"], f["cpu"]) for name, f in figures.items()},
    }


def print_profiles(profiles) -> None:
    import pstats

    for name, profile in profiles.items():
        sys.stderr.write(f"\n--- cProfile, {name} path (tottime) ---\n")
        pstats.Stats(profile, stream=sys.stderr).sort_stats("tottime").print_stats(14)


def summary(wall: list[float], cpu: list[float]) -> dict:
    cuts = statistics.quantiles(wall, n=100)
    return {
        "wall_p50_ms": round(statistics.median(wall) * 1000, 2),
        "wall_p95_ms": round(cuts[94] * 1000, 2),
        "wall_p99_ms": round(cuts[98] * 1000, 2),
        "cpu_mean_ms": round(statistics.fmean(cpu) * 1000, 3),
        "cpu_bound_req_s_per_core": round(1 / statistics.fmean(cpu), 1),
    }


# --- the report ---------------------------------------------------------------------


def ratios(run: dict) -> dict:
    old, new = run["paths"]["serializer"], run["paths"]["fixed_sql"]
    return {
        key: round(old[key] / new[key], 2)
        for key in ("cpu_mean_ms", "wall_p50_ms", "wall_p95_ms", "wall_p99_ms")
    }


def processor() -> str:
    """The CPU model and count (the figures are per core of this machine)."""
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text()
        model = next(x for x in cpuinfo.splitlines() if x.startswith("model name"))
        model = model.split(":", 1)[1].strip()
    except (OSError, StopIteration):
        model = platform.processor() or platform.machine()
    return f"{model}, {os.cpu_count()} CPUs"


def print_table(report: dict) -> None:
    print(f"Cold version detail reads, {report['processor']}")
    head = "versions  path          p50 ms  p95 ms  p99 ms  CPU ms/req  req/s/core"
    print(head)
    for run in report["runs"]:
        for name, figures in run["paths"].items():
            print(
                f"{label(run['versions']):>8}  {name:<12}"
                f"{figures['wall_p50_ms']:>8}{figures['wall_p95_ms']:>8}"
                f"{figures['wall_p99_ms']:>8}{figures['cpu_mean_ms']:>12}"
                f"{figures['cpu_bound_req_s_per_core']:>12}"
            )
        r = run["ratios"]
        print(
            f"{'':>8}  serializer / fixed SQL: CPU x{r['cpu_mean_ms']}, p50 "
            f"x{r['wall_p50_ms']}, p95 x{r['wall_p95_ms']}, p99 x{r['wall_p99_ms']}; "
            f"same bytes {run['same_bytes']}; {run['requests_per_path']} requests each;"
            f" 1-min load {run['load_1min']}"
        )


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,100000")
    parser.add_argument("--requests", type=int, default=2000, help="timed, per path")
    parser.add_argument("--warmup", type=int, default=100, help="untimed, per path")
    parser.add_argument("--database", default="postgres://postgres@127.0.0.1:5432")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/10")
    parser.add_argument("--db-prefix", default="civitas_bench_detail")
    parser.add_argument("--out-dir", type=Path, default=OUT)
    parser.add_argument("--rebuild", action="store_true", help="reseed the templates")
    parser.add_argument("--keep", action="store_true", help="keep the measured clone")
    parser.add_argument("--profile", action="store_true", help="cProfile to stderr")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child:
        print(json.dumps(child(args)))
        return 0
    args.out_dir = args.out_dir.resolve()
    (args.out_dir / "var").mkdir(parents=True, exist_ok=True)
    runs = []
    for size in (int(s) for s in args.sizes.split(",")):
        run = measure_size(args, size)
        runs.append({**run, "ratios": ratios(run)})
    report = {"processor": processor(), "runs": runs}
    if args.json:
        print(json.dumps(report))
    else:
        print_table(report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
