"""Make the audit tables append-only on PostgreSQL (SECURITY D1).

Row triggers refuse UPDATE and DELETE of audit events and checkpoints,
whatever the caller (ORM, raw SQL, admin). A statement trigger refuses
TRUNCATE of a table that holds rows: truncating an empty table destroys
nothing, and Django's test runner empties every table with one TRUNCATE after
each transactional test. A superuser can still disable the triggers; what it
then changes is caught by the chain and the signed checkpoints (D2, D3).

Other databases (the SQLite laptop default) get no triggers.
"""

from django.db import migrations

TABLES = ("governance_auditevent", "governance_auditcheckpoint")

CREATE_FUNCTIONS = """
CREATE OR REPLACE FUNCTION civitas_audit_refuse_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% on % refused: the audit record is append-only',
        TG_OP, TG_TABLE_NAME
        USING ERRCODE = 'restrict_violation';
END;
$$;

CREATE OR REPLACE FUNCTION civitas_audit_refuse_truncate() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    has_rows boolean;
BEGIN
    EXECUTE format('SELECT EXISTS (SELECT 1 FROM %I.%I)', TG_TABLE_SCHEMA, TG_TABLE_NAME)
        INTO has_rows;
    IF has_rows THEN
        RAISE EXCEPTION 'TRUNCATE on % refused: the audit record is append-only',
            TG_TABLE_NAME
            USING ERRCODE = 'restrict_violation';
    END IF;
    RETURN NULL;
END;
$$;
"""

CREATE_TRIGGERS = """
CREATE TRIGGER {table}_no_update_delete
    BEFORE UPDATE OR DELETE ON {table}
    FOR EACH ROW EXECUTE FUNCTION civitas_audit_refuse_change();
CREATE TRIGGER {table}_no_truncate
    BEFORE TRUNCATE ON {table}
    FOR EACH STATEMENT EXECUTE FUNCTION civitas_audit_refuse_truncate();
"""

DROP_TRIGGERS = """
DROP TRIGGER IF EXISTS {table}_no_update_delete ON {table};
DROP TRIGGER IF EXISTS {table}_no_truncate ON {table};
"""

DROP_FUNCTIONS = """
DROP FUNCTION IF EXISTS civitas_audit_refuse_change();
DROP FUNCTION IF EXISTS civitas_audit_refuse_truncate();
"""


def install(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    schema_editor.execute(CREATE_FUNCTIONS, params=None)
    for table in TABLES:
        schema_editor.execute(CREATE_TRIGGERS.format(table=table), params=None)


def uninstall(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    for table in TABLES:
        schema_editor.execute(DROP_TRIGGERS.format(table=table), params=None)
    schema_editor.execute(DROP_FUNCTIONS, params=None)


class Migration(migrations.Migration):
    dependencies = [("governance", "0001_initial")]

    operations = [migrations.RunPython(install, uninstall, elidable=False)]
