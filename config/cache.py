"""The Redis cache when it shares the Celery broker's database.

Django's ``RedisCache.clear()`` empties the whole Redis database (FLUSHDB),
which would drop every queued task and the broker's bindings. This one deletes
only its own keys (those under its ``KEY_PREFIX``).
"""

from __future__ import annotations

from django.core.cache.backends.redis import RedisCache


class BrokerRedisCache(RedisCache):
    """Django's Redis cache whose ``clear`` leaves the broker's keys alone."""

    def clear(self) -> bool:
        if not self.key_prefix:
            raise ValueError("BrokerRedisCache needs a KEY_PREFIX")
        client = self._cache.get_client(None, write=True)
        batch: list[bytes] = []
        for key in client.scan_iter(match=f"{self.key_prefix}:*", count=1000):
            batch.append(key)
            if len(batch) == 1000:
                client.delete(*batch)
                batch.clear()
        if batch:
            client.delete(*batch)
        return True
