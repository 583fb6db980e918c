"""PostgreSQL plans a statement the application repeats once, not per request."""

from __future__ import annotations

import pytest
from django.db import connection

from registry.models import ModelVersion

pytestmark = pytest.mark.django_db


def _prepared() -> list[str]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT statement FROM pg_prepared_statements")
        return [row[0] for row in cursor.fetchall()]


def test_a_query_run_five_times_on_a_connection_is_prepared(settings):
    assert settings.DATABASES["default"]["OPTIONS"]["server_side_binding"] is True
    threshold = settings.DATABASES["default"]["OPTIONS"]["prepare_threshold"]
    assert threshold == 5
    connection.ensure_connection()
    assert connection.connection.prepare_threshold == threshold
    lookup = ModelVersion.objects.filter(pk=0).order_by("pk")
    before = [s for s in _prepared() if "registry_modelversion" in s]
    for _ in range(threshold + 1):
        assert lookup.first() is None
    after = [s for s in _prepared() if "registry_modelversion" in s]
    assert len(after) == len(before) + 1
    # Parameters are bound by the server: the statement holds a placeholder,
    # so every id reuses the one plan.
    assert "$1" in after[-1]
