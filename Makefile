# Civitas: `make run` starts the whole platform on one machine,
# `make test` runs the test suite against PostgreSQL and Redis.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

# The test suite runs against the production column of the architecture.
# Each checkout has its own database, Redis database and queue, named from a
# hash of its path, so two checkouts on one host never clobber each other;
# TEST_DATABASE_URL and TEST_CELERY_BROKER_URL override them.
CHECKOUT_HASH := $(shell printf '%s' '$(CURDIR)' | cksum | cut -d' ' -f1)
CHECKOUT_ID := $(shell printf '%08x' $(CHECKOUT_HASH))
CHECKOUT_REDIS_DB := $(shell echo $$(( $(CHECKOUT_HASH) % 15 + 1 )))
TEST_ENV := \
	DATABASE_URL=$${TEST_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/civitas_$(CHECKOUT_ID)} \
	CELERY_BROKER_URL=$${TEST_CELERY_BROKER_URL:-redis://127.0.0.1:6379/$(CHECKOUT_REDIS_DB)} \
	CELERY_RESULT_BACKEND=$${TEST_CELERY_BROKER_URL:-redis://127.0.0.1:6379/$(CHECKOUT_REDIS_DB)} \
	CELERY_TASK_DEFAULT_QUEUE=civitas-test-$(CHECKOUT_ID) \
	CIVITAS_SIGNING_KEY_GENERATE=true \
	CIVITAS_VAR_DIR=$(CURDIR)/var/test \
	SECRET_KEY=test-only-secret-key-not-used-anywhere-else-0123456789 \
	ALLOWED_HOSTS=testserver,localhost,127.0.0.1 \
	CIVITAS_HTTPS=false \
	LOG_LEVEL=WARNING

.PHONY: venv run test lint services migrate demo clean test-env browser pdf-libs

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

# The browser tests' tools: Debian's Chromium (Playwright's own download is
# not used) and axe-core from the npm registry (tests/e2e/package-lock.json).
browser:
	@command -v chromium >/dev/null 2>&1 || apt-get install -y --no-install-recommends chromium \
		|| { apt-get update && apt-get install -y --no-install-recommends chromium; }
	@test -f tests/e2e/node_modules/axe-core/axe.min.js \
		|| npm ci --prefix tests/e2e --no-audit --no-fund --silent

test: venv services lint browser pdf-libs
	env $(TEST_ENV) $(PY) -m pytest $(PYTEST_ARGS)

# WeasyPrint's libraries for the Annex IV PDF export (governance/exports):
# Debian's pango with its cairo and fontconfig, and a font to draw with.
pdf-libs:
	@ldconfig -p | grep -q libpangoft2-1.0 && fc-list | grep -q . \
		|| apt-get install -y --no-install-recommends libpango-1.0-0 libpangoft2-1.0-0 fonts-dejavu-core \
		|| { apt-get update && apt-get install -y --no-install-recommends libpango-1.0-0 libpangoft2-1.0-0 fonts-dejavu-core; }

clean:
	rm -rf var/test .pytest_cache .ruff_cache

# The deployment of deploy/compose.yaml proven without containers: a clean
# clone, an unprivileged user, env.example, the two database roles, gunicorn,
# a worker per queue, beat and an MLflow server; an upload, an evaluation and
# an audit verification through them (deploy/check.py, docs/deployment.md).
.PHONY: deploy-check
deploy-check: venv services
	$(PY) deploy/check.py

# Prints the names `make test` uses for this checkout.
test-env:
	@env $(TEST_ENV) sh -c 'echo "DATABASE_URL=$$DATABASE_URL"; echo "CELERY_BROKER_URL=$$CELERY_BROKER_URL"; echo "CELERY_TASK_DEFAULT_QUEUE=$$CELERY_TASK_DEFAULT_QUEUE"'
