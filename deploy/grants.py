"""Apply deploy/postgres/grants.sql as the owner role, after ``manage.py migrate``.

    python deploy/grants.py --app-role civitas_app

Connects with the platform's own database settings (``DATABASE_URL`` or
``DATABASE_URL_FILE``: the owner's URL, as for the migration), so the image
needs no psql. Idempotent; exits non-zero with PostgreSQL's message when the
grants cannot be applied (the audit tables are missing, the role is unknown).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
GRANTS_SQL = Path(__file__).resolve().parent / "postgres" / "grants.sql"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--app-role", required=True, help="the application's role")
    args = parser.parse_args(argv)

    sys.path.insert(0, str(ROOT))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    import django
    from django.db import DatabaseError, connection, transaction

    django.setup()
    if connection.vendor != "postgresql":
        print("deploy/grants.py: the database is not PostgreSQL; nothing to grant")
        return 0
    try:
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(
                "SELECT set_config('civitas.app_role', %s, true)", [args.app_role]
            )
            cursor.execute(GRANTS_SQL.read_text(encoding="utf-8"))
    except DatabaseError as error:
        print(f"deploy/grants.py: {error}", file=sys.stderr)
        return 1
    print(f"deploy/grants.py: grants for {args.app_role} applied")
    return 0


if __name__ == "__main__":
    sys.exit(main())
