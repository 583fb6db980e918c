"""The task options the retry policy declares once, as Celery sees them."""

from __future__ import annotations

from django.db import InterfaceError, OperationalError

from workers import tasks

RETRIED = {
    "civitas.evaluation_run": 3,
    "civitas.artifact_verify": 5,
    "civitas.dataset_file_verify": 5,
    "civitas.model_version_derive": 5,
    "civitas.usecase_recheck": 5,
    "civitas.webhook_deliver": 5,
    "civitas.notification_email": 5,
    "civitas.modification_assess": 5,
}


def _registered():
    return {
        task.name: task
        for task in vars(tasks).values()
        if getattr(task, "name", "").startswith("civitas.")
    }


def test_tasks_keep_their_names_and_acknowledge_late():
    registered = _registered()
    assert set(RETRIED) <= set(registered)
    assert {
        "civitas.ping",
        "civitas.evaluation_sweep",
        "civitas.artifact_sweep",
        "civitas.usecase_expire",
        "civitas.usecase_recheck_stale",
    } <= set(registered)
    assert all(task.acks_late for task in registered.values())


def test_only_a_lost_database_connection_is_retried_with_backoff():
    for name, task in _registered().items():
        if name in RETRIED:
            assert task.autoretry_for == (OperationalError, InterfaceError), name
            assert task.retry_backoff is True and task.retry_jitter is True, name
            assert task.max_retries == RETRIED[name], name
        else:
            assert not getattr(task, "autoretry_for", ()), name


def test_artifact_verification_has_its_time_limits_and_survives_a_lost_worker():
    for name in ("civitas.artifact_verify", "civitas.dataset_file_verify"):
        task = _registered()[name]
        assert (task.soft_time_limit, task.time_limit) == (3600, 3660)
        assert task.reject_on_worker_lost is True
