"""Engine tests run without Django (``-p no:django``).

The root conftest's autouse fixture needs pytest-django's ``settings``; the engine
reads no Django settings, so the fixture is overridden here with a no-op.
"""

import pytest


@pytest.fixture(autouse=True)
def _django_test_settings():
    """Nothing to configure: the engine never touches Django settings."""
