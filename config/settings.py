"""Civitas settings: one module, read from the environment.

Every setting has an embedded default that lets one laptop run the whole
platform (SQLite database, SQLite-backed Celery broker, MLflow store on SQLite,
artifacts on local disk, all under ``var/``). Production points the same
variables at PostgreSQL, Redis, an MLflow server and shared storage. The
README lists every variable once, in one table; ``deploy/env.example`` is the
production template.

Secrets may be given as ``NAME_FILE`` (a path whose content is the value), as
container orchestrators mount them.
"""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path

import csp.constants
import environ
from django.core.exceptions import ImproperlyConfigured

from config import spectacular
from config.denial_routes import DENIAL_ROUTES

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.Env()


def _secret(name: str, default: str = "") -> str:
    """Read ``name`` from the environment, or from the file named by ``NAME_FILE``."""
    path = os.environ.get(f"{name}_FILE")
    if path:
        return Path(path).read_text(encoding="utf-8").strip()
    return env.str(name, default=default)


VAR_DIR = Path(env.str("CIVITAS_VAR_DIR", default=str(BASE_DIR / "var"))).resolve()
VAR_DIR.mkdir(parents=True, exist_ok=True)

DEBUG = env.bool("DEBUG", default=False)

SECRET_KEY = _secret("SECRET_KEY")
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured(
            "SECRET_KEY (or SECRET_KEY_FILE) must be set when DEBUG is off; "
            "`make run` generates one under var/, production sets it explicitly."
        )
    SECRET_KEY = "insecure-development-only-key-" + "x" * 40

ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=[])
if not ALLOWED_HOSTS:
    if not DEBUG:
        raise ImproperlyConfigured(
            "ALLOWED_HOSTS must be set when DEBUG is off, e.g. "
            "ALLOWED_HOSTS=civitas.example.gov"
        )
    ALLOWED_HOSTS = ["localhost", "127.0.0.1", "[::1]", "testserver"]
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "knox",
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_celery_beat",
    "django_structlog",
    "csp",
    "audit",
    "registry",
    "governance",
    "notifications",
    "workers",
    "demo",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "csp.middleware.CSPMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django_structlog.middlewares.RequestMiddleware",
    "config.middleware.RequestIdHeaderMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    # The portal's language: the session's choice (the switcher), then the
    # browser's Accept-Language, then LANGUAGE_CODE.
    "django.middleware.locale.LocaleMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    # Remembers the request's user; a locked admin sign-in answers 429.
    "config.authentication.ServedRequestMiddleware",
    # After authentication: it reads the user DRF authenticated for the view.
    "audit.middleware.SecurityEventMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # Names the signed-in user in the audit events of account changes.
    "registry.accounts.ActingUserMiddleware",
]

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"
ASGI_APPLICATION = "config.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "config" / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.template.context_processors.i18n",
                "registry.portal.context.portal",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# --- Database -------------------------------------------------------------
DATABASES = {
    "default": env.db_url_config(
        _secret("DATABASE_URL") or f"sqlite:///{VAR_DIR / 'civitas.sqlite3'}"
    )
}
DATABASES["default"]["CONN_MAX_AGE"] = env.int("DATABASE_CONN_MAX_AGE", default=60)
DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # SQLite serialises writers; a busy timeout avoids spurious "database is
    # locked" errors when web, worker and beat share the file.
    # IMMEDIATE takes the write lock at BEGIN, so two writers queue on the
    # busy timeout instead of failing at their first write (Django 5.1+).
    DATABASES["default"].setdefault("OPTIONS", {}).update(
        timeout=20, transaction_mode="IMMEDIATE"
    )
    DATABASES["default"]["CONN_MAX_AGE"] = 0
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Auth -----------------------------------------------------------------
_VALIDATORS = "django.contrib.auth.password_validation."
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": _VALIDATORS + "UserAttributeSimilarityValidator"},
    {"NAME": _VALIDATORS + "MinimumLengthValidator", "OPTIONS": {"min_length": 12}},
    {"NAME": _VALIDATORS + "CommonPasswordValidator"},
    {"NAME": _VALIDATORS + "NumericPasswordValidator"},
]
# Every password check (HTTP Basic on POST /api/v1/auth/tokens/, the admin
# login) first takes an attempt from the account and from the client address;
# with none left it answers 429 without checking the password. Attempts are
# kept in the shared cache, so all web processes count together.
AUTHENTICATION_BACKENDS = ["config.authentication.PasswordAttemptBackend"]
PASSWORD_ATTEMPTS_PER_ACCOUNT = env.int("PASSWORD_ATTEMPTS_PER_ACCOUNT", default=10)
PASSWORD_ATTEMPTS_PER_ADDRESS = env.int("PASSWORD_ATTEMPTS_PER_ADDRESS", default=30)
PASSWORD_LOCKOUT_SECONDS = env.int("PASSWORD_LOCKOUT_SECONDS", default=900)

LANGUAGE_CODE = "en"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True
# The portal is complete in English and French (docs/portal.md, translating).
LANGUAGES = [("en", "English"), ("fr", "Français")]
# Strings of config's own templates (the portal's frame); each app keeps its
# catalogue in <app>/locale/.
LOCALE_PATHS = [BASE_DIR / "config" / "locale"]
# The portal's sign-in page; after it, the staff dashboard.
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "/portal/"
LOGOUT_REDIRECT_URL = "home"

# --- Static files and storage --------------------------------------------
STATIC_URL = "/static/"
STATIC_ROOT = Path(env.str("STATIC_ROOT", default=str(VAR_DIR / "static")))
STATIC_ROOT.mkdir(parents=True, exist_ok=True)
# The portal's stylesheet and vendored scripts (no CDN: it works air-gapped).
STATICFILES_DIRS = [BASE_DIR / "config" / "static"]
ARTIFACT_ROOT = Path(env.str("ARTIFACT_ROOT", default=str(VAR_DIR / "artifacts")))
STORAGES = {
    "default": {
        "BACKEND": "django.core.files.storage.FileSystemStorage",
        "OPTIONS": {"location": str(VAR_DIR / "media")},
    },
    # Model and dataset artifacts go through this one storage alias.
    "artifacts": {
        # ARTIFACT_STORAGE_BACKEND may change it (the artifact storage block).
        "BACKEND": "django.core.files.storage.FileSystemStorage",
        "OPTIONS": {"location": str(ARTIFACT_ROOT)},
    },
    "staticfiles": {
        "BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"
        if not DEBUG
        else "django.contrib.staticfiles.storage.StaticFilesStorage",
    },
}
# Uploads above this size stream to a temporary file instead of memory.
FILE_UPLOAD_MAX_MEMORY_SIZE = 2 * 1024 * 1024
DATA_UPLOAD_MAX_NUMBER_FILES = 4
CIVITAS_UPLOAD_MAX_BYTES = env.int("CIVITAS_UPLOAD_MAX_BYTES", default=8 * 1024**3)
CIVITAS_UPLOAD_PART_MIN = env.int("CIVITAS_UPLOAD_PART_MIN", default=1024**2)
CIVITAS_UPLOAD_PART_MAX = env.int("CIVITAS_UPLOAD_PART_MAX", default=256 * 1024**2)
CIVITAS_UPLOAD_MAX_PARTS = env.int("CIVITAS_UPLOAD_MAX_PARTS", default=10_000)
CIVITAS_UPLOAD_SESSION_HOURS = env.int("CIVITAS_UPLOAD_SESSION_HOURS", default=24)

# --- Security (HTTPS settings follow CIVITAS_HTTPS, on unless DEBUG) -------
CIVITAS_HTTPS = env.bool("CIVITAS_HTTPS", default=not DEBUG)
SECURE_SSL_REDIRECT = CIVITAS_HTTPS
SESSION_COOKIE_SECURE = CIVITAS_HTTPS
CSRF_COOKIE_SECURE = CIVITAS_HTTPS
SECURE_HSTS_SECONDS = (
    env.int("SECURE_HSTS_SECONDS", default=31536000) if CIVITAS_HTTPS else 0
)
SECURE_HSTS_INCLUDE_SUBDOMAINS = CIVITAS_HTTPS
SECURE_HSTS_PRELOAD = CIVITAS_HTTPS
if env.bool("CIVITAS_BEHIND_PROXY", default=False):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_REDIRECT_EXEMPT = [r"^healthz$"]
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SAMESITE = "Lax"
CSRF_COOKIE_HTTPONLY = True
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
# Content-Security-Policy (django-csp) on every response: the admin, the API
# and Swagger UI load everything from this origin (the sidecar's assets, never a
# CDN); an inline script or style runs only with the response's nonce
# (config/templates/drf_spectacular/swagger_ui.html); no framing.
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": [csp.constants.SELF],
        "script-src": [csp.constants.SELF, csp.constants.NONCE],
        "style-src": [csp.constants.SELF, csp.constants.NONCE],
        # Swagger UI's stylesheet draws its icons as data: SVGs.
        "img-src": [csp.constants.SELF, "data:"],
        "object-src": [csp.constants.NONE],
        "base-uri": [csp.constants.SELF],
        "form-action": [csp.constants.SELF],
        "frame-ancestors": [csp.constants.NONE],
    }
}

# --- REST API -------------------------------------------------------------
REST_FRAMEWORK = {
    # Knox tokens, refusing an HTTP Basic header (only token creation takes one).
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "registry.read_cache.GenerationTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_SCHEMA_CLASS": "config.openapi.AutoSchema",
    # A filter value or ordering field the list cannot use answers 400.
    "DEFAULT_FILTER_BACKENDS": [
        "config.filters.StrictDjangoFilterBackend",
        "rest_framework.filters.SearchFilter",
        "config.filters.StrictOrderingFilter",
    ],
    "DEFAULT_PAGINATION_CLASS": "config.pagination.CursorPagination",
    "PAGE_SIZE": 50,
    "EXCEPTION_HANDLER": "config.exceptions.exception_handler",
    "DEFAULT_THROTTLE_CLASSES": [
        "config.throttling.AnonRateThrottle",
        "config.throttling.UserRateThrottle",
    ],
    "DEFAULT_THROTTLE_RATES": {
        "anon": env.str("API_THROTTLE_ANON", default="60/min"),
        "user": env.str("API_THROTTLE_USER", default="1200/min"),
        "upload": env.str("API_THROTTLE_UPLOAD", default="30/hour"),
    },
    # Rates are counted per client address behind at most this many proxies;
    # a spoofed X-Forwarded-For cannot reset them.
    "NUM_PROXIES": env.int("NUM_PROXIES", default=0),
}
REST_KNOX = {
    "TOKEN_TTL": timedelta(days=env.int("API_TOKEN_TTL_DAYS", default=90)),
    "AUTO_REFRESH": False,
    "TOKEN_LIMIT_PER_USER": 20,
}
# The OpenAPI document's settings: a fixed table (config/spectacular.py).
SPECTACULAR_SETTINGS = spectacular.SETTINGS

# --- Celery ---------------------------------------------------------------
CELERY_BROKER_URL = _secret("CELERY_BROKER_URL") or (
    f"sqla+sqlite:///{VAR_DIR / 'celery-broker.sqlite3'}"
)
CELERY_RESULT_BACKEND = _secret("CELERY_RESULT_BACKEND") or (
    CELERY_BROKER_URL
    if CELERY_BROKER_URL.startswith(("redis://", "rediss://"))
    else f"db+sqlite:///{VAR_DIR / 'celery-results.sqlite3'}"
)
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_RESULT_EXPIRES = timedelta(days=1)
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
CELERY_TASK_DEFAULT_QUEUE = env.str("CELERY_TASK_DEFAULT_QUEUE", default="civitas")
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# Short periodic work (sweeps, checkpoints, expiry, rechecks, outbox and
# webhook delivery, schedules) has a queue of its own, served by its own
# worker, so an hour-long evaluation never delays it. Evaluations and artifact
# jobs stay on the default queue. A task named later that matches one of the
# patterns lands there too (docs/operations.md, "Queues").
CELERY_HOUSEKEEPING_QUEUE = env.str(
    "CELERY_HOUSEKEEPING_QUEUE", default=f"{CELERY_TASK_DEFAULT_QUEUE}-housekeeping"
)
CELERY_TASK_ROUTES = {
    name: {"queue": CELERY_HOUSEKEEPING_QUEUE}
    for name in (
        "civitas.audit_checkpoint",
        "civitas.usecase_expire",
        "civitas.usecase_recheck",
        "civitas.usecase_recheck_stale",
        "civitas.*_sweep",
        "civitas.*outbox*",
        "civitas.schedule*",
        "civitas.webhook*",
        "civitas.notification_email",
        "civitas.idempotency_purge",
        "civitas.token_purge",
        "civitas.upload_cleanup",
    )
}
# Hashing every stored artifact again takes long: the default queue's, even
# though its name ends in _sweep (an exact name wins over the patterns).
CELERY_TASK_ROUTES["civitas.artifact_digest_sweep"] = {
    "queue": CELERY_TASK_DEFAULT_QUEUE
}
if CELERY_BROKER_URL.startswith(("redis://", "rediss://")):
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        # How long a message taken by a worker that died stays invisible before
        # Redis hands it out again. Evaluations do not wait for it: the sweep
        # finds a run whose heartbeat stopped within two minutes and queues it
        # again. A message handed out again while its run is still heartbeating
        # changes nothing (the worker claims only a queued run, and records only
        # a run it holds), so this can be shorter than the longest evaluation.
        "visibility_timeout": env.int("CELERY_VISIBILITY_TIMEOUT", default=900),
        # Look for such messages every 10 s (one ZRANGE), not every 100 s.
        "unacked_restore_throttle": 1,
    }
CELERY_BEAT_SCHEDULER = "django_celery_beat.schedulers:DatabaseScheduler"

# --- Cache: throttles and password attempts, shared by every process ------
# CACHE_URL names it (django-environ's cache URLs). Unset, it is the broker's
# Redis when the broker is Redis (keys prefixed, so none meets the broker's),
# else a table in the database (made by `migrate`, registry 0004, and by
# `manage.py createcachetable`), shared by the web processes of `make run`. Production
# sets a Redis database of its own: clearing the cache then drops no task.
if _secret("CACHE_URL"):
    CACHES = {"default": env.cache_url_config(_secret("CACHE_URL"))}
elif CELERY_BROKER_URL.startswith(("redis://", "rediss://")):
    CACHES = {
        "default": {
            # Its clear() deletes only the cache's keys, never the broker's.
            "BACKEND": "config.cache.BrokerRedisCache",
            "LOCATION": CELERY_BROKER_URL,
            "KEY_PREFIX": "civitas-cache",
        }
    }
else:
    CACHES = {"default": env.cache_url_config("dbcache://civitas_cache")}
if CACHES["default"]["BACKEND"].endswith("DatabaseCache"):
    # Culling drops entries once the table is full: keep it well above what
    # attempts and throttles hold, so flooding it cannot erase a lockout.
    CACHES["default"].setdefault("OPTIONS", {}).setdefault("MAX_ENTRIES", 100_000)
elif CACHES["default"]["BACKEND"].endswith("RedisCache"):
    # Every API request reads the cache: a Redis that hangs must not hold it.
    for _option in ("socket_connect_timeout", "socket_timeout"):
        CACHES["default"].setdefault("OPTIONS", {}).setdefault(_option, 2)

# The API's model-version reads are kept per web process while the catalogue's
# generation (bumped by PostgreSQL triggers on every write) is unchanged
# (registry/read_cache.py); 0 turns the cache off.
CIVITAS_READ_CACHE_ENTRIES = env.int("CIVITAS_READ_CACHE_ENTRIES", default=20_000)
# Version detail by fixed SQL (registry/api/detail.py); false: ORM and DRF.
CIVITAS_FAST_VERSION_DETAIL = env.bool("CIVITAS_FAST_VERSION_DETAIL", default=True)

# --- Evaluations ----------------------------------------------------------
CIVITAS_EVAL_MEMORY_BYTES = env.int("CIVITAS_EVAL_MEMORY_BYTES", default=6 * 1024**3)
CIVITAS_EVAL_TIMEOUT_SECONDS = env.int("CIVITAS_EVAL_TIMEOUT_SECONDS", default=3600)
CIVITAS_EVAL_REQUEUE_MINUTES = env.int("CIVITAS_EVAL_REQUEUE_MINUTES", default=30)
# Liveness of a running evaluation: its worker writes the run's heartbeat
# every CIVITAS_EVAL_HEARTBEAT_SECONDS from a thread of its own; a run whose
# heartbeat is older than CIVITAS_EVAL_STALE_SECONDS (three beats missed) is
# taken as lost, and the sweep (every CIVITAS_EVAL_SWEEP_SECONDS) queues it
# again, or fails it worker_lost after CIVITAS_EVAL_MAX_ATTEMPTS. Defaults:
# 10 + 30 + 30 s, so a killed worker's run is back in the queue within about
# a minute and well within two.
CIVITAS_EVAL_HEARTBEAT_SECONDS = env.float("CIVITAS_EVAL_HEARTBEAT_SECONDS", default=10)
CIVITAS_EVAL_STALE_SECONDS = env.float(
    "CIVITAS_EVAL_STALE_SECONDS", default=3 * CIVITAS_EVAL_HEARTBEAT_SECONDS
)
CIVITAS_EVAL_SWEEP_SECONDS = env.float("CIVITAS_EVAL_SWEEP_SECONDS", default=30)
# A run whose worker died is run again, at most this many attempts in all.
CIVITAS_EVAL_MAX_ATTEMPTS = env.int("CIVITAS_EVAL_MAX_ATTEMPTS", default=3)
CELERY_TASK_ANNOTATIONS = {
    # The engine child has its own limit; the task's limits only catch a
    # worker that hangs outside it (downloading the bundle, logging to MLflow).
    "civitas.evaluation_run": {
        "soft_time_limit": CIVITAS_EVAL_TIMEOUT_SECONDS + 300,
        "time_limit": CIVITAS_EVAL_TIMEOUT_SECONDS + 600,
    }
}


def _every(task: str, period: timedelta) -> dict:
    """A beat entry whose tick expires when the next is due (a late tick is moot)."""
    return {
        "task": task,
        "schedule": period,
        "options": {"expires": period.total_seconds()},
    }


CELERY_BEAT_SCHEDULE = {
    "evaluation-sweep": _every(
        "civitas.evaluation_sweep", timedelta(seconds=CIVITAS_EVAL_SWEEP_SECONDS)
    ),
}
# Per-worker bundle cache (0: off); a hit re-checks the store (registry/fingerprint.py).
CIVITAS_EVAL_BUNDLE_CACHE_BYTES = env.int(
    "CIVITAS_EVAL_BUNDLE_CACHE_BYTES", default=8 << 30
)
# Worker polls a running evaluation's row this often; cancelled: its child is killed.
CIVITAS_EVAL_CANCEL_POLL_SECONDS = env.float(
    "CIVITAS_EVAL_CANCEL_POLL_SECONDS", default=1.0
)
# Engine threads spin inside a run only (RuntimeSettings.spin_within_runs).
CIVITAS_EVAL_SPIN_IN_RUNS = env.bool("CIVITAS_EVAL_SPIN_IN_RUNS", default=True)
# Dead processes' scratch folders (civitas-eval-*) older than the longest run: removed.
CIVITAS_SCRATCH_SWEEP_AGE_SECONDS = env.int(
    "CIVITAS_SCRATCH_SWEEP_AGE_SECONDS", default=CIVITAS_EVAL_TIMEOUT_SECONDS + 600
)
CELERY_BEAT_SCHEDULE["scratch-sweep"] = _every(
    "civitas.evaluation_scratch_sweep", timedelta(minutes=15)
)
CELERY_TIMEZONE = TIME_ZONE

# --- MLflow ---------------------------------------------------------------
MLFLOW_TRACKING_URI = env.str(
    "MLFLOW_TRACKING_URI", default=f"sqlite:///{VAR_DIR / 'mlflow.sqlite3'}"
)
MLFLOW_ARTIFACT_ROOT = env.str(
    "MLFLOW_ARTIFACT_ROOT", default=(VAR_DIR / "mlflow-artifacts").as_uri()
)
MLFLOW_EXPERIMENT = env.str("MLFLOW_EXPERIMENT", default="civitas-evaluations")
HEALTHCHECK_TIMEOUT_SECONDS = env.float("HEALTHCHECK_TIMEOUT_SECONDS", default=3.0)

# --- Logging: one structured line per request and per task ---------------
LOG_LEVEL = env.str("LOG_LEVEL", default="INFO")
LOG_FORMAT = env.str("LOG_FORMAT", default="json")
DJANGO_STRUCTLOG_CELERY_ENABLED = True
# request_started / task_started are logged at DEBUG so that, at INFO, each
# request and each task leaves exactly one line (request_finished,
# task_succeeded or task_failed), carrying the request id.
DJANGO_STRUCTLOG_STATUS_START_LOG_LEVEL = 10
DJANGO_STRUCTLOG_CELERY_TASK_START_LOG_LEVEL = 10
DJANGO_STRUCTLOG_STATUS_4XX_LOG_LEVEL = 20


# --- Audit chain and signing ------------------------------------------------
# The platform's Ed25519 key (PKCS8 PEM) signs audit checkpoints, evaluation
# attestations and decisions. Unset, a key is generated under VAR_DIR on first
# use: fine for a laptop, never for production (it would vanish with the host).
CIVITAS_SIGNING_KEY_FILE = env.str("CIVITAS_SIGNING_KEY_FILE", default="")
# A checkpoint is signed when a worker starts and the chain has unsigned events,
# then whenever AUDIT_CHECKPOINT_EVENTS events were appended since the last one
# or AUDIT_CHECKPOINT_MINUTES have passed with unsigned events, whichever first:
# beat asks every minute and the task decides (audit.services.checkpoint_if_due).
AUDIT_CHECKPOINT_MINUTES = env.int("AUDIT_CHECKPOINT_MINUTES", default=60)
AUDIT_CHECKPOINT_EVENTS = env.int("AUDIT_CHECKPOINT_EVENTS", default=1000)
for _task in ("audit_checkpoint", "audit_sequence_sweep"):  # sweep: see sequencer.py
    _key = _task.replace("_", "-")
    CELERY_BEAT_SCHEDULE[_key] = _every(f"civitas.{_task}", timedelta(minutes=1))

# --- Security events: denied requests, kept apart from the chain -----------
# Every request under /api/v1/ answered 403, or 404 for an object that exists
# but is hidden from the caller, is recorded as an ``authz.denied`` security
# event (audit.middleware), at most AUDIT_SECURITY_EVENTS_PER_MINUTE per caller
# and minute; the ones dropped are counted on the caller's next recorded event.
AUDIT_SECURITY_EVENTS_PER_MINUTE = env.int(
    "AUDIT_SECURITY_EVENTS_PER_MINUTE", default=30
)
# What a route under /api/v1/<segment>/ names, so that a 404 can be told apart
# from a missing object: a fixed table, not configuration (config/denial_routes.py).
AUDIT_DENIAL_ROUTES = DENIAL_ROUTES

# --- Artifacts --------------------------------------------------------------
# Uploads are spooled and bundles unpacked for inspection here. Keep it on the
# filesystem of ARTIFACT_ROOT: storing an accepted upload is then a rename.
ARTIFACT_TMP_DIR = Path(
    env.str("ARTIFACT_TMP_DIR", default=str(VAR_DIR / "artifact-tmp"))
)
# Caps on what an uploaded archive may unpack to (engine.archive.Limits).
CIVITAS_BUNDLE_MAX_FILES = env.int("CIVITAS_BUNDLE_MAX_FILES", default=256)
CIVITAS_BUNDLE_MAX_UNPACKED_BYTES = env.int(
    "CIVITAS_BUNDLE_MAX_UNPACKED_BYTES", default=8 * 1024**3
)
CIVITAS_BUNDLE_MAX_RATIO = env.float("CIVITAS_BUNDLE_MAX_RATIO", default=100.0)
# Where artifacts registered by reference may be read from: absolute
# directories (file://) and s3://bucket/prefix entries. Empty: none.
CIVITAS_REFERENCE_ROOTS = env.list("CIVITAS_REFERENCE_ROOTS", default=[])
# s3:// references are fetched only when this is set and boto3 is installed.
CIVITAS_S3_ENDPOINT_URL = env.str("CIVITAS_S3_ENDPOINT_URL", default="")
# Every model is self-tested in the engine's child, on a worker, before it is
# released (memory limit: CIVITAS_EVAL_MEMORY_BYTES); the child is killed
# past this and the version ends failed.
CIVITAS_SELFTEST_TIMEOUT_SECONDS = env.int(
    "CIVITAS_SELFTEST_TIMEOUT_SECONDS", default=300
)
# Wall clock of deriving a quantised version (docs/quantisation.md).
CIVITAS_DERIVE_TIMEOUT_SECONDS = env.int("CIVITAS_DERIVE_TIMEOUT_SECONDS", default=1800)
# A reference still pending after this long lost its verification message;
# celery beat queues it again.
CIVITAS_ARTIFACT_REQUEUE_MINUTES = env.int(
    "CIVITAS_ARTIFACT_REQUEUE_MINUTES", default=30
)
CELERY_BEAT_SCHEDULE["artifact-sweep"] = _every(
    "civitas.artifact_sweep", timedelta(minutes=10)
)

# --- Use case lifecycle -------------------------------------------------------
# An approval ends at the earlier of the use case's last valid day and this
# many days after it was given; celery beat expires ended approvals and
# re-checks approved use cases whose evaluation evidence has gone stale.
CIVITAS_APPROVAL_DAYS = env.int("CIVITAS_APPROVAL_DAYS", default=365)

CIVITAS_LIFECYCLE_SWEEP_MINUTES = env.int("CIVITAS_LIFECYCLE_SWEEP_MINUTES", default=60)
CELERY_BEAT_SCHEDULE["usecase-expire"] = _every(
    "civitas.usecase_expire", timedelta(minutes=CIVITAS_LIFECYCLE_SWEEP_MINUTES)
)
CELERY_BEAT_SCHEDULE["usecase-recheck-stale"] = _every(
    "civitas.usecase_recheck_stale", timedelta(minutes=CIVITAS_LIFECYCLE_SWEEP_MINUTES)
)
# --- Artifact storage: the local disk, or S3-compatible object storage ------
# ARTIFACT_STORAGE_BACKEND is "local" (files under ARTIFACT_ROOT), "s3" (a
# bucket of MinIO, Ceph or a cloud, through django-storages: workers on other
# hosts read the same artifacts) or the dotted path of a Django storage class.
# Uploads stream to the bucket in parts and reads stream from it; a stored
# file's SHA-256 is checked as it is read (registry.storage.open_verified).
# Every S3 call has connect and read timeouts and a bounded number of
# attempts, so an endpoint that accepts connections and never answers fails
# the call instead of holding a worker or a web thread.
ARTIFACT_STORAGE_BACKEND = env.str("ARTIFACT_STORAGE_BACKEND", default="local")
ARTIFACT_S3_BUCKET = env.str("ARTIFACT_S3_BUCKET", default="")
ARTIFACT_S3_ENDPOINT_URL = env.str("ARTIFACT_S3_ENDPOINT_URL", default="")
ARTIFACT_S3_REGION = env.str("ARTIFACT_S3_REGION", default="")
ARTIFACT_S3_PREFIX = env.str("ARTIFACT_S3_PREFIX", default="")
ARTIFACT_S3_ACCESS_KEY_ID = _secret("ARTIFACT_S3_ACCESS_KEY_ID")
ARTIFACT_S3_SECRET_ACCESS_KEY = _secret("ARTIFACT_S3_SECRET_ACCESS_KEY")
ARTIFACT_S3_CONNECT_TIMEOUT = env.float("ARTIFACT_S3_CONNECT_TIMEOUT", default=5.0)
ARTIFACT_S3_READ_TIMEOUT = env.float("ARTIFACT_S3_READ_TIMEOUT", default=30.0)
ARTIFACT_S3_MAX_ATTEMPTS = env.int("ARTIFACT_S3_MAX_ATTEMPTS", default=3)
if ARTIFACT_STORAGE_BACKEND == "s3":
    if not ARTIFACT_S3_BUCKET:
        raise ImproperlyConfigured(
            "ARTIFACT_S3_BUCKET must be set when ARTIFACT_STORAGE_BACKEND is s3."
        )
    STORAGES["artifacts"] = {
        # Named, not imported: config imports no app.
        "BACKEND": "registry.object_storage.ArtifactS3Storage",
        "OPTIONS": {
            "bucket_name": ARTIFACT_S3_BUCKET,
            "endpoint_url": ARTIFACT_S3_ENDPOINT_URL or None,
            "region_name": ARTIFACT_S3_REGION or None,
            "location": ARTIFACT_S3_PREFIX,
            "access_key": ARTIFACT_S3_ACCESS_KEY_ID or None,
            "secret_key": ARTIFACT_S3_SECRET_ACCESS_KEY or None,
            # Keys are made by the server; a name taken is never overwritten.
            "file_overwrite": False,
            "default_acl": None,
        },
    }
elif ARTIFACT_STORAGE_BACKEND in ("local", "filesystem"):
    STORAGES["artifacts"]["BACKEND"] = "django.core.files.storage.FileSystemStorage"
else:
    STORAGES["artifacts"]["BACKEND"] = ARTIFACT_STORAGE_BACKEND

# Use case statuses appear as status, from_status and to_status: one enum.
SPECTACULAR_SETTINGS["ENUM_NAME_OVERRIDES"]["UseCaseStatusEnum"] = (
    "governance.models.UseCaseStatus"
)

# --- Notifications: webhooks and e-mail ----------------------------------------
# Webhook URLs must be https unless ALLOW_HTTP; private, loopback and
# link-local destinations are refused unless ALLOW_PRIVATE (both only for
# tests and the embedded laptop set-up). Each attempt is bounded by the
# connect and read timeouts; a failed one is retried after
# BACKOFF_SECONDS * 2**(n-1) (capped at an hour), MAX_ATTEMPTS in all.
CIVITAS_WEBHOOK_ALLOW_HTTP = env.bool("CIVITAS_WEBHOOK_ALLOW_HTTP", default=False)
CIVITAS_WEBHOOK_ALLOW_PRIVATE = env.bool("CIVITAS_WEBHOOK_ALLOW_PRIVATE", default=False)
CIVITAS_WEBHOOK_CONNECT_TIMEOUT_SECONDS = env.float(
    "CIVITAS_WEBHOOK_CONNECT_TIMEOUT_SECONDS", default=5.0
)
CIVITAS_WEBHOOK_READ_TIMEOUT_SECONDS = env.float(
    "CIVITAS_WEBHOOK_READ_TIMEOUT_SECONDS", default=10.0
)
CIVITAS_WEBHOOK_MAX_ATTEMPTS = env.int("CIVITAS_WEBHOOK_MAX_ATTEMPTS", default=10)
CIVITAS_WEBHOOK_BACKOFF_SECONDS = env.float(
    "CIVITAS_WEBHOOK_BACKOFF_SECONDS", default=30.0
)
# After a rotation the old secret keeps signing (a second signature) this long.
CIVITAS_WEBHOOK_SECRET_GRACE_HOURS = env.int(
    "CIVITAS_WEBHOOK_SECRET_GRACE_HOURS", default=24
)
# Webhook secrets are stored encrypted under a key derived from this (from
# SECRET_KEY when unset: changing SECRET_KEY then needs every secret rotated).
CIVITAS_WEBHOOK_ENCRYPTION_KEY = _secret("CIVITAS_WEBHOOK_ENCRYPTION_KEY")
CELERY_BEAT_SCHEDULE["webhook-sweep"] = _every(
    "civitas.webhook_sweep", timedelta(minutes=5)
)
# E-mail: EMAIL_URL in django-environ's form (smtp+tls://user:pw@host:587);
# the console backend by default. EMAIL_TIMEOUT bounds every SMTP operation.
vars().update(env.email_url("EMAIL_URL", default="consolemail://"))
EMAIL_TIMEOUT = env.int("EMAIL_TIMEOUT", default=10)
DEFAULT_FROM_EMAIL = env.str("DEFAULT_FROM_EMAIL", default="civitas@localhost")
SERVER_EMAIL = DEFAULT_FROM_EMAIL

# --- Evaluation schedules, reproducibility and digest re-verification -------
# A scheduled run's metrics must equal the previous run's on the same artifact,
# engine and processor features; on another processor they may differ by this
# relative tolerance. A difference beyond it is a reproducibility failure.
# (Parsed by float(): django-environ's env.float drops the "e" of "1e-5".)
CIVITAS_REPRODUCIBILITY_RTOL = float(
    env.str("CIVITAS_REPRODUCIBILITY_RTOL", default="1e-5")
)
# A schedule's run still queued or running blocks its next tick for at most
# this long (the lock's expiry: by then the evaluation sweep has settled it).
CIVITAS_SCHEDULE_LOCK_MINUTES = env.int(
    "CIVITAS_SCHEDULE_LOCK_MINUTES", default=CIVITAS_EVAL_TIMEOUT_SECONDS // 60 + 30
)
# A scheduled run is compared with its baseline when its task ends (a Celery
# link); beat compares this often what no link did (runs queued again).
CIVITAS_SCHEDULE_SETTLE_MINUTES = env.int("CIVITAS_SCHEDULE_SETTLE_MINUTES", default=5)
CELERY_BEAT_SCHEDULE["schedule-settle"] = _every(
    "civitas.schedule_settle", timedelta(minutes=CIVITAS_SCHEDULE_SETTLE_MINUTES)
)
# Every stored model artifact is hashed again this often (daily by default).
CIVITAS_DIGEST_SWEEP_HOURS = env.int("CIVITAS_DIGEST_SWEEP_HOURS", default=24)
CELERY_BEAT_SCHEDULE["artifact-digest-sweep"] = _every(
    "civitas.artifact_digest_sweep", timedelta(hours=CIVITAS_DIGEST_SWEEP_HOURS)
)

# --- Health: timeouts on every outbound call, /metrics, Idempotency-Key ------
# A peer that accepts connections and never answers must not hold a web thread:
# PostgreSQL connections give up after DATABASE_CONNECT_TIMEOUT_SECONDS (libpq's
# connect_timeout covers the whole start-up) and drop a dead peer through TCP
# keepalives and tcp_user_timeout; the broker's and result backend's Redis
# sockets give up after REDIS_SOCKET_TIMEOUT_SECONDS (the cache's after 2 s,
# above). /healthz bounds its own checks by HEALTHCHECK_TIMEOUT_SECONDS
# (config/health.py); docs/operations.md lists every bound.
DATABASE_CONNECT_TIMEOUT_SECONDS = env.int(
    "DATABASE_CONNECT_TIMEOUT_SECONDS", default=5
)
REDIS_SOCKET_TIMEOUT_SECONDS = env.float("REDIS_SOCKET_TIMEOUT_SECONDS", default=5.0)
if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
    DATABASES["default"].setdefault("OPTIONS", {}).update(
        connect_timeout=DATABASE_CONNECT_TIMEOUT_SECONDS,
        keepalives=1,
        keepalives_idle=30,
        keepalives_interval=10,
        keepalives_count=3,
        # Milliseconds that sent data may stay unacknowledged: a vanished host.
        tcp_user_timeout=30_000,
        # Parameters bound by the server, so a statement run this many times on a
        # connection is prepared and planned once (0 turns it off: PgBouncer).
        server_side_binding=True,
        prepare_threshold=env.int("DATABASE_PREPARE_THRESHOLD", default=5) or None,
    )
CELERY_BROKER_CONNECTION_TIMEOUT = REDIS_SOCKET_TIMEOUT_SECONDS
if CELERY_BROKER_URL.startswith(("redis://", "rediss://")):
    CELERY_BROKER_TRANSPORT_OPTIONS.update(
        socket_timeout=REDIS_SOCKET_TIMEOUT_SECONDS,
        socket_connect_timeout=REDIS_SOCKET_TIMEOUT_SECONDS,
        socket_keepalive=True,
    )
if CELERY_RESULT_BACKEND.startswith(("redis://", "rediss://")):
    CELERY_REDIS_SOCKET_TIMEOUT = REDIS_SOCKET_TIMEOUT_SECONDS
    CELERY_REDIS_SOCKET_CONNECT_TIMEOUT = REDIS_SOCKET_TIMEOUT_SECONDS
# Publishing a task (web) tries three times at most, then the request fails.
CELERY_TASK_PUBLISH_RETRY_POLICY = {
    "max_retries": 2,
    "interval_start": 0,
    "interval_step": 0.5,
    "interval_max": 1,
}
# GET /metrics (Prometheus text format) answers only a bearer of this token
# (or a signed-in staff user); unset, only staff.
METRICS_TOKEN = _secret("METRICS_TOKEN")
# A POST carrying an Idempotency-Key is answered once; a retry with the same key
# (same user, path and body) within this many hours gets the stored answer.
IDEMPOTENCY_KEY_TTL_HOURS = env.int("IDEMPOTENCY_KEY_TTL_HOURS", default=24)
INSTALLED_APPS.append("idempotency")
CELERY_BEAT_SCHEDULE["idempotency-purge"] = _every(
    "civitas.idempotency_purge", timedelta(hours=1)
)
MIDDLEWARE.append("idempotency.middleware.IdempotencyKeyMiddleware")
# Expired API tokens are refused on sight; their rows go hourly
# (config.authentication.TokenAuthentication skips knox's per-request sweep).
CELERY_BEAT_SCHEDULE["token-purge"] = _every("civitas.token_purge", timedelta(hours=1))
# Resumable uploads left unfinished, and their staging files (registry uploads).
CELERY_BEAT_SCHEDULE["upload-cleanup"] = _every(
    "civitas.upload_cleanup", timedelta(hours=1)
)
# With DEBUG off, the platform refuses to generate its own signing key unless
# told to (`make run` does, for a laptop): production sets
# CIVITAS_SIGNING_KEY_FILE, and start-up stops with a message naming it if not.
CIVITAS_SIGNING_KEY_GENERATE = env.bool("CIVITAS_SIGNING_KEY_GENERATE", default=False)

# --- MLflow outbox: MLflow never blocks a run ------------------------------
# A finished run writes what MLflow is owed to an outbox table in the same
# transaction; civitas.mlflow_outbox_deliver sends it (queued on commit and
# swept by beat every minute). MLflow's own HTTP client reads these four from
# the environment; Civitas sets them from here before each use, so one MLflow
# call against a server that never answers gives up after about
# TIMEOUT x (1 + MAX_RETRIES) seconds plus the backoff, not MLflow's default of
# minutes (120 s x 8 attempts).
MLFLOW_HTTP_REQUEST_TIMEOUT = env.int("MLFLOW_HTTP_REQUEST_TIMEOUT", default=10)
MLFLOW_HTTP_REQUEST_MAX_RETRIES = env.int("MLFLOW_HTTP_REQUEST_MAX_RETRIES", default=1)
MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR = env.int(
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", default=1
)
MLFLOW_HTTP_REQUEST_BACKOFF_JITTER = env.float(
    "MLFLOW_HTTP_REQUEST_BACKOFF_JITTER", default=0.5
)
# A failed delivery is tried again after BACKOFF x 2^(attempts-1) seconds,
# at most BACKOFF_MAX; one task run delivers for at most PASS_SECONDS.
MLFLOW_OUTBOX_BACKOFF_SECONDS = env.int("MLFLOW_OUTBOX_BACKOFF_SECONDS", default=30)
MLFLOW_OUTBOX_BACKOFF_MAX_SECONDS = env.int(
    "MLFLOW_OUTBOX_BACKOFF_MAX_SECONDS", default=3600
)
MLFLOW_OUTBOX_PASS_SECONDS = env.int("MLFLOW_OUTBOX_PASS_SECONDS", default=60)
# The last message of a pass may start just before PASS_SECONDS ends; its
# calls are bounded, so the limits only catch a delivery hung outside them.
CELERY_TASK_ANNOTATIONS["civitas.mlflow_outbox_deliver"] = {
    "soft_time_limit": MLFLOW_OUTBOX_PASS_SECONDS + 300,
    "time_limit": MLFLOW_OUTBOX_PASS_SECONDS + 360,
}
CELERY_BEAT_SCHEDULE["mlflow-outbox"] = _every(
    "civitas.mlflow_outbox_deliver", timedelta(minutes=1)
)
# --- Identity: OIDC single sign-on, sessions (docs/accounts.md, portal/identity.md)
# SSO is off unless OIDC_RP_CLIENT_ID is set; empty endpoints are read from
# OIDC_OP_DISCOVERY_URL. RS256 ID tokens, issuer and audience checked (registry.sso).
OIDC_RP_CLIENT_ID = env.str("OIDC_RP_CLIENT_ID", default="")
OIDC_RP_CLIENT_SECRET = _secret("OIDC_RP_CLIENT_SECRET")
OIDC_PROVIDER_NAME = env.str("OIDC_PROVIDER_NAME", default="single sign-on")
OIDC_OP_DISCOVERY_URL = env.str("OIDC_OP_DISCOVERY_URL", default="")
OIDC_OP_ISSUER = env.str("OIDC_OP_ISSUER", default="")
OIDC_OP_AUTHORIZATION_ENDPOINT = env.str("OIDC_OP_AUTHORIZATION_ENDPOINT", default="")
OIDC_OP_TOKEN_ENDPOINT = env.str("OIDC_OP_TOKEN_ENDPOINT", default="")
OIDC_OP_USER_ENDPOINT = env.str("OIDC_OP_USER_ENDPOINT", default="")
OIDC_OP_JWKS_ENDPOINT = env.str("OIDC_OP_JWKS_ENDPOINT", default="")
OIDC_RP_SCOPES = env.str("OIDC_RP_SCOPES", default="openid email profile")
OIDC_RP_SIGN_ALGO, OIDC_USE_PKCE, OIDC_TIMEOUT = "RS256", True, 10
OIDC_AUTHENTICATE_CLASS = "registry.sso.SignInView"
OIDC_CALLBACK_CLASS = "registry.sso.CallbackView"
LOGIN_REDIRECT_URL_FAILURE = "/accounts/login/"
if OIDC_RP_CLIENT_ID:
    AUTHENTICATION_BACKENDS.append("registry.sso.ClaimRuleBackend")
# A session lasts a working day at most; its cookie ends with the browser.
SESSION_COOKIE_AGE = env.int("SESSION_COOKIE_AGE", default=8 * 3600)
SESSION_EXPIRE_AT_BROWSER_CLOSE = env.bool("SESSION_EXPIRE_AT_BROWSER_CLOSE", True)
# "Sign out everywhere": a session opened before the user's last one ends.
_AUTH_MIDDLEWARE = MIDDLEWARE.index(
    "django.contrib.auth.middleware.AuthenticationMiddleware"
)
MIDDLEWARE.insert(_AUTH_MIDDLEWARE + 1, "registry.sessions.SessionGenerationMiddleware")

# --- Public register: citizens' incident reports (docs/portal/public.md) --
# Reports one client address may file per window (counted in the shared
# cache), and how old a report form's signed stamp must be.
CIVITAS_INCIDENT_REPORTS_PER_ADDRESS = env.int(
    "CIVITAS_INCIDENT_REPORTS_PER_ADDRESS", default=5
)
CIVITAS_INCIDENT_REPORT_WINDOW_SECONDS = env.int(
    "CIVITAS_INCIDENT_REPORT_WINDOW_SECONDS", default=3600
)
CIVITAS_INCIDENT_FORM_MIN_SECONDS = env.int(
    "CIVITAS_INCIDENT_FORM_MIN_SECONDS", default=5
)
CIVITAS_INCIDENT_FORM_MAX_SECONDS = env.int(
    "CIVITAS_INCIDENT_FORM_MAX_SECONDS", default=86400
)

# Logging is configured last, once every setting it may read is known.
from config.logging import configure_logging  # noqa: E402

LOGGING_CONFIG = None
configure_logging(level=LOG_LEVEL, fmt=LOG_FORMAT)
