"""Engine tests run without Django (``-p no:django``).

The root conftest's autouse fixture needs pytest-django's ``settings``; the engine
serves no static files, so the fixture is overridden here with a no-op.
"""

import pytest


@pytest.fixture(autouse=True)
def _static_files_without_manifest():
    """Nothing to configure: the engine never touches Django settings."""
