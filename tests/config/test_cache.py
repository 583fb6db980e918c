"""The cache every web process shares (throttles, password attempts; SECURITY C8)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import ROOT, process_env

PRINT_CACHE = "from django.conf import settings; print(json.dumps(settings.CACHES))"


def _caches(tmp_path, **values: str) -> dict:
    env = process_env(CIVITAS_VAR_DIR=str(tmp_path), **values)
    for name in ("CACHE_URL", "CELERY_BROKER_URL", "DATABASE_URL"):
        if name not in values:
            env.pop(name, None)
    result = subprocess.run(
        [sys.executable, str(ROOT / "manage.py"), "shell", "-c",
         f"import json; {PRINT_CACHE}"],
        env=env, capture_output=True, text=True, check=True,
    )
    return json.loads(result.stdout.strip().splitlines()[-1])["default"]


@pytest.mark.parametrize(
    ("values", "backend", "location"),
    [
        ({}, "django.core.cache.backends.db.DatabaseCache", "civitas_cache"),
        (
            {"CELERY_BROKER_URL": "redis://127.0.0.1:6379/3"},
            "config.cache.BrokerRedisCache",
            "redis://127.0.0.1:6379/3",
        ),
        (
            {"CACHE_URL": "redis://cache.internal:6379/1",
             "CELERY_BROKER_URL": "redis://127.0.0.1:6379/3"},
            "django.core.cache.backends.redis.RedisCache",
            "redis://cache.internal:6379/1",
        ),
    ],
    ids=["embedded", "redis-broker", "cache-url"],
)
def test_c8_the_default_cache_is_shared_by_every_process(
    tmp_path, values, backend, location
):
    cache = _caches(tmp_path, **values)
    assert (cache["BACKEND"], cache["LOCATION"]) == (backend, location)
    if backend.endswith("DatabaseCache"):
        assert cache["OPTIONS"]["MAX_ENTRIES"] >= 100_000
    else:
        assert cache["OPTIONS"]["socket_timeout"] == 2


def test_c8_every_deployment_creates_the_cache_table_where_it_migrates():
    for path in ("deploy/run-local.sh", "deploy/Procfile", "deploy/compose.yaml"):
        text = (ROOT / path).read_text()
        assert "createcachetable" in text, path
        assert text.index("migrate --noinput") < text.index("createcachetable"), path


@pytest.mark.django_db
def test_c8_clearing_the_cache_on_the_brokers_redis_keeps_queued_tasks(settings):
    from django.core.cache import cache
    from kombu import Connection

    assert settings.CACHES["default"]["BACKEND"] == "config.cache.BrokerRedisCache"
    queue = "civitas-test-cache-clear"
    with Connection(settings.CELERY_BROKER_URL) as conn:
        simple = conn.SimpleQueue(queue)
        simple.put({"kept": True})
        cache.set("throttle-probe", 1)
        cache.clear()
        assert cache.get("throttle-probe") is None
        assert simple.get(timeout=5).payload == {"kept": True}
        simple.clear()
        simple.close()
