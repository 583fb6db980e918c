#!/usr/bin/env bash
# `make run`: the whole platform on one machine, nothing else installed.
# Web (gunicorn, static files by WhiteNoise), a Celery worker for evaluations
# and artifact jobs, one for housekeeping (sweeps, checkpoints, expiry) and
# celery beat run together under supervisord (deploy/supervisord.conf): a process that dies
# is started again and the log names it; one that cannot stay up stops all
# three with a message naming it. Ctrl-C stops all three.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/.venv/bin:$PATH"

VAR_DIR="${CIVITAS_VAR_DIR:-$PWD/var}"
mkdir -p "$VAR_DIR"
export CIVITAS_VAR_DIR="$VAR_DIR"
if [ -z "${SECRET_KEY:-}${SECRET_KEY_FILE:-}" ]; then
  if [ ! -s "$VAR_DIR/secret_key" ]; then
    (umask 077 && python -c 'import secrets; print(secrets.token_urlsafe(64))' \
      > "$VAR_DIR/secret_key")
  fi
  export SECRET_KEY_FILE="$VAR_DIR/secret_key"
fi
# A laptop generates its own signing key under var/ (production sets
# CIVITAS_SIGNING_KEY_FILE; with DEBUG off and neither, start-up stops).
if [ -z "${CIVITAS_SIGNING_KEY_FILE:-}" ]; then
  export CIVITAS_SIGNING_KEY_GENERATE="${CIVITAS_SIGNING_KEY_GENERATE:-true}"
fi
export PORT="${PORT:-8000}"
export ALLOWED_HOSTS="${ALLOWED_HOSTS:-localhost,127.0.0.1}"
# Plain HTTP on the loopback interface: no HTTPS redirect, no Secure cookies.
export CIVITAS_HTTPS="${CIVITAS_HTTPS:-false}"
export LOG_FORMAT="${LOG_FORMAT:-console}"
export CELERY_WORKER_CONCURRENCY="${CELERY_WORKER_CONCURRENCY:-1}"
export CELERY_TASK_DEFAULT_QUEUE="${CELERY_TASK_DEFAULT_QUEUE:-civitas}"
export CELERY_HOUSEKEEPING_QUEUE="${CELERY_HOUSEKEEPING_QUEUE:-${CELERY_TASK_DEFAULT_QUEUE}-housekeeping}"

python manage.py migrate --noinput
# The shared cache (throttles, password attempts) is a database table here.
python manage.py createcachetable
# The embedded MLflow store is created here, once, before web, worker, beat and
# the demo evaluations open it together (their first opens would race).
python manage.py mlflow_migrate
python manage.py collectstatic --noinput >/dev/null
python manage.py load_demo --url "http://127.0.0.1:${PORT}/"
python manage.py load_demo_evidence --queue
echo "Press Ctrl-C to stop web, worker and beat."
exec python -m supervisor.supervisord -c deploy/supervisord.conf
