"""The public register's pages at 10,000 entries: p50/p95/p99 and queries per page.

    .venv/bin/python bench/register.py                  # 10,000 entries, table
    .venv/bin/python bench/register.py --json           # one JSON object
    .venv/bin/python bench/register.py --entries 60 --requests 5   # smoke run

It prepares a PostgreSQL database once per size and keeps it as a template
(``<prefix>_tpl_<entries>``): migrations, then rows written with
``bulk_create`` (test set-up, not the services: 10,000 approvals through the
lifecycle would take an hour) — agencies, public models and versions with
dataset links, use cases approved (some then suspended or retired) and as
many drafts that the register must not list, their submissions, policy
results and decisions, two suites' runs per version with metrics, and a
valid audit chain with one decision event per decision, signed by
``audit.services.checkpoint_create`` every 1,000 events. A second run only
clones the template (``CREATE DATABASE ... TEMPLATE``).

Each page is then requested ``--requests`` times (after ``--warmup``
requests whose figures are dropped) through Django's test client in one
process with DEBUG off: the figures are the view's own time (queries,
records, template), without a web server or network in front; the number of
queries per request is counted too. The CSV of every entry is downloaded a
few times and timed whole. The table states the processor and the load
average seen, since the machine may be shared.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from engine.perf import describe_processor, processor  # noqa: E402

PY = sys.executable
PAGES = (
    ("list", "/", "register list, page 1"),
    ("list_search", "/?q=residents+letters", "list, free-text search"),
    ("list_filtered", "/?risk_tier=high&personal_data=yes", "list, two filters"),
    ("list_deep_page", "/?page=300", "list, page 300"),
    ("entry", "/register/{entry}/", "entry page"),
    ("api", "/api/v1/register/", "JSON API, first page"),
    ("api_filtered", "/api/v1/register/?status=suspended", "JSON API, filtered"),
)
TARGET_P95_MS = 300.0


# --- the driver ---------------------------------------------------------------------


def psql(url: str, sql: str) -> str:
    return subprocess.run(
        ["psql", url, "-XAtq", "-c", sql], capture_output=True, text=True, check=True
    ).stdout.strip()


def django_env(args, database: str) -> dict[str, str]:
    var = ROOT / "bench" / "out" / "register"
    var.mkdir(parents=True, exist_ok=True)
    return {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "DJANGO_SETTINGS_MODULE": "config.settings",
        "DATABASE_URL": f"{args.database}/{database}",
        "CELERY_BROKER_URL": args.redis,
        "CELERY_RESULT_BACKEND": args.redis,
        "CELERY_TASK_DEFAULT_QUEUE": f"{args.db_prefix}-queue",
        "CIVITAS_SIGNING_KEY_GENERATE": "true",
        "CIVITAS_VAR_DIR": str(var),
        "SECRET_KEY": "bench-only-secret-key-not-used-anywhere-else-0123456789abc",
        "ALLOWED_HOSTS": "testserver,localhost",
        "CIVITAS_HTTPS": "false",
        "DEBUG": "false",
        "LOG_LEVEL": "ERROR",
        "API_THROTTLE_ANON": "1000000/min",
    }


def prepare(args) -> tuple[str, float, bool]:
    """The template database of this size: (name, seconds, was it cached)."""
    template = f"{args.db_prefix}_tpl_{args.entries}"
    server = f"{args.database}/postgres"
    exists = psql(server, f"SELECT 1 FROM pg_database WHERE datname = '{template}'")
    if exists and not args.rebuild:
        return template, 0.0, True
    started = time.perf_counter()
    psql(server, f"DROP DATABASE IF EXISTS {template} WITH (FORCE)")
    psql(server, f"CREATE DATABASE {template}")
    env = django_env(args, template)
    subprocess.run(
        [PY, "manage.py", "migrate", "--noinput", "-v", "0"],
        cwd=ROOT,
        env=env,
        check=True,
    )
    subprocess.run(
        [PY, __file__, "--seed", str(args.entries)], cwd=ROOT, env=env, check=True
    )
    return template, time.perf_counter() - started, False


def run(args) -> dict:
    template, seconds, cached = prepare(args)
    clone = f"{args.db_prefix}_run_{os.getpid()}"
    server = f"{args.database}/postgres"
    psql(server, f"DROP DATABASE IF EXISTS {clone} WITH (FORCE)")
    psql(server, f"CREATE DATABASE {clone} TEMPLATE {template}")
    try:
        done = subprocess.run(
            [
                PY,
                __file__,
                "--measure",
                "--requests",
                str(args.requests),
                "--warmup",
                str(args.warmup),
                "--csv-repeats",
                str(args.csv_repeats),
            ],
            cwd=ROOT,
            env=django_env(args, clone),
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            raise SystemExit(done.stderr[-4000:])
        measured = json.loads(done.stdout)
    finally:
        if not args.keep:
            psql(server, f"DROP DATABASE IF EXISTS {clone} WITH (FORCE)")
    return {
        "entries": args.entries,
        "template": template,
        "prepare": {"seconds": round(seconds, 1), "cached": cached},
        "processor": processor(),
        "load_average": list(os.getloadavg()),
        "target_p95_ms": TARGET_P95_MS,
        **measured,
    }


def print_table(report: dict) -> None:
    cpu = report["processor"]
    print(
        f"Public register at {report['entries']:,} entries "
        f"(listed {report['listed']:,}, drafts {report['unlisted']:,} unlisted)"
    )
    print(
        f"processor: {describe_processor(cpu)}; load average "
        f"{' '.join(f'{x:.2f}' for x in report['load_average'])}"
    )
    print(f"{'page':<28} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} {'queries':>8}")
    for row in report["pages"].values():
        print(
            f"{row['label']:<28} {row['p50_ms']:>8.1f} {row['p95_ms']:>8.1f} "
            f"{row['p99_ms']:>8.1f} {row['queries']:>8}"
        )
    csv_row = report["csv"]
    print(
        f"CSV of every entry: {csv_row['rows']:,} rows, {csv_row['bytes']:,} bytes, "
        f"median {csv_row['median_s']:.2f} s, {csv_row['queries']} queries"
    )
    verdict = "met" if report["list_p95_ms"] < TARGET_P95_MS else "NOT met"
    print(
        f"target: list p95 < {TARGET_P95_MS:.0f} ms — {verdict} "
        f"({report['list_p95_ms']:.1f} ms)"
    )


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--entries",
        type=int,
        default=10_000,
        help="use cases in the register (default 10,000)",
    )
    parser.add_argument(
        "--requests",
        type=int,
        default=200,
        help="timed requests per page (default 200)",
    )
    parser.add_argument(
        "--warmup",
        type=int,
        default=10,
        help="untimed requests per page first (default 10)",
    )
    parser.add_argument("--csv-repeats", type=int, default=3)
    parser.add_argument(
        "--database",
        default="postgres://postgres@127.0.0.1:5432",
        help="PostgreSQL server URL, without a database name",
    )
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/10")
    parser.add_argument("--db-prefix", default="civitas_bench_register")
    parser.add_argument(
        "--rebuild", action="store_true", help="rebuild the template database"
    )
    parser.add_argument("--keep", action="store_true", help="keep the measured clone")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--seed", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--measure", action="store_true", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.seed is not None or args.measure:
        import django

        django.setup()
        from bench import register_seed

        if args.seed is not None:
            register_seed.seed(args.seed)
        else:
            print(
                json.dumps(
                    register_seed.measure(
                        requests=args.requests,
                        warmup=args.warmup,
                        csv_repeats=args.csv_repeats,
                        pages=PAGES,
                    )
                )
            )
        return 0
    report = run(args)
    if args.json:
        print(json.dumps(report))
    else:
        print_table(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
