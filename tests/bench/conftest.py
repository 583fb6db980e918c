"""Bench tests run without Django (``-p no:django``).

The root conftest's autouse fixture needs pytest-django's ``settings``; the
benches serve no static files, so the fixture is overridden with a no-op.
"""

import pytest


@pytest.fixture(autouse=True)
def _django_test_settings():
    """Nothing to configure: the benches never touch Django settings."""
