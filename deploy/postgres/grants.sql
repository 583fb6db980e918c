-- The app role's rights on the tables, applied by the owner after every
-- `manage.py migrate` (deploy/grants.py runs it; psql can too after
-- `SELECT set_config('civitas.app_role', 'civitas_app', false);`).
-- Idempotent.
--
-- Ordinary tables: SELECT, INSERT, UPDATE, DELETE. Sequences: USAGE, SELECT.
-- The audit chain (events, signed checkpoints, Merkle nodes) and the security
-- events: SELECT and INSERT only; the chain head (one row, locked and moved
-- forward on every append): SELECT, INSERT, UPDATE, never DELETE; the queue of
-- events recorded while another writer held the head: SELECT, INSERT and
-- DELETE (the transaction that chains a queued event deletes it), never
-- UPDATE (docs/audit.md, "Appends under contention"). TRUNCATE, TRIGGER and
-- REFERENCES are never granted. The row triggers of governance migration 0002
-- stay the second line: the owner itself cannot UPDATE an event without first
-- disabling them.
DO $grants$
DECLARE
  app text := current_setting('civitas.app_role');
  append_only text[] := ARRAY[
    'governance_auditevent', 'governance_auditcheckpoint', 'audit_merklenode',
    'audit_securityevent'
  ];
  t text;
BEGIN
  EXECUTE format(
    'REVOKE TRUNCATE, REFERENCES, TRIGGER ON ALL TABLES IN SCHEMA public FROM %I', app);
  EXECUTE format(
    'GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO %I', app);
  EXECUTE format(
    'GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO %I', app);
  FOREACH t IN ARRAY append_only LOOP
    IF to_regclass(format('public.%I', t)) IS NULL THEN
      RAISE EXCEPTION 'audit table % is missing: run manage.py migrate first', t;
    END IF;
    EXECUTE format('REVOKE UPDATE, DELETE ON public.%I FROM %I', t, app);
  END LOOP;
  EXECUTE format('REVOKE DELETE ON public.governance_auditchainhead FROM %I', app);
  IF to_regclass('public.audit_auditpendingevent') IS NULL THEN
    RAISE EXCEPTION 'audit table audit_auditpendingevent is missing: run manage.py migrate first';
  END IF;
  EXECUTE format('REVOKE UPDATE ON public.audit_auditpendingevent FROM %I', app);
END
$grants$;
