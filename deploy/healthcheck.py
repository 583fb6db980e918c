"""Container health checks, one per role: ``python deploy/healthcheck.py ROLE``.

    web     GET /healthz on this container's port, with a Host header the
            site accepts (the first of ALLOWED_HOSTS): 200 is healthy.
    worker  ``celery inspect ping`` of this container's worker node only
            (``--destination NODE``), bounded by ``--timeout``.
    beat    celery beat is scheduling: some enabled periodic task was sent
            within ``--max-age`` seconds (the audit checkpoint task is due
            every minute; django-celery-beat writes ``last_run_at`` back at
            least every three minutes).
    mlflow  the tracking API of an MLflow server, asked with the Host header
            the platform sends (``--host-header mlflow:5000``): a server whose
            ``--allowed-hosts`` leaves that name out answers 403, unhealthy
            (its /health answers any Host, so it cannot tell).

Exit status 0 when healthy, 1 otherwise, with one line saying why. Standard
library only for web and mlflow (the MLflow image has no Civitas code).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _get(url: str, host: str, timeout: float) -> int:
    request = urllib.request.Request(url, headers={"Host": host})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


def check_web(args) -> str | None:
    port = os.environ.get("PORT", "8000")
    hosts = [h for h in os.environ.get("ALLOWED_HOSTS", "").split(",") if h.strip()]
    host = hosts[0].strip().lstrip(".") if hosts else "localhost"
    host = "localhost" if host == "*" else host
    status = _get(f"http://127.0.0.1:{port}/healthz", host, args.timeout)
    return None if status == 200 else f"/healthz answered {status}"


def check_worker(args) -> str | None:
    command = [
        sys.executable, "-m", "celery", "-A", "config", "inspect", "ping",
        "--destination", args.node, "--timeout", str(args.timeout),
    ]  # fmt: skip
    result = subprocess.run(
        command, cwd=ROOT, capture_output=True, text=True, timeout=args.timeout + 30
    )
    if result.returncode == 0 and "pong" in result.stdout:
        return None
    return f"{args.node} did not answer a ping: {result.stdout.strip()[-200:]}"


def check_beat(args) -> str | None:
    sys.path.insert(0, str(ROOT))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    import django

    django.setup()
    from datetime import timedelta

    from django.db.models import Max
    from django.utils import timezone
    from django_celery_beat.models import PeriodicTask

    last = PeriodicTask.objects.filter(enabled=True).aggregate(m=Max("last_run_at"))
    when = last["m"]
    if when and timezone.now() - when <= timedelta(seconds=args.max_age):
        return None
    return f"no periodic task sent in the last {args.max_age} s (last: {when})"


# MLflow exempts /health and /version from its Host check: ask the tracking API,
# which the platform uses. 404 (no experiment "Default") still is an answer.
MLFLOW_PROBE = "/api/2.0/mlflow/experiments/get-by-name?experiment_name=Default"


def check_mlflow(args) -> str | None:
    url = args.url.rstrip("/") + MLFLOW_PROBE
    status = _get(url, args.host_header, args.timeout)
    if status in (200, 404):
        return None
    return f"MLflow's tracking API answered {status} to Host {args.host_header}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Civitas container health checks")
    parser.add_argument("role", choices=["web", "worker", "beat", "mlflow"])
    parser.add_argument("--timeout", type=float, default=5.0)
    parser.add_argument("--node", default="", help="worker node name (worker)")
    parser.add_argument("--max-age", type=int, default=600, help="seconds (beat)")
    parser.add_argument("--url", default="http://127.0.0.1:5000", help="(mlflow)")
    parser.add_argument("--host-header", default="mlflow:5000", help="(mlflow)")
    args = parser.parse_args(argv)
    checks = {
        "web": check_web,
        "worker": check_worker,
        "beat": check_beat,
        "mlflow": check_mlflow,
    }
    try:
        problem = checks[args.role](args)
    except Exception as error:  # any failure to check is an unhealthy answer
        problem = f"{type(error).__name__}: {error}"
    if problem:
        print(f"unhealthy: {problem}")
        return 1
    print("healthy")
    return 0


if __name__ == "__main__":
    sys.exit(main())
