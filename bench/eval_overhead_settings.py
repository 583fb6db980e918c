"""Settings of ``bench/eval_overhead.py --worker``'s baseline worker: the cache off."""

from config.settings import *  # noqa: F403

CIVITAS_EVAL_BUNDLE_CACHE_BYTES = 0
