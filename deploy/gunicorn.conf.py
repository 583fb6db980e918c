"""gunicorn settings, read from the environment (see the README's table)."""

import os

_host = os.environ.get("GUNICORN_BIND_HOST", "127.0.0.1")
bind = f"{_host}:{os.environ.get('PORT', '8000')}"
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
threads = int(os.environ.get("GUNICORN_THREADS", "4"))
worker_class = "gthread"
# Large bundle uploads stream for minutes; the request must not be cut short.
timeout = int(os.environ.get("GUNICORN_TIMEOUT", "900"))
graceful_timeout = 30
keepalive = 5
# The application logs one structured line per request; no access log.
accesslog = None
errorlog = "-"
limit_request_line = 8190
limit_request_fields = 100
forwarded_allow_ips = os.environ.get("FORWARDED_ALLOW_IPS", "127.0.0.1")
