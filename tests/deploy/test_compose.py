"""deploy/compose.yaml and its S3 variant, read as docker compose would merge them.

No container engine runs here: the files are parsed and checked for what the
deployment needs (health checks, roles, queues, limits, secrets), and
``make deploy-check`` (tests/deploy/test_deploy_check.py) runs the same
processes for real.
"""

from __future__ import annotations

import re
import shlex
from urllib.parse import urlsplit

import pytest
import yaml

from tests.conftest import ROOT

DEPLOY = ROOT / "deploy"
LONG_RUNNING = {"postgres", "redis", "mlflow", "web", "worker",
                "worker-housekeeping", "beat"}  # fmt: skip


def load(name: str) -> dict:
    return yaml.safe_load((DEPLOY / name).read_text())


def env_example() -> dict[str, str]:
    values = {}
    for line in (DEPLOY / "env.example").read_text().splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            values[key] = value
    return values


def command_words(service: dict) -> list[str]:
    command = service.get("command", [])
    return shlex.split(command) if isinstance(command, str) else list(command)


def health_test(service: dict) -> str:
    test = service["healthcheck"]["test"]
    return " ".join(test) if isinstance(test, list) else test


@pytest.fixture(scope="module")
def compose() -> dict:
    return load("compose.yaml")


def test_every_service_has_a_health_check_and_jobs_say_they_have_none(compose):
    for name, service in compose["services"].items():
        check = service.get("healthcheck", {})
        if service.get("restart") == "no":  # a job: it exits when done
            assert check == {"disable": True}, name
        else:
            assert check.get("test"), f"{name} has no health check"
    assert set(compose["services"]) >= LONG_RUNNING | {"migrate"}


def test_health_checks_ask_the_right_question(compose):
    services = compose["services"]
    assert "healthcheck.py web" in health_test(services["web"])
    for name in ("worker", "worker-housekeeping"):
        test = health_test(services[name])
        node = next(w for w in command_words(services[name]) if "@%h" in w)
        assert "healthcheck.py worker" in test and "--timeout" in test
        assert f"--node {node.replace('%h', '$$HOSTNAME')}" in test
    assert "healthcheck.py beat" in health_test(services["beat"])
    mlflow = health_test(services["mlflow"])
    assert "/api/2.0/mlflow/" in mlflow and "'Host': 'mlflow:5000'" in mlflow


def test_mlflow_allows_the_host_the_platform_uses(compose):
    words = command_words(compose["services"]["mlflow"])
    allowed = words[words.index("--allowed-hosts") + 1].split(",")
    tracking = urlsplit(env_example()["MLFLOW_TRACKING_URI"])

    assert tracking.netloc in allowed  # mlflow:5000


def test_one_worker_per_queue_with_memory_limits(compose):
    services = compose["services"]
    queues = {}
    for name, service in services.items():
        words = command_words(service)
        if "worker" in words and "celery" in words:
            queues[name] = words[words.index("--queues") + 1]
            assert service["deploy"]["resources"]["limits"]["memory"], name

    assert sorted(queues.values()) == ["civitas", "civitas-housekeeping"]
    assert env_example()["CELERY_TASK_DEFAULT_QUEUE"] == "civitas"


def _limit_bytes(text: str) -> int:
    number, unit = re.fullmatch(r"(\d+)([kmg]?)", text.lower()).groups()
    return int(number) * {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3}[unit]


def test_the_evaluation_worker_leaves_room_above_the_engine_cap(compose):
    limit = compose["services"]["worker"]["deploy"]["resources"]["limits"]["memory"]
    engine_cap = int(env_example()["CIVITAS_EVAL_MEMORY_BYTES"])

    assert _limit_bytes(limit) > engine_cap


def test_only_the_migration_connects_as_the_owner(compose):
    services = compose["services"]
    migrate = services["migrate"]
    assert migrate["environment"]["DATABASE_URL_FILE"] == (
        "/run/secrets/database_url_owner"
    )
    assert "deploy/grants.py --app-role civitas_app" in " ".join(command_words(migrate))
    for name in ("web", "worker", "worker-housekeeping", "beat"):
        assert "database_url" in services[name]["secrets"], name
        assert "database_url_owner" not in services[name]["secrets"], name
    assert env_example()["DATABASE_URL_FILE"] == "/run/secrets/database_url"
    postgres = services["postgres"]
    mounts = " ".join(postgres["volumes"])
    assert "init-roles.sh:/docker-entrypoint-initdb.d/" in mounts
    assert (DEPLOY / "postgres" / "roles.sql").exists()


def test_every_secret_file_of_env_example_is_a_compose_secret(compose):
    declared = set(compose["secrets"])
    app = set(compose["x-civitas"]["secrets"])
    for name, value in env_example().items():
        if name.endswith("_FILE") and value.startswith("/run/secrets/"):
            secret = value.removeprefix("/run/secrets/")
            assert secret in declared and secret in app, name
    for secret in compose["secrets"].values():
        assert secret["file"].startswith("./secrets/")
    docs = (ROOT / "docs" / "deployment.md").read_text()
    for secret in compose["secrets"].values():
        assert secret["file"].removeprefix("./") in docs, secret["file"]


def test_s3_variant_two_workers_on_separate_volumes_share_one_bucket():
    base, s3 = load("compose.yaml"), load("compose.s3.yaml")
    services = s3["services"]
    a, b = services["worker"], services["worker-b"]

    def artifacts_volume(service):
        target = ":/var/lib/civitas/artifacts"
        mounts = [v for v in service["volumes"] if v.endswith(target)]
        assert len(mounts) == 1
        return mounts[0].split(":")[0]

    assert artifacts_volume(a) != artifacts_volume(b)
    assert {artifacts_volume(a), artifacts_volume(b)} <= set(s3["volumes"])
    assert b["extends"] == {"file": "compose.yaml", "service": "worker"}
    words = command_words(b)
    assert words[words.index("--queues") + 1] == "civitas"
    assert a["environment"] == b["environment"]
    assert a["environment"]["ARTIFACT_STORAGE_BACKEND"] == "s3"
    for name in ("web", "beat", "migrate", "worker-housekeeping"):
        assert services[name]["environment"] == a["environment"], name
        assert name in base["services"]
    assert "minio" in services and health_test(services["minio"])
    secrets = {v.removeprefix("/run/secrets/") for k, v in a["environment"].items()
               if k.endswith("_FILE")}  # fmt: skip
    assert secrets <= set(s3["secrets"])
    # Every variable is one the platform reads (a setting, or its _FILE secret).
    from django.conf import settings

    for key in a["environment"]:
        assert hasattr(settings, key.removesuffix("_FILE")), key
