"""Password locks and rate limits hold across web processes (SECURITY C14, C8).

Two gunicorn servers, each its own process, share one budget through the
cache: on the production path (PostgreSQL, Redis) and on `make run`'s
embedded default (SQLite, the database cache made by ``createcachetable``).
"""

from __future__ import annotations

import base64
import secrets
import socket
import subprocess
import sys
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
from django.core.cache import cache

from tests.conftest import ROOT, database_url, process_env, wait_until

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

PASSWORD = "correct-Horse-battery-9"
MANAGE = [sys.executable, str(ROOT / "manage.py")]
PEOPLE = (
    "from django.contrib.auth import get_user_model;"
    "from knox.models import AuthToken;"
    "User = get_user_model();"
    "a = User.objects.create_user('alice', 'a@x.gov', '{pw}', is_staff=True);"
    "c = User.objects.create_user('carol', 'c@x.gov', '{pw}');"
    "print(AuthToken.objects.create(a)[1], AuthToken.objects.create(c)[1])"
)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _environment(kind: str, tmp_path) -> dict[str, str]:
    limits = {
        "PASSWORD_ATTEMPTS_PER_ACCOUNT": "4",
        "PASSWORD_ATTEMPTS_PER_ADDRESS": "100",
        "API_THROTTLE_USER": "6/min",
        "LOG_LEVEL": "WARNING",
    }
    if kind == "production":
        env = process_env(DATABASE_URL=database_url(), **limits)
        assert env["CELERY_BROKER_URL"].startswith("redis://")  # the Redis cache
        env.pop("CACHE_URL", None)
        return env
    env = process_env(CIVITAS_VAR_DIR=str(tmp_path), **limits)
    for name in ("DATABASE_URL", "CELERY_BROKER_URL", "CELERY_RESULT_BACKEND",
                 "MLFLOW_TRACKING_URI", "CACHE_URL"):
        env.pop(name, None)
    subprocess.run([*MANAGE, "migrate", "--noinput"], env=env, check=True,
                   capture_output=True)
    subprocess.run([*MANAGE, "createcachetable"], env=env, check=True,
                   capture_output=True)
    return env


@pytest.fixture(params=["production", "embedded"])
def two_web_processes(request, tmp_path):
    cache.clear()
    env = _environment(request.param, tmp_path)
    tokens = subprocess.run(
        [*MANAGE, "shell", "-c", PEOPLE.format(pw=PASSWORD)],
        env=env, check=True, capture_output=True, text=True,
    ).stdout.split()[-2:]
    servers, bases = [], []
    for _ in range(2):
        port = _free_port()
        servers.append(subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "config.wsgi:application",
             "--bind", f"127.0.0.1:{port}", "--workers", "1"],
            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        ))
        bases.append(f"http://127.0.0.1:{port}")
    try:
        for base in bases:
            def up(base=base):
                try:
                    return requests.get(f"{base}/api/v1/me/", timeout=10).status_code
                except requests.ConnectionError:
                    return None

            assert wait_until(up, timeout=60, what=f"gunicorn at {base}") == 401
        yield bases, tokens
    finally:
        for server in servers:
            server.terminate()
            server.wait(timeout=20)
        cache.clear()


def _basic(username: str, password: str) -> dict[str, str]:
    pair = base64.b64encode(f"{username}:{password}".encode()).decode()
    return {"Authorization": f"Basic {pair}"}


def test_c14_password_guesses_are_locked_across_web_processes(two_web_processes):
    bases, _ = two_web_processes
    statuses = []
    for n in range(300):  # alternate between the two processes
        response = requests.post(f"{bases[n % 2]}/api/v1/auth/tokens/",
                                 headers=_basic("alice", "wrong"), timeout=30)
        statuses.append(response.status_code)
        if response.status_code == 429:
            break
    assert statuses == [401] * 4 + [429]  # PASSWORD_ATTEMPTS_PER_ACCOUNT=4

    answers = [
        requests.post(f"{base}/api/v1/auth/tokens/",
                      headers=_basic("alice", password), timeout=30)
        for base in bases for password in (PASSWORD, "wrong")
    ]
    assert {a.status_code for a in answers} == {429}
    assert {a.content for a in answers} == {answers[0].content}
    assert answers[0].json()["code"] == "account_locked"
    assert all(int(a.headers["Retry-After"]) > 0 for a in answers)

    # The admin login of either process counts against the same account.
    csrf = secrets.token_hex(16)
    admin = requests.post(
        f"{bases[1]}/admin/login/",
        data={"username": "alice", "password": PASSWORD,
              "csrfmiddlewaretoken": csrf, "next": "/admin/"},
        cookies={"csrftoken": csrf}, timeout=30, allow_redirects=False,
    )
    assert admin.status_code == 429
    assert int(admin.headers["Retry-After"]) > 0


def test_c8_the_rate_limit_holds_across_web_processes(two_web_processes):
    bases, (alice, carol) = two_web_processes

    def me(token: str, n: int) -> requests.Response:
        return requests.get(f"{bases[n % 2]}/api/v1/me/",
                            headers={"Authorization": f"Token {token}"}, timeout=30)

    statuses = [me(alice, n).status_code for n in range(7)]
    assert statuses == [200] * 6 + [429]  # API_THROTTLE_USER=6/min
    refused = me(alice, 7)
    assert refused.json()["code"] == "throttled"
    assert int(refused.headers["Retry-After"]) > 0

    # 200 concurrent requests: each process serves one at a time, so at most
    # one request per process can slip past a count being written.
    with ThreadPoolExecutor(max_workers=16) as pool:
        counts = Counter(r.status_code for r in pool.map(lambda n: me(carol, n),
                                                         range(200)))
    assert set(counts) == {200, 429}
    assert 6 <= counts[200] <= 6 + 2
