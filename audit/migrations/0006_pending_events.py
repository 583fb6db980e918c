"""Pending audit events: appends queued while another writer holds the chain head.

docs/audit.md, "Appends under contention". On PostgreSQL a row trigger (the
function of governance 0002) refuses UPDATE: a pending event is inserted,
then deleted by the transaction that chains it, never changed. SQLite never
queues (its writers are serialised), so it gets no trigger.
"""

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models

TABLE = "audit_auditpendingevent"


def install_trigger(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(
            f"CREATE TRIGGER {TABLE}_no_update BEFORE UPDATE ON {TABLE} "
            "FOR EACH ROW EXECUTE FUNCTION civitas_audit_refuse_change();",
            params=None,
        )


def uninstall_trigger(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(
            f"DROP TRIGGER IF EXISTS {TABLE}_no_update ON {TABLE};", params=None
        )


class Migration(migrations.Migration):
    dependencies = [
        ("audit", "0005_merkle_tree"),
        ("registry", "0001_initial"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.CreateModel(
            name="AuditPendingEvent",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),  # noqa: E501
                ("recorded_at", models.DateTimeField()),
                ("actor_label", models.CharField(max_length=200)),
                ("agency_slug", models.CharField(blank=True, max_length=80)),
                ("action", models.CharField(max_length=100)),
                ("object_type", models.CharField(blank=True, max_length=100)),
                ("object_id", models.CharField(blank=True, max_length=100)),
                ("payload", models.TextField(default="{}", help_text="canonical JSON")),
                ("actor", models.ForeignKey(blank=True, db_index=False, null=True, on_delete=django.db.models.deletion.PROTECT, related_name="+", to=settings.AUTH_USER_MODEL)),  # noqa: E501
                ("agency", models.ForeignKey(blank=True, db_index=False, null=True, on_delete=django.db.models.deletion.PROTECT, related_name="+", to="registry.agency")),  # noqa: E501
            ],
            options={"ordering": ["id"]},
        ),
        migrations.RunPython(install_trigger, uninstall_trigger, elidable=False),
    ]
