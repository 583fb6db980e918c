"""The Merkle tree over the audit chain (docs/audit.md, "Merkle tree").

Adds the perfect-subtree store, the head's frontier and the checkpoints'
root hash, builds the tree over the events already recorded (in seq order,
in batches) and makes the node table append-only like the chain: the
PostgreSQL trigger functions are governance 0002's, the SQLite triggers
follow audit 0003.
"""

from django.db import migrations, models

from audit.merkle import Frontier, leaf_hash, node_key

TABLE = "audit_merklenode"
_BATCH = 5000

POSTGRES_TRIGGERS = f"""
CREATE TRIGGER {TABLE}_no_update_delete
    BEFORE UPDATE OR DELETE ON {TABLE}
    FOR EACH ROW EXECUTE FUNCTION civitas_audit_refuse_change();
CREATE TRIGGER {TABLE}_no_truncate
    BEFORE TRUNCATE ON {TABLE}
    FOR EACH STATEMENT EXECUTE FUNCTION civitas_audit_refuse_truncate();
"""

SQLITE_TRIGGER = """
CREATE TRIGGER IF NOT EXISTS {table}_no_{op}
BEFORE {OP} ON {table}
BEGIN
    SELECT RAISE(ABORT, '{OP} on {table} refused: the audit record is append-only');
END
"""


def build_tree(apps, schema_editor):
    """Nodes for every recorded event, and the head's frontier."""
    event_model = apps.get_model("audit", "AuditEvent")
    node_model = apps.get_model("audit", "AuditMerkleNode")
    head_model = apps.get_model("audit", "AuditChainHead")
    frontier, after = Frontier(), 0
    while True:
        rows = list(
            event_model.objects.filter(seq__gt=after)
            .order_by("seq")
            .values_list("seq", "hash")[:_BATCH]
        )
        nodes = []
        for seq, digest in rows:
            for level, index, value in frontier.append(leaf_hash(digest)):
                nodes.append(
                    node_model(
                        id=node_key(level, index), level=level, index=index, hash=value
                    )
                )
            after = seq
        node_model.objects.bulk_create(nodes)
        if len(rows) < _BATCH:
            break
    head_model.objects.filter(pk=1).update(frontier=" ".join(frontier.hashes))


def install_triggers(apps, schema_editor):
    vendor = schema_editor.connection.vendor
    if vendor == "postgresql":
        schema_editor.execute(POSTGRES_TRIGGERS, params=None)
    elif vendor == "sqlite":
        # Adding root_hash made SQLite rebuild the checkpoint table, which
        # dropped audit 0003's triggers on it: they are put back too.
        for table in (TABLE, "governance_auditcheckpoint"):
            for op in ("update", "delete"):
                sql = SQLITE_TRIGGER.format(table=table, op=op, OP=op.upper())
                schema_editor.execute(sql, params=None)


def uninstall_triggers(apps, schema_editor):
    vendor = schema_editor.connection.vendor
    if vendor == "postgresql":
        schema_editor.execute(
            f"DROP TRIGGER IF EXISTS {TABLE}_no_update_delete ON {TABLE};"
            f"DROP TRIGGER IF EXISTS {TABLE}_no_truncate ON {TABLE};",
            params=None,
        )
    elif vendor == "sqlite":
        for op in ("update", "delete"):
            schema_editor.execute(
                f"DROP TRIGGER IF EXISTS {TABLE}_no_{op}", params=None
            )


class Migration(migrations.Migration):
    dependencies = [
        ("audit", "0004_load_agency_slug_index"),
        ("governance", "0002_audit_append_only_triggers"),
    ]

    operations = [
        migrations.CreateModel(
            name="AuditMerkleNode",
            fields=[
                ("id", models.BigIntegerField(primary_key=True, serialize=False)),
                ("level", models.PositiveSmallIntegerField()),
                ("index", models.BigIntegerField()),
                ("hash", models.CharField(max_length=64)),
            ],
            options={"db_table": TABLE},
        ),
        migrations.AddField(
            model_name="auditchainhead",
            name="frontier",
            field=models.TextField(blank=True, default=""),
        ),
        migrations.AddField(
            model_name="auditcheckpoint",
            name="root_hash",
            field=models.CharField(blank=True, default="", max_length=64),
        ),
        migrations.RunPython(build_tree, migrations.RunPython.noop, elidable=False),
        migrations.RunPython(install_triggers, uninstall_triggers, elidable=False),
    ]
