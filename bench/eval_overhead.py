"""Evaluation overhead: wall time, pickup to ``succeeded``, vs the engine compute.

    .venv/bin/python bench/eval_overhead.py                 # ~100 M model, table
    .venv/bin/python bench/eval_overhead.py --json          # one JSON object
    .venv/bin/python bench/eval_overhead.py --quick --runs 2  # ~10 M, smoke run
    .venv/bin/python bench/eval_overhead.py --baseline      # the cache off only

On a fresh PostgreSQL database (migrations kept in a template database,
``<prefix>_tpl``, cloned per run), the shipped suites are registered
(``builtin_suites_sync``) and the generated Llama-shaped causal LM of
``bench/eval_throughput.py`` (same ``bench_config`` and cached bundle under
``bench/out/eval_throughput``; zipped once, stored uncompressed) is stored
as a released version's artifact. Each run is then asked for through
``evaluation_request`` and executed by ``evaluation_execute`` — what the
Celery task ``civitas.evaluation_run`` calls, in this process (the broker's
delivery is not measured): claim, datasets and bundle out of the store, the
sandboxed child (confinement, digest, extraction, model load, the suite's
tasks), metrics, outbox, audit, policy and attestation, in one transaction.

Figures per run: ``wall`` is ``finished_at - started_at`` of the run's row
(the claim to ``succeeded``); ``compute`` is the engine's own time inside
the child for the suite's tasks (``tasks_s``); ``ratio = wall / compute``
(the target is at most 1.10). The breakdown comes from the run's
``evaluation_timings`` log record: bundle out of the store (``bundle_s``:
copy with SHA-256, and extraction when cached; on a hit, the store's
fingerprint of the object and the stamp check), child start, confinement,
imports, the child's digest and extraction, inspection, model load, tasks,
and ``record_s`` (metrics, items, outbox, audit, policy, attestation).
Modes: ``cached`` (the worker's bundle cache, on by default; the first run fills it,
the figures are the median of the warm runs) and ``baseline``
(``CIVITAS_EVAL_BUNDLE_CACHE_BYTES=0``: every run copies, and the child
hashes and extracts again, as before the cache). The processor, its
instruction-set features and the load average are reported: the machine may
be shared.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import subprocess
import sys
import time
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# bench/ itself must not be on the path: bench/limits.py would shadow the
# ``limits`` package that the API's throttling imports.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != ROOT / "bench"]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.register import django_env, psql  # noqa: E402
from engine.perf import describe_processor, processor  # noqa: E402

PY = sys.executable
BREAKDOWN = (
    ("bundle_s", "bundle ready in the worker, in all"),
    ("copy_verify_s", "  copy + SHA-256 into the cache (a miss)"),
    ("cache_extract_s", "  extraction into the cache (a miss)"),
    ("store_check_s", "  store fingerprint (stat / S3 HEAD)"),
    ("cache_check_s", "  stamp check of a cached entry (a hit)"),
    ("child_start_s", "child start (interpreter, boot)"),
    ("confine_s", "confinement"),
    ("import_s", "child imports and request"),
    ("digest_s", "digest in the child"),
    ("extract_s", "extraction in the child"),
    ("inspect_s", "bundle inspection"),
    ("load_s", "model load / session creation"),
    ("tasks_s", "the suite's tasks (engine compute)"),
    ("record_s", "metrics, outbox, audit, policy, attestation"),
)


# -- inside Django ------------------------------------------------------------


def _bundle_zip(args) -> Path:
    """The generated LM bundle, zipped once (stored) beside the cached folder."""
    from bench.eval_throughput import DEFAULT_OUT, bench_config, ensure_bundles

    cfg = bench_config(args.params or (10e6 if args.quick else 100e6))
    folder = ensure_bundles(cfg, DEFAULT_OUT, genai=False)["optimum"]
    archive = folder.with_suffix(".zip")
    if not archive.is_file() or archive.stat().st_mtime < folder.stat().st_mtime:
        part = archive.with_suffix(".zip.part")
        with zipfile.ZipFile(part, "w", zipfile.ZIP_STORED, allowZip64=True) as zf:
            for path in sorted(folder.rglob("*")):
                if path.is_file() and path.name != "bench_model.json":
                    zf.write(path, f"model/{path.relative_to(folder)}")
        part.rename(archive)
    return archive


def _setup(archive: Path):
    """Agency, member, released version holding ``archive``, and civitas-core."""
    from django.contrib.auth import get_user_model
    from django.core.files import File
    from django.core.files.storage import storages

    from engine.bundle import sha256_file
    from governance.services.suites import builtin_suites_sync
    from registry.models import ArtifactState, ModelKind, Role
    from tests.factories import AgencyFactory, MembershipFactory, ModelVersionFactory

    admin = get_user_model().objects.create_superuser("bench-admin", "a@b.c", None)
    suites = {s.name: s for s in builtin_suites_sync(admin=admin)}
    agency = AgencyFactory(slug="bench-city", name="Bench City", jurisdiction="FR")
    member = MembershipFactory(agency=agency, role=Role.MEMBER).user
    with open(archive, "rb") as handle:
        key = storages["artifacts"].save("bench/lm.zip", File(handle))
    version = ModelVersionFactory(
        model__agency=agency,
        artifact_state=ArtifactState.AVAILABLE,
        artifact_key=key,
        artifact_digest=sha256_file(archive),
        artifact_size=archive.stat().st_size,
        artifact_format="zip",
        kind=ModelKind.CAUSAL_LM_KV,
        layout="optimum",
    )
    return member, version, suites["civitas-core"]


class _Timings(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.last: dict = {}

    def emit(self, record: logging.LogRecord) -> None:
        if record.getMessage() == "evaluation_timings":
            self.last = dict(record.timings)


def _one_run(member, version, suite, handler: _Timings) -> dict:
    from governance.models import RunStatus
    from governance.services import evaluations

    run = evaluations.evaluation_request(
        actor=member, model_version=version, suite=suite, enqueue=False
    )
    handler.last = {}
    evaluations.evaluation_execute(run_id=run.pk)
    run.refresh_from_db()
    if run.status != RunStatus.SUCCEEDED:
        raise SystemExit(f"run {run.pk} ended {run.status}: {run.failure_reason}")
    wall = (run.finished_at - run.started_at).total_seconds()
    timings = handler.last
    compute = timings.get("tasks_s") or float("nan")
    return {
        "wall_s": wall,
        "compute_s": compute,
        "ratio": wall / compute,
        "cache": timings.get("cache", "off"),
        "breakdown": {k: timings[k] for k, _ in BREAKDOWN if k in timings},
    }


def _worker_runs(member, version, suite, *, mode: str, runs: int) -> list[dict]:
    """``runs`` runs through a real Celery worker (prefork, concurrency 1).

    The baseline worker loads ``bench.eval_overhead_settings`` (the cache
    off). Wall is the row's claim to ``succeeded``; compute the sum of the
    tasks' ``performance.wall_s`` as the engine stored them; the breakdown
    is only in the in-process mode (the worker's log drops extras).
    """
    from django.conf import settings

    from governance.models import EvaluationRun, RunStatus
    from governance.services import evaluations

    env = dict(os.environ, PYTHONPATH=str(ROOT), LOG_LEVEL="WARNING")
    if mode == "baseline":
        env["DJANGO_SETTINGS_MODULE"] = "bench.eval_overhead_settings"
    worker = subprocess.Popen(
        [PY, "-m", "celery", "-A", "config", "worker", "--pool", "prefork",
         "--concurrency", "1", "--queues", settings.CELERY_TASK_DEFAULT_QUEUE,
         "--hostname", f"bench-{os.getpid()}@%h", "--without-gossip",
         "--without-mingle", "--without-heartbeat"],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    out = []
    try:
        for _ in range(runs):
            run = evaluations.evaluation_request(
                actor=member, model_version=version, suite=suite
            )
            while run.status not in evaluations.FINISHED:
                time.sleep(0.2)
                run = EvaluationRun.objects.get(pk=run.pk)
            if run.status != RunStatus.SUCCEEDED:
                raise SystemExit(
                    f"run {run.pk} ended {run.status}: {run.failure_reason}"
                )
            wall = (run.finished_at - run.started_at).total_seconds()
            compute = sum((r.get("performance") or {}).get("wall_s") or 0.0
                          for r in run.results)  # fmt: skip
            out.append({"wall_s": wall, "compute_s": compute, "ratio": wall / compute,
                        "cache": mode, "breakdown": {}})  # fmt: skip
    finally:
        worker.terminate()
        worker.wait(timeout=60)
    return out


def measure(args) -> dict:
    """Runs in the cloned database: the figures of each mode."""
    from django.test import override_settings

    from governance.services import bundle_cache, evaluations

    handler = _Timings()
    evaluations.logger.addHandler(handler)
    evaluations.logger.setLevel(logging.INFO)
    member, version, suite = _setup(_bundle_zip(args))
    modes = ["baseline"] if args.baseline else ["baseline", "cached"]
    out = {}
    for mode in modes:
        if args.worker:
            runs = _worker_runs(member, version, suite, mode=mode, runs=args.runs)
            warm = runs[1:] if mode == "cached" and len(runs) > 1 else runs
            out[mode] = {"runs": runs, "median": _median(warm)}
            continue
        limit = 0 if mode == "baseline" else _cache_bytes()
        with override_settings(CIVITAS_EVAL_BUNDLE_CACHE_BYTES=limit):
            bundle_cache._caches.clear()
            runs = [_one_run(member, version, suite, handler) for _ in range(args.runs)]
            for cache in bundle_cache._caches.values():
                cache.clear()
        warm = runs[1:] if mode == "cached" and len(runs) > 1 else runs
        out[mode] = {"runs": runs, "median": _median(warm)}
    return {
        "modes": out,
        "artifact_bytes": version.artifact_size,
        "through": "celery worker" if args.worker else "evaluation_execute in process",
    }


def _cache_bytes() -> int:
    """The cache's size as configured (on by default), after the stored
    artifact has settled: the store does not vouch for an object written
    less than ``SETTLE_SECONDS`` ago, and would be asked to verify it again."""
    from django.conf import settings

    from registry import fingerprint

    time.sleep(fingerprint.SETTLE_SECONDS)
    return settings.CIVITAS_EVAL_BUNDLE_CACHE_BYTES or 8 << 30


def _median(runs: list[dict]) -> dict:
    keys = {k for r in runs for k in r["breakdown"]}
    return {
        "wall_s": statistics.median(r["wall_s"] for r in runs),
        "compute_s": statistics.median(r["compute_s"] for r in runs),
        "ratio": statistics.median(r["ratio"] for r in runs),
        "breakdown": {
            k: statistics.median(r["breakdown"].get(k, 0.0) for r in runs)
            for k in sorted(keys)
        },
    }


# -- the driver ---------------------------------------------------------------


def _template(args) -> str:
    template = f"{args.db_prefix}_tpl"
    server = f"{args.database}/postgres"
    exists = psql(server, f"SELECT 1 FROM pg_database WHERE datname = '{template}'")
    if exists and not args.rebuild:
        return template
    psql(server, f"DROP DATABASE IF EXISTS {template} WITH (FORCE)")
    psql(server, f"CREATE DATABASE {template}")
    subprocess.run(
        [PY, "manage.py", "migrate", "--noinput", "-v", "0"],
        cwd=ROOT,
        env=django_env(args, template),
        check=True,
    )
    return template


def run(args) -> dict:
    template = _template(args)
    clone = f"{args.db_prefix}_run_{os.getpid()}"
    server = f"{args.database}/postgres"
    psql(server, f"DROP DATABASE IF EXISTS {clone} WITH (FORCE)")
    psql(server, f"CREATE DATABASE {clone} TEMPLATE {template}")
    flags = ["--measure", "--runs", str(args.runs)]
    flags += ["--quick"] * args.quick + ["--baseline"] * args.baseline
    flags += ["--worker"] * args.worker
    flags += ["--params", str(args.params)] if args.params else []
    load_before = os.getloadavg()
    started = time.perf_counter()
    try:
        done = subprocess.run(
            [PY, __file__, *flags],
            cwd=ROOT,
            env=django_env(args, clone),
            stdout=subprocess.PIPE,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            raise SystemExit(f"the measuring process failed ({done.returncode})")
        measured = json.loads(done.stdout.strip().splitlines()[-1])
    finally:
        psql(server, f"DROP DATABASE IF EXISTS {clone} WITH (FORCE)")
    return {
        "model": "~10 M" if args.quick else f"~{(args.params or 100e6) / 1e6:.0f} M",
        "suite": "civitas-core",
        "runs_per_mode": args.runs,
        **measured,
        "processor": processor(),
        "load_average": {"before": load_before, "after": os.getloadavg()},
        "seconds": round(time.perf_counter() - started, 1),
    }


def _breakdown_lines(modes: dict) -> list[str]:
    lines = ["", "breakdown (s, median)"]
    for key, label in BREAKDOWN:
        cells = "".join(
            f"{m['median']['breakdown'].get(key, float('nan')):12.3f}"
            for m in modes.values()
        )
        lines.append(f"  {label:44}{cells}")
    return lines


def render_table(report: dict) -> str:
    """The report as a readable table."""
    cpu, modes = report["processor"], report["modes"]
    before, after = report["load_average"]["before"], report["load_average"]["after"]
    lines = [
        f"Evaluation overhead, {report['model']} params, suite civitas-core, "
        f"through {report.get('through', 'evaluation_execute in process')}",
        f"processor: {describe_processor(cpu)}",
        f"load average: {before[0]:.2f} before, {after[0]:.2f} after",
        "",
        f"{'':46}" + "".join(f"{m:>12}" for m in modes),
    ]
    for key, label in (
        ("wall_s", "wall, pickup to succeeded (s)"),
        ("compute_s", "engine compute: the tasks (s)"),
        ("ratio", "ratio wall / compute (target <= 1.10)"),
    ):
        cells = "".join(f"{m['median'][key]:12.3f}" for m in modes.values())
        lines.append(f"{label:46}{cells}")
    if any(m["median"]["breakdown"] for m in modes.values()):
        lines += _breakdown_lines(modes)
    if "baseline" in modes and "cached" in modes:
        saved = (
            modes["baseline"]["median"]["wall_s"] - modes["cached"]["median"]["wall_s"]
        )
        lines += ["", f"saved per run by the cache: {saved:.3f} s"]
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="~10 M params model")
    parser.add_argument("--params", type=float, help="model size (default 100e6)")
    parser.add_argument("--runs", type=int, default=3, help="runs per mode (default 3)")
    parser.add_argument(
        "--baseline", action="store_true", help="only the cache-off baseline"
    )
    parser.add_argument(
        "--database",
        default="postgres://postgres@127.0.0.1:5432",
        help="PostgreSQL server URL, without a database name",
    )
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/10")
    parser.add_argument("--db-prefix", default="civitas_bench_evaloh")
    parser.add_argument("--rebuild", action="store_true", help="rebuild the template")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument(
        "--worker",
        action="store_true",
        help="run through a real Celery worker (no breakdown)",
    )
    parser.add_argument("--measure", action="store_true", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.measure:
        import django

        django.setup()
        print(json.dumps(measure(args)))
        return 0
    report = run(args)
    print(json.dumps(report) if args.json else render_table(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
