"""People, agencies, API clients and governance kits, shared with the audit tests."""

from tests.governance.conftest import *  # noqa: F403
