"""The image's recipe: what the build context keeps out, and what the build does.

No container engine runs here, so the Dockerfile is read, not built: its
instructions in order (continuations joined), and .dockerignore with
docker's own matcher (docker-py's ``exclude_paths``, the rules ``docker
build`` applies: patterns from the context root, ``**``, ``!`` exceptions).
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess

import pytest
from docker.utils.build import exclude_paths

from tests.conftest import ROOT

DOCKERFILE = ROOT / "deploy" / "Dockerfile"

SECRET_PATHS = [
    "deploy/secrets/secret_key",
    "deploy/secrets/signing_key.pem",
    "deploy/secrets/database_url",
    "deploy/.env",
    "var/signing_key.pem",
    "var/secret_key",
    "var/civitas.sqlite3",
    "var/artifacts/ab/cd/bundle.zip",
    ".venv/bin/python",
    ".venv/lib/python3.11/site-packages/x.py",
    ".git/HEAD",
    ".git/config",
    "registry/__pycache__/models.cpython-311.pyc",
    ".pytest_cache/v/cache/nodeids",
    ".ruff_cache/0.1/x",
    "keys/release.key",
]
NEEDED_PATHS = [
    "manage.py",
    "requirements.txt",
    "constraints.txt",
    "config/settings.py",
    "deploy/Dockerfile",
    "deploy/env.example",
    "deploy/gunicorn.conf.py",
    "deploy/healthcheck.py",
    "deploy/grants.py",
    "deploy/postgres/grants.sql",
    "governance/suites/civitas-core/suite.json",
]


def instructions() -> list[tuple[str, str]]:
    """The Dockerfile's (INSTRUCTION, arguments), continuations joined."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    found = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            found.append((word.upper(), rest.strip()))
    return found


def env_values(args: str) -> dict[str, str]:
    return dict(part.split("=", 1) for part in shlex.split(args) if "=" in part)


@pytest.fixture
def context(tmp_path):
    """A build context holding the repository's .dockerignore and a developer's mess."""
    shutil.copy(ROOT / ".dockerignore", tmp_path / ".dockerignore")
    for path in SECRET_PATHS + NEEDED_PATHS:
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_text("x")
    return tmp_path


def test_dockerignore_keeps_secrets_var_venv_git_and_caches_out(context):
    patterns = [
        line.strip()
        for line in (context / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]

    sent = exclude_paths(str(context), patterns, dockerfile="deploy/Dockerfile")

    leaked = [p for p in SECRET_PATHS if p in sent]
    missing = [p for p in NEEDED_PATHS if p not in sent]
    assert leaked == []
    assert missing == []


def test_gitignore_keeps_the_deployment_secrets_out_of_git(tmp_path):
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    shutil.copy(ROOT / ".gitignore", tmp_path / ".gitignore")

    result = subprocess.run(
        ["git", "-C", str(tmp_path), "check-ignore", "deploy/secrets/secret_key",
         "deploy/.env", "deploy/secrets/signing_key.pem", "var/secret_key"],
        capture_output=True, text=True,
    )  # fmt: skip

    assert len(result.stdout.split()) == 4, result.stdout


def test_static_root_is_set_before_collectstatic_and_is_the_served_one():
    steps = instructions()
    collect = next(
        i for i, (word, args) in enumerate(steps)
        if word == "RUN" and "collectstatic" in args
    )  # fmt: skip
    env_before: dict[str, str] = {}
    for word, args in steps[:collect]:
        if word == "ENV":
            env_before.update(env_values(args))
    env_after: dict[str, str] = dict(env_before)
    for word, args in steps[collect:]:
        if word == "ENV":
            env_after.update(env_values(args))

    assert "STATIC_ROOT" in env_before
    assert env_after["STATIC_ROOT"] == env_before["STATIC_ROOT"]
    run = steps[collect][1]
    assert "STATIC_ROOT=" not in run.split("collectstatic")[0]  # not overridden
    assert f"test -s {env_before['STATIC_ROOT']}/staticfiles.json" in run


def test_the_image_user_owns_what_it_writes_and_nothing_else():
    steps = instructions()
    user_at = max(i for i, (word, _) in enumerate(steps) if word == "USER")
    env: dict[str, str] = {}
    for word, args in steps:
        if word == "ENV":
            env.update(env_values(args))
    chowns = " ".join(a for w, a in steps[:user_at] if w == "RUN" and "chown" in a)

    assert steps[user_at][1] not in {"root", "0"}
    for directory in ("/app/var", env["CIVITAS_VAR_DIR"], "/srv/civitas-drop"):
        assert directory in chowns, directory
    assert env["STATIC_ROOT"].startswith("/app/var/")
    assert not any(w == "COPY" and "--chown" in a for w, a in steps), (
        "the code must stay read-only to the app user"
    )


def test_image_declares_volumes_and_a_healthcheck():
    steps = instructions()
    volumes = " ".join(a for w, a in steps if w == "VOLUME")
    env: dict[str, str] = {}
    for word, args in steps:
        if word == "ENV":
            env.update(env_values(args))

    assert env["ARTIFACT_ROOT"] in volumes
    assert "/srv/civitas-drop" in volumes  # env.example's CIVITAS_REFERENCE_ROOTS
    assert any(w == "HEALTHCHECK" and "healthcheck.py" in a for w, a in steps)
