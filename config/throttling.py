"""The API's rate limits, counted across every web process in one round trip.

DRF's ``SimpleRateThrottle`` keeps the time of every request of the window in
the cache and reads and rewrites that whole list on each request: two round
trips and a list as long as the rate, on every API call (bench/README.md,
"load.py"). Where the shared cache is Redis, these throttles count with the
``limits`` library's sliding-window counter instead (two counters per caller,
checked and incremented by one Lua script: one round trip, constant size),
against the same Redis and under the cache's key prefix, so clearing the cache
clears them too. On any other cache (the embedded default's database table)
they fall back to DRF's own counting, which that cache supports.

The rates, scopes, keys (user or client address behind the trusted proxies)
and the 429 with ``Retry-After`` are DRF's, unchanged.
"""

from __future__ import annotations

import math
import threading
import time

from django.core.cache import caches
from django.core.cache.backends.redis import RedisCache
from limits import RateLimitItemPerSecond
from limits.storage import RedisStorage
from limits.strategies import SlidingWindowCounterRateLimiter
from rest_framework import throttling

_lock = threading.Lock()
_limiters: dict[str, SlidingWindowCounterRateLimiter | None] = {}


def _limiter() -> SlidingWindowCounterRateLimiter | None:
    """This process's limiter on the shared Redis cache, or None without one."""
    cache = caches["default"]
    key = f"{getattr(cache, '_servers', None)!r} {cache.key_prefix}"
    if key not in _limiters:
        with _lock:
            if key not in _limiters:
                _limiters[key] = _make_limiter(cache)
    return _limiters[key]


def _make_limiter(cache) -> SlidingWindowCounterRateLimiter | None:
    if not isinstance(cache, RedisCache):
        return None
    options = cache._cache._pool_options  # the cache's own timeouts hold here too
    storage = RedisStorage(
        cache._servers[0],
        key_prefix=f"{cache.key_prefix}:throttle" if cache.key_prefix else "throttle",
        socket_timeout=options.get("socket_timeout", 2),
        socket_connect_timeout=options.get("socket_connect_timeout", 2),
    )
    return SlidingWindowCounterRateLimiter(storage)


class CountingThrottleMixin:
    """One sliding-window counter per caller and scope instead of a request log."""

    _wait: float | None = None

    def allow_request(self, request, view) -> bool:
        limiter = _limiter()
        if limiter is None:
            return super().allow_request(request, view)
        if self.rate is None:
            return True
        key = self.get_cache_key(request, view)
        if key is None:
            return True
        item = RateLimitItemPerSecond(self.num_requests, self.duration)
        if limiter.hit(item, key):
            return True
        reset_at = limiter.get_window_stats(item, key).reset_time
        self._wait = max(math.ceil(reset_at - time.time()), 1)
        return False

    def wait(self) -> float | None:
        if self._wait is not None:
            return self._wait
        return super().wait()


class AnonRateThrottle(CountingThrottleMixin, throttling.AnonRateThrottle):
    """Anonymous callers, by client address (``API_THROTTLE_ANON``)."""


class UserRateThrottle(CountingThrottleMixin, throttling.UserRateThrottle):
    """Signed-in callers, by user (``API_THROTTLE_USER``)."""


class ScopedRateThrottle(CountingThrottleMixin, throttling.ScopedRateThrottle):
    """A view's own scope, such as uploads (``API_THROTTLE_UPLOAD``)."""

    def allow_request(self, request, view) -> bool:
        # DRF reads the scope's rate from the view here, not in __init__.
        self.scope = getattr(view, self.scope_attr, None)
        if not self.scope:
            return True
        self.rate = self.get_rate()
        self.num_requests, self.duration = self.parse_rate(self.rate)
        return super().allow_request(request, view)
