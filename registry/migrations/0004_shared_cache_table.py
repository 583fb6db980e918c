"""The table of the shared cache (``CACHE_URL``'s database cache, the default
when the broker is not Redis), so ``migrate`` alone makes it: an upgrade that
runs only ``migrate`` keeps its API (every request reads the throttle counts).
``createcachetable`` does nothing when the cache is not a database cache, and
nothing for a table that exists."""

from django.core.management import call_command
from django.db import migrations


def create_cache_table(apps, schema_editor):
    call_command(
        "createcachetable", database=schema_editor.connection.alias, verbosity=0
    )


class Migration(migrations.Migration):
    dependencies = [("registry", "0003_version_status")]

    operations = [
        migrations.RunPython(create_cache_table, migrations.RunPython.noop),
    ]
