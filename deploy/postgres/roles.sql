-- Civitas's two database roles and its database, created by a superuser once.
--
--   psql -v ON_ERROR_STOP=1 -v owner=civitas_owner -v app=civitas_app \
--        -v owner_password=... -v app_password=... -v dbname=civitas \
--        --dbname postgres -f deploy/postgres/roles.sql
--
-- The owner owns the database and its schema and runs the migrations
-- (manage.py migrate), then deploy/postgres/grants.sql. The app role (web,
-- workers, beat) is neither owner nor superuser: it reads and writes the
-- ordinary tables, and may only read and append to the audit tables, so it
-- can neither rewrite the audit chain nor switch its triggers off
-- (SET session_replication_role and ALTER TABLE ... DISABLE TRIGGER need
-- superuser or ownership). Idempotent: running it again changes nothing but
-- the passwords. Used by deploy/postgres/init-roles.sh (compose),
-- deploy/check.py (make deploy-check) and tests/deploy/test_roles.py.

SELECT format('CREATE ROLE %I LOGIN', :'owner')
 WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = :'owner') \gexec
SELECT format('CREATE ROLE %I LOGIN', :'app')
 WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = :'app') \gexec

-- Neither role may escape its grants; each only logs in, with a password.
ALTER ROLE :"owner" LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION
  NOBYPASSRLS PASSWORD :'owner_password';
ALTER ROLE :"app" LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION
  NOBYPASSRLS NOINHERIT PASSWORD :'app_password';

SELECT format('CREATE DATABASE %I OWNER %I', :'dbname', :'owner')
 WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = :'dbname') \gexec
ALTER DATABASE :"dbname" OWNER TO :"owner";
REVOKE ALL ON DATABASE :"dbname" FROM PUBLIC;
GRANT CONNECT, TEMPORARY ON DATABASE :"dbname" TO :"app";

\connect :"dbname"
ALTER SCHEMA public OWNER TO :"owner";
REVOKE ALL ON SCHEMA public FROM PUBLIC;
GRANT USAGE ON SCHEMA public TO :"app";
-- Tables the migrations create become usable by the app at once; grants.sql,
-- run by the owner after every migrate, takes UPDATE and DELETE on the audit
-- tables back (and covers tables created before these defaults existed).
ALTER DEFAULT PRIVILEGES FOR ROLE :"owner" IN SCHEMA public
  GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO :"app";
ALTER DEFAULT PRIVILEGES FOR ROLE :"owner" IN SCHEMA public
  GRANT USAGE, SELECT ON SEQUENCES TO :"app";
