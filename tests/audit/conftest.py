"""People, agencies and API clients of the registry tests, for the audit tests."""

from tests.registry.conftest import *  # noqa: F403
