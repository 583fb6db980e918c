"""``make deploy-check`` passes: the compose deployment runs, without containers.

deploy/check.py clones the committed checkout, drops to an unprivileged user,
creates a fresh database with the two roles, starts gunicorn, a worker per
queue, beat and a real MLflow server, and drives an upload, an evaluation and
an audit verification through HTTP; then tears everything down. This test
runs it as ``make deploy-check`` does and checks it left nothing behind.
"""

from __future__ import annotations

import subprocess
import sys

import psycopg
import pytest
from django.conf import settings

from tests.conftest import ROOT, process_env
from tests.deploy.test_roles import _superuser_url

STEPS = [
    "migrated as the owner role; app role granted; static files collected",
    "web healthy; the admin's CSS is served",
    "both workers answer `celery inspect ping`",
    "MLflow accepts Host mlflow:5000 and refuses others (403)",
    "token created over HTTP with the member's password",
    "bundle uploaded and verified by the worker",
    "succeeded on suite civitas-perplexity-public-texts",
    "MLflow server holds the run",
    "verify_audit:",
    "the app role is refused UPDATE on the audit chain and replica mode",
    "PASSED in",
]


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_deploy_check_runs_the_compose_deployment_end_to_end():
    superuser = _superuser_url()
    result = subprocess.run(
        [sys.executable, "deploy/check.py", "--superuser-url", superuser,
         "--redis-url", settings.CELERY_BROKER_URL],
        cwd=ROOT, env=process_env(), capture_output=True, text=True, timeout=1100,
    )  # fmt: skip

    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-6000:]
    missing = [step for step in STEPS if step not in output]
    assert missing == [], output[-4000:]
    with psycopg.connect(superuser, autocommit=True) as conn:
        left = conn.execute(
            "SELECT datname FROM pg_database WHERE datname LIKE 'civitas_check_%'"
        ).fetchall()
    assert left == [], "the check left its database behind"
