"""The audit chain's models now belong to the ``audit`` app (issue 8).

State only: the tables ``governance_auditchainhead``, ``governance_auditevent``
and ``governance_auditcheckpoint`` stay where they are, with their rows and
the append-only triggers of 0002 (which name them); ``audit`` 0001 adopts them
under the same table names.
"""

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [("governance", "0006_suite_datasets")]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.DeleteModel(name="AuditEvent"),
                migrations.DeleteModel(name="AuditCheckpoint"),
                migrations.DeleteModel(name="AuditChainHead"),
            ],
            database_operations=[],
        )
    ]
