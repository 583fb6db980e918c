"""Adopt the audit chain's tables from the governance app (issue 8).

State only: the tables were created by governance 0001 and made append-only by
governance 0002; they keep their names (``Meta.db_table``). On a database that
already holds them, the content types move too, so permissions granted on
them survive; on a fresh one there is nothing to move yet.
"""

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models

MODELS = ("auditevent", "auditcheckpoint", "auditchainhead")


def move_content_types(apps, schema_editor):
    content_type = apps.get_model("contenttypes", "ContentType")
    db = schema_editor.connection.alias
    for model in MODELS:
        if content_type.objects.using(db).filter(app_label="audit", model=model).exists():
            continue
        content_type.objects.using(db).filter(
            app_label="governance", model=model
        ).update(app_label="audit")


def restore_content_types(apps, schema_editor):
    content_type = apps.get_model("contenttypes", "ContentType")
    db = schema_editor.connection.alias
    for model in MODELS:
        if content_type.objects.using(db).filter(
            app_label="governance", model=model
        ).exists():
            continue
        content_type.objects.using(db).filter(app_label="audit", model=model).update(
            app_label="governance"
        )


class Migration(migrations.Migration):
    initial = True

    dependencies = [
        ("contenttypes", "0002_remove_content_type_name"),
        ("governance", "0007_move_audit_models_to_audit_app"),
        ("registry", "0001_initial"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.CreateModel(
                    name="AuditChainHead",
                    fields=[
                        (
                            "id",
                            models.PositiveSmallIntegerField(
                                default=1,
                                editable=False,
                                primary_key=True,
                                serialize=False,
                            ),
                        ),
                        ("seq", models.BigIntegerField(default=0)),
                        (
                            "hash",
                            models.CharField(default="0" * 64, max_length=64),
                        ),
                    ],
                    options={
                        "db_table": "governance_auditchainhead",
                        "constraints": [
                            models.CheckConstraint(
                                condition=models.Q(("id", 1)),
                                name="audit_chain_head_one_row",
                            )
                        ],
                    },
                ),
                migrations.CreateModel(
                    name="AuditCheckpoint",
                    fields=[
                        (
                            "id",
                            models.BigAutoField(
                                auto_created=True,
                                primary_key=True,
                                serialize=False,
                                verbose_name="ID",
                            ),
                        ),
                        ("seq", models.BigIntegerField(unique=True)),
                        ("head_hash", models.CharField(max_length=64)),
                        ("created_at", models.DateTimeField()),
                        ("envelope", models.JSONField()),
                    ],
                    options={
                        "db_table": "governance_auditcheckpoint",
                        "ordering": ["seq"],
                    },
                ),
                migrations.CreateModel(
                    name="AuditEvent",
                    fields=[
                        (
                            "seq",
                            models.BigIntegerField(primary_key=True, serialize=False),
                        ),
                        ("created_at", models.DateTimeField()),
                        ("actor_label", models.CharField(max_length=200)),
                        ("agency_slug", models.CharField(blank=True, max_length=80)),
                        ("action", models.CharField(max_length=100)),
                        ("object_type", models.CharField(blank=True, max_length=100)),
                        ("object_id", models.CharField(blank=True, max_length=100)),
                        (
                            "payload",
                            models.TextField(default="{}", help_text="canonical JSON"),
                        ),
                        ("prev_hash", models.CharField(max_length=64, unique=True)),
                        ("hash", models.CharField(max_length=64)),
                        (
                            "actor",
                            models.ForeignKey(
                                blank=True,
                                null=True,
                                on_delete=django.db.models.deletion.PROTECT,
                                related_name="audit_events",
                                to=settings.AUTH_USER_MODEL,
                            ),
                        ),
                        (
                            "agency",
                            models.ForeignKey(
                                blank=True,
                                db_index=False,
                                null=True,
                                on_delete=django.db.models.deletion.PROTECT,
                                related_name="audit_events",
                                to="registry.agency",
                            ),
                        ),
                    ],
                    options={
                        "db_table": "governance_auditevent",
                        "ordering": ["seq"],
                        "indexes": [
                            models.Index(
                                fields=["agency", "seq"], name="audit_event_agency_seq"
                            ),
                            models.Index(
                                fields=["action", "seq"], name="audit_event_action_seq"
                            ),
                            models.Index(
                                fields=["object_type", "object_id", "seq"],
                                name="audit_event_object_seq",
                            ),
                        ],
                    },
                ),
            ],
            database_operations=[],
        ),
        migrations.RunPython(
            move_content_types, restore_content_types, elidable=False
        ),
    ]
