#!/bin/sh
# First start of the postgres container (/docker-entrypoint-initdb.d/): the
# database, its owner and the application's role, by deploy/postgres/roles.sql.
# Passwords come from the compose secrets, never from the environment.
set -eu
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres \
  -v dbname="${CIVITAS_DB:-civitas}" \
  -v owner="${CIVITAS_DB_OWNER:-civitas_owner}" \
  -v app="${CIVITAS_DB_APP:-civitas_app}" \
  -v owner_password="$(cat /run/secrets/db_owner_password)" \
  -v app_password="$(cat /run/secrets/db_app_password)" \
  -f /civitas-sql/roles.sql
