"""Make the audit tables append-only on SQLite too (SECURITY D1).

The PostgreSQL triggers are governance 0002's. On SQLite (the laptop default
of ``make run``) BEFORE UPDATE and BEFORE DELETE row triggers raise, whatever
the caller (ORM ``.update()``, ``.delete()``, ``save()`` of an existing row,
admin, raw SQL); Django reports them as IntegrityError, as on PostgreSQL.
SQLite has no TRUNCATE: ``DELETE FROM`` fires the row triggers, so emptying a
table that holds rows is refused as well. Anyone who can write the database
file can still drop the triggers; what that changes is caught by the chain and
the signed checkpoints (D2, D3). Other databases are left alone.
"""

from django.db import migrations

TABLES = ("governance_auditevent", "governance_auditcheckpoint")

CREATE_TRIGGER = """
CREATE TRIGGER IF NOT EXISTS {table}_no_{op}
BEFORE {OP} ON {table}
BEGIN
    SELECT RAISE(ABORT, '{OP} on {table} refused: the audit record is append-only');
END
"""


def _triggers():
    for table in TABLES:
        for op in ("update", "delete"):
            yield table, op


def install(apps, schema_editor):
    if schema_editor.connection.vendor != "sqlite":
        return
    for table, op in _triggers():
        sql = CREATE_TRIGGER.format(table=table, op=op, OP=op.upper())
        schema_editor.execute(sql, params=None)


def uninstall(apps, schema_editor):
    if schema_editor.connection.vendor != "sqlite":
        return
    for table, op in _triggers():
        schema_editor.execute(f"DROP TRIGGER IF EXISTS {table}_no_{op}", params=None)


class Migration(migrations.Migration):
    dependencies = [("audit", "0002_security_events")]

    operations = [migrations.RunPython(install, uninstall, elidable=False)]
