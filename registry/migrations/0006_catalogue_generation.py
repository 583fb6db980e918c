"""The catalogue's generation: a counter PostgreSQL bumps on every write to it.

``registry.read_cache`` keys the API's cached catalogue reads by this counter,
so any committed change to the catalogue (through a service, a queryset
``update()``, the admin, raw SQL, ``COPY`` or ``TRUNCATE``) makes every older
entry unreachable. Statement-level triggers on each registry table and on the
user table (a version shows its creator's name) do the bump; the epoch is a
random UUID made with the database, so two databases never share a key.

On SQLite (the embedded laptop default) nothing is created and the read cache
is off.
"""

from django.db import migrations

TABLES = (
    "registry_agency",
    "registry_membership",
    "registry_licence",
    "registry_dataset",
    "registry_datasetversion",
    "registry_aimodel",
    "registry_modelversion",
    "registry_modelversiondataset",
    "auth_user",
)

CREATE = """
CREATE TABLE registry_cataloguegeneration (
    id smallint PRIMARY KEY CHECK (id = 1),
    epoch uuid NOT NULL DEFAULT gen_random_uuid(),
    counter bigint NOT NULL DEFAULT 0
);
INSERT INTO registry_cataloguegeneration (id) VALUES (1);
CREATE FUNCTION registry_catalogue_bump() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE registry_cataloguegeneration SET counter = counter + 1 WHERE id = 1;
    RETURN NULL;
END $$;
"""

TRIGGER = """
CREATE TRIGGER registry_catalogue_bump AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE
ON {table} FOR EACH STATEMENT EXECUTE FUNCTION registry_catalogue_bump();
"""

DROP = """
DROP TABLE IF EXISTS registry_cataloguegeneration;
DROP FUNCTION IF EXISTS registry_catalogue_bump() CASCADE;
"""


def create(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    schema_editor.execute(CREATE)
    for table in TABLES:
        schema_editor.execute(TRIGGER.format(table=table))


def drop(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(DROP)


class Migration(migrations.Migration):
    dependencies = [
        ("registry", "0005_load_version_filter_indexes"),
        ("auth", "0012_alter_user_first_name_max_length"),
    ]

    operations = [migrations.RunPython(create, drop)]
