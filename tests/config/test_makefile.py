"""`make test` names its database, Redis database and queue after the checkout."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="no make")


def _names(directory, **env: str) -> dict[str, str]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("TEST_")}
    environment.update(env)
    result = subprocess.run(
        ["make", "-s", "-f", str(ROOT / "Makefile"), "-C", str(directory), "test-env"],
        env=environment, capture_output=True, text=True, check=True,
    )
    return dict(line.split("=", 1) for line in result.stdout.split())


def test_two_checkouts_get_their_own_database_redis_db_and_queue(tmp_path):
    here, there = _names(ROOT), _names(tmp_path)

    assert here["DATABASE_URL"] != there["DATABASE_URL"]
    assert here["CELERY_TASK_DEFAULT_QUEUE"] != there["CELERY_TASK_DEFAULT_QUEUE"]
    assert here["DATABASE_URL"].rsplit("/", 1)[1].startswith("civitas_")
    db = int(here["CELERY_BROKER_URL"].rsplit("/", 1)[1])
    assert 1 <= db <= 15
    assert _names(ROOT) == here  # stable for a checkout


def test_explicit_targets_win(tmp_path):
    names = _names(tmp_path, TEST_DATABASE_URL="postgres://u@db:5432/mine",
                   TEST_CELERY_BROKER_URL="redis://r:6379/7")
    assert names["DATABASE_URL"] == "postgres://u@db:5432/mine"
    assert names["CELERY_BROKER_URL"] == "redis://r:6379/7"
