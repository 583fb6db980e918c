"""The API's rate limits: one counter per caller in Redis, DRF's log elsewhere."""

from __future__ import annotations

import pytest
from django.core.cache import cache, caches
from django.test import RequestFactory
from rest_framework.request import Request
from rest_framework.test import APIClient

from config import throttling
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db


class ThreePerMinute(throttling.UserRateThrottle):
    rate = "3/min"


def _request(user) -> Request:
    request = Request(RequestFactory().get("/api/v1/model-versions/"))
    request.user = user
    return request


def _redis_keys() -> list[bytes]:
    client = caches["default"]._cache.get_client(None, write=True)
    return sorted(client.scan_iter(match=f"{cache.key_prefix}:throttle:*"))


def test_the_user_rate_is_counted_in_redis_by_two_window_counters():
    cache.clear()
    user = UserFactory()
    other = UserFactory()
    allowed = [ThreePerMinute().allow_request(_request(user), None) for _ in range(4)]
    assert allowed == [True, True, True, False]
    refused = ThreePerMinute()
    assert refused.allow_request(_request(user), None) is False
    assert 1 <= refused.wait() <= 60
    # Another caller has a count of its own.
    assert ThreePerMinute().allow_request(_request(other), None) is True
    # Counters, not a log of request times: the keys stay few whatever the rate.
    keys = _redis_keys()
    assert keys and len(keys) <= 4
    assert all(
        f"user_{user.pk}".encode() in k or f"user_{other.pk}".encode() in k
        for k in keys
    )
    # Clearing the cache (as the tests and operators do) resets the limits.
    cache.clear()
    assert _redis_keys() == []
    assert ThreePerMinute().allow_request(_request(user), None) is True


def test_without_redis_the_throttle_keeps_drfs_log_in_the_cache(settings):
    settings.CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.locmem.LocMemCache",
            "LOCATION": "throttle-fallback",
        }
    }
    assert throttling._limiter() is None
    user = UserFactory()
    allowed = [ThreePerMinute().allow_request(_request(user), None) for _ in range(4)]
    assert allowed == [True, True, True, False]
    history = caches["default"].get(f"throttle_user_{user.pk}")
    assert isinstance(history, list) and len(history) == 3


def test_the_api_answers_429_with_retry_after_once_the_rate_is_spent(settings):
    cache.clear()
    user = UserFactory()
    api_client = APIClient()
    api_client.force_authenticate(user)
    rates = {**settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"], "user": "2/min"}
    original = throttling.UserRateThrottle.THROTTLE_RATES
    throttling.UserRateThrottle.THROTTLE_RATES = rates
    try:
        codes = [api_client.get("/api/v1/licences/").status_code for _ in range(3)]
        refused = api_client.get("/api/v1/licences/")
    finally:
        throttling.UserRateThrottle.THROTTLE_RATES = original
        cache.clear()
    assert codes == [200, 200, 429]
    assert refused.status_code == 429
    assert refused.json()["code"] == "throttled"
    assert 1 <= int(refused["Retry-After"]) <= 60
