# Civitas: `make run` starts the whole platform on one machine,
# `make test` runs the test suite against PostgreSQL and Redis.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

# The test suite runs against the production column of the architecture.
TEST_ENV := \
	DATABASE_URL=$${TEST_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/civitas} \
	CELERY_BROKER_URL=$${TEST_CELERY_BROKER_URL:-redis://127.0.0.1:6379/15} \
	CELERY_RESULT_BACKEND=$${TEST_CELERY_BROKER_URL:-redis://127.0.0.1:6379/15} \
	CELERY_TASK_DEFAULT_QUEUE=civitas-test \
	CIVITAS_VAR_DIR=$(CURDIR)/var/test \
	SECRET_KEY=test-only-secret-key-not-used-anywhere-else-0123456789 \
	ALLOWED_HOSTS=testserver,localhost,127.0.0.1 \
	CIVITAS_HTTPS=false \
	LOG_LEVEL=WARNING

.PHONY: venv run test lint services migrate demo clean

$(VENV)/.installed: requirements.txt requirements-dev.txt constraints.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check \
		-r requirements-dev.txt -c constraints.txt
	@touch $@

venv: $(VENV)/.installed

run: venv
	@bash deploy/run-local.sh

services:
	@bash tests/ensure_services.sh

lint: venv
	$(VENV)/bin/ruff check .
	@env $(TEST_ENV) $(PY) manage.py makemigrations --check --dry-run >/dev/null \
		|| { echo "make lint: models changed without a migration (manage.py makemigrations)"; exit 1; }

test: venv services lint
	env $(TEST_ENV) $(PY) -m pytest $(PYTEST_ARGS)

clean:
	rm -rf var/test .pytest_cache .ruff_cache

# The deployment of deploy/compose.yaml proven without containers: a clean
# clone, an unprivileged user, env.example, the two database roles, gunicorn,
# a worker per queue, beat and an MLflow server; an upload, an evaluation and
# an audit verification through them (deploy/check.py, docs/deployment.md).
.PHONY: deploy-check
deploy-check: venv services
	$(PY) deploy/check.py
