"""API tokens bump the catalogue generation too.

``registry.read_cache.GenerationTokenAuthentication`` remembers a token check
while the generation holds: a token created, revoked or signed out must make
every remembered check unreachable, as a change of the user, the membership or
the agency already does (0006). Nothing is created on SQLite.
"""

from django.db import migrations

CREATE = """
CREATE TRIGGER registry_catalogue_bump AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE
ON knox_authtoken FOR EACH STATEMENT EXECUTE FUNCTION registry_catalogue_bump();
"""
DROP = "DROP TRIGGER IF EXISTS registry_catalogue_bump ON knox_authtoken;"


def create(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(CREATE)


def drop(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(DROP)


class Migration(migrations.Migration):
    dependencies = [
        ("registry", "0007_merge_0006_catalogue_generation_0006_identity"),
        ("knox", "0009_extend_authtoken_field"),
    ]

    operations = [migrations.RunPython(create, drop)]
