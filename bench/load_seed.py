"""Prepare a PostgreSQL database for ``bench/load.py``: a catalogue and an audit chain.

Run by ``bench/load.py`` in its own process (``DATABASE_URL`` names the empty
database, already created), never imported by the project:

    DATABASE_URL=postgres://.../civitas_bench_1k_tpl \\
        python bench/load_seed.py --versions 1000 --audit-events 1000000 \\
        --out bench/out/load/civitas_bench_1k_tpl.json

It migrates, creates the people, agencies, licences and built-in suites
through the project's own services (a few dozen rows), then writes the bulk
with PostgreSQL ``COPY``: models, model versions (chains of base versions,
so lineage has depth), dataset versions and their links, evaluation runs,
and the audit events. Bulk rows bypass the services on purpose: a million
``audit.record`` calls take about 45 minutes (bench/README.md, ``audit.py``),
COPY takes seconds. The audit events still form the chain
``audit.services.record`` would have built: the same hashing functions
(``audit.verify.event_hash``), seq 1, 2, 3... continuing the head, and the
head row moved to the last event (the append-only triggers allow INSERT).
The ids, tokens and slugs the load needs are written to ``--out`` as JSON.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

AGENCIES = 8
VERSIONS_PER_MODEL = 10
DATASETS_PER_AGENCY = 5
USERS_PER_AGENCY = 2
LICENCES = ("Apache-2.0", "MIT", "CC-BY-4.0")
JURISDICTIONS = ("FR", "DE", "ES", "IT", "NL", "BE", "PT", "AT")
STATUSES = ("draft", "in_review", "approved", "approved", "suspended", "retired")
ACTIONS = (
    "model_version.registered",
    "model_version.updated",
    "evaluation.requested",
    "evaluation.succeeded",
    "artifact.uploaded",
)


def _digest(*parts: object) -> str:
    return hashlib.sha256(":".join(map(str, parts)).encode()).hexdigest()


def copy_rows(table: str, columns: list[str], rows) -> int:
    """Write ``rows`` (tuples in ``columns`` order) with COPY; return the count."""
    from django.db import connection

    count = 0
    with connection.cursor() as cursor:
        sql = f"COPY {table} ({', '.join(columns)}) FROM STDIN"
        with cursor.cursor.copy(sql) as copy:
            for row in rows:
                copy.write_row(row)
                count += 1
    return count


def reset_sequence(table: str) -> None:
    """Move the id sequence past the ids COPY wrote."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
            f"COALESCE((SELECT MAX(id) FROM {table}), 1))"
        )


def people(now: dt.datetime) -> dict:
    """Agencies, their maintainers, an oversight reviewer, licences and suites."""
    from django.contrib.auth import get_user_model
    from knox.models import AuthToken

    from governance.services.suites import builtin_suites_sync
    from registry import services
    from registry.models import Agency, Membership, Role

    user_model = get_user_model()
    admin = user_model.objects.create_superuser("bench-admin", "admin@bench.invalid")
    oversight = Agency.objects.create(
        name="Bench oversight office", slug="bench-oversight", jurisdiction="FR",
        is_oversight_body=True,
    )
    reviewer = user_model.objects.create_user("bench-reviewer")
    Membership.objects.create(user=reviewer, agency=oversight, role=Role.REVIEWER)
    agencies, users = [], []
    for a in range(AGENCIES):
        agency = Agency.objects.create(
            name=f"Bench agency {a}", slug=f"bench-{a}", jurisdiction=JURISDICTIONS[a]
        )
        agencies.append(agency)
        for u in range(USERS_PER_AGENCY):
            user = user_model.objects.create_user(f"bench-{a}-{u}")
            Membership.objects.create(user=user, agency=agency, role=Role.MAINTAINER)
            users.append((agency, user))
    licences = [
        services.licence_register(actor=admin, expression=expression)[0]
        for expression in LICENCES
    ]
    suites = builtin_suites_sync(admin=admin)
    core = next(suite for suite in suites if suite.name == "civitas-core")
    ttl = dt.timedelta(days=30)
    tokens = [
        {
            "agency_index": agencies.index(agency),
            "agency": agency.slug,
            "user_id": user.pk,
            "token": AuthToken.objects.create(user, expiry=ttl)[1],
        }
        for agency, user in users
    ]
    reviewer_token = AuthToken.objects.create(reviewer, expiry=ttl)[1]
    return {
        "agencies": agencies,
        "users": users,
        "licences": licences,
        "suite": core,
        "tokens": tokens,
        "reviewer_token": reviewer_token,
        "admin": admin,
    }


def datasets(ctx: dict, now: dt.datetime) -> list[tuple[int, int]]:
    """Datasets and one version each per agency; returns (version id, agency index)."""
    from registry.models import Dataset, DatasetVersion

    base = (Dataset.objects.order_by("-id").values_list("id", flat=True).first()) or 0
    vbase = (
        DatasetVersion.objects.order_by("-id").values_list("id", flat=True).first()
    ) or 0
    ds_rows, dv_rows, out = [], [], []
    n = 0
    for a, agency in enumerate(ctx["agencies"]):
        creator = ctx["users"][a * USERS_PER_AGENCY][1]
        for d in range(DATASETS_PER_AGENCY):
            n += 1
            visibility = "public" if d % 2 == 0 else "private"
            ds_rows.append(
                (base + n, agency.pk, f"Bench data {a}-{d}", f"data-{d}", "",
                 visibility, creator.pk, now)
            )
            licence = ctx["licences"][d % len(ctx["licences"])]
            dv_rows.append(
                (vbase + n, base + n, "1.0.0", "Benchmark.", "Synthetic rows.",
                 "Generated.", "", "Benchmarks.", "", "", '["fr", "en"]', 1000,
                 licence.pk, JURISDICTIONS[a], "none", "", "", None, "", "", "",
                 "none", "", creator.pk, now)
            )
            out.append((vbase + n, a))
    copy_rows(
        "registry_dataset",
        ["id", "agency_id", "name", "slug", "description", "visibility",
         "created_by_id", "created_at"],
        ds_rows,
    )
    copy_rows(
        "registry_datasetversion",
        ["id", "dataset_id", "version", "motivation", "composition",
         "collection_process", "preprocessing", "intended_uses", "distribution",
         "maintenance", "languages", "record_count", "licence_id",
         "origin_jurisdiction", "personal_data", "legal_basis", "digest",
         "size_bytes", "storage_key", "source_uri", "original_filename",
         "artifact_state", "artifact_error", "created_by_id", "created_at"],
        dv_rows,
    )
    reset_sequence("registry_dataset")
    reset_sequence("registry_datasetversion")
    return out


def models_and_versions(ctx: dict, versions: int, now: dt.datetime) -> dict:
    """``versions`` model versions in families of ten, spread over the agencies."""
    n_models = max(1, (versions + VERSIONS_PER_MODEL - 1) // VERSIONS_PER_MODEL)
    model_rows, version_rows = [], []
    by_agency: dict[int, list[int]] = {a: [] for a in range(AGENCIES)}
    models_by_agency: dict[int, list[int]] = {a: [] for a in range(AGENCIES)}
    vid = 0
    for m in range(1, n_models + 1):
        a = m % AGENCIES
        agency = ctx["agencies"][a]
        creator = ctx["users"][a * USERS_PER_AGENCY][1]
        visibility = "public" if m % 3 else "private"
        model_rows.append(
            (m, agency.pk, f"Bench model {m}", f"model-{m}", "text-generation",
             "citizen services", "", "Answering citizens.", "", visibility,
             creator.pk, now, now)
        )
        models_by_agency[a].append(m)
        previous = None
        for k in range(VERSIONS_PER_MODEL):
            if vid >= versions:
                break
            vid += 1
            created = now - dt.timedelta(seconds=versions - vid)
            licence = ctx["licences"][vid % len(ctx["licences"])]
            version_rows.append(
                _version_row(vid, m, k, licence.pk, previous, creator.pk, created, a)
            )
            by_agency[a].append(vid)
            previous = vid
    copy_rows(
        "registry_aimodel",
        ["id", "agency_id", "name", "slug", "task", "domain", "description",
         "intended_use", "out_of_scope_uses", "visibility", "created_by_id",
         "created_at", "updated_at"],
        model_rows,
    )
    copy_rows("registry_modelversion", VERSION_COLUMNS, version_rows)
    reset_sequence("registry_aimodel")
    reset_sequence("registry_modelversion")
    return {"versions_by_agency": by_agency, "models_by_agency": models_by_agency}


VERSION_COLUMNS = [
    "id", "model_id", "version", "status", "licence_id", "artifact_state",
    "artifact_error", "artifact_key", "artifact_digest", "artifact_size",
    "artifact_format", "original_filename", "source_uri", "graph_inputs",
    "graph_outputs", "opsets", "parameter_count", "weight_bytes", "kind", "layout",
    "num_layers", "quantisation", "selftest", "base_version_id", "derivation",
    "derivation_settings", "training_run", "training_jurisdiction",
    "training_hardware",
    "training_energy_kwh", "hosting_jurisdiction", "limitations", "risks",
    "ethical_considerations", "created_by_id", "created_at", "updated_at",
    "released_at",
]


def _version_row(vid, model_id, k, licence_id, base, creator_id, created, a):
    inputs = json.dumps([{"name": "input_ids", "type": "int64", "shape": ["b", "s"]}])
    outputs = json.dumps(
        [{"name": "logits", "type": "float", "shape": ["b", "s", 256]}]
    )
    return (
        vid, model_id, f"1.{k}.0", STATUSES[vid % len(STATUSES)], licence_id,
        "available", "", f"bench/{vid}.tar", _digest("artifact", vid), 4096, "tar",
        "bundle.tar", "", inputs, outputs, '{"": 17}', 1_000_000 + vid, 4_000_000,
        "causal_lm_kv", "llama", 2, "", "{}", base,
        "fine-tuned" if base else "", "{}", "", JURISDICTIONS[a], "2 CPUs",
        None, JURISDICTIONS[(a + 1) % AGENCIES], "Synthetic.", "", "", creator_id,
        created, created, created,
    )


def links_and_runs(ctx: dict, data: list, catalogue: dict, now: dt.datetime) -> int:
    """Two dataset links and one succeeded evaluation run per version."""
    data_by_agency: dict[int, list[int]] = {}
    for dv, a in data:
        data_by_agency.setdefault(a, []).append(dv)
    suite = ctx["suite"]
    links, runs = [], []
    for a, vids in catalogue["versions_by_agency"].items():
        own = data_by_agency[a]
        requester = ctx["users"][a * USERS_PER_AGENCY][1].pk
        for vid in vids:
            links.append((len(links) + 1, vid, own[vid % len(own)], "training"))
            links.append((len(links) + 1, vid, own[(vid + 1) % len(own)], "evaluation"))
            runs.append(
                (vid, suite.pk, "succeeded", requester, now, now, now, 1.0, "",
                 _digest("artifact", vid), 1, "bench", "", "", "[]", "{}", "", "",
                 "", 1.0)
            )
    copy_rows(
        "registry_modelversiondataset",
        ["id", "model_version_id", "dataset_version_id", "role"],
        links,
    )
    copy_rows(
        "governance_evaluationrun",
        ["model_version_id", "suite_id", "status", "requested_by_id",
         "requested_at", "started_at", "finished_at", "progress", "progress_note",
         "artifact_digest", "attempts", "worker", "failure_code", "failure_reason",
         "results", "environment", "items_key", "mlflow_run_id", "engine_version",
         "wall_seconds"],
        runs,
    )
    reset_sequence("registry_modelversiondataset")
    return len(runs)


def audit_chain(ctx: dict, catalogue: dict, events: int) -> dict:
    """Append ``events`` events after the current head, hashed as ``record`` does."""
    from django.db import connection, transaction

    from audit.models import AuditChainHead, AuditEvent
    from audit.tree import BulkNodes
    from audit.verify import canonical_json, canonical_value, event_hash

    with transaction.atomic():
        head = AuditChainHead.objects.select_for_update().get(pk=1)
        start = AuditEvent.objects.order_by("-seq").values_list("created_at", flat=True)
        last_at = start.first() or dt.datetime(2025, 1, 1, tzinfo=dt.UTC)
        seq, prev = head.seq, head.hash
        tree, nodes = BulkNodes(head), []
        agencies, users = ctx["agencies"], ctx["users"]
        vids = catalogue["versions_by_agency"]

        def rows():
            nonlocal seq, prev
            for i in range(events):
                seq += 1
                a = i % AGENCIES
                agency, user = users[a * USERS_PER_AGENCY]
                own = vids[a] or [0]
                object_id = str(own[(i // AGENCIES) % len(own)])
                created = last_at + dt.timedelta(milliseconds=i + 1)
                payload = canonical_value({"bench": True, "n": i})
                fields = {
                    "seq": seq, "created_at": created, "actor_label": user.username,
                    "agency_slug": agency.slug, "action": ACTIONS[i % len(ACTIONS)],
                    "object_type": "registry.modelversion", "object_id": object_id,
                    "payload": payload, "prev_hash": prev,
                }
                digest = event_hash(fields)
                nodes.extend(tree.add(digest))
                yield (seq, created, user.pk, fields["actor_label"], agency.pk,
                       agency.slug, fields["action"], fields["object_type"],
                       object_id, canonical_json(payload).decode(), prev, digest)
                prev = digest

        copy_rows(
            "governance_auditevent",
            ["seq", "created_at", "actor_id", "actor_label", "agency_id",
             "agency_slug", "action", "object_type", "object_id", "payload",
             "prev_hash", "hash"],
            rows(),
        )
        copy_rows("audit_merklenode", ["id", "level", '"index"', "hash"], nodes)
        AuditChainHead.objects.filter(pk=1).update(
            seq=seq, hash=prev, frontier=tree.edge
        )
        del agencies
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")
    return {"seq": seq}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--versions", type=int, required=True)
    parser.add_argument("--audit-events", type=int, required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)

    import django

    django.setup()
    from django.core.management import call_command
    from django.utils import timezone

    started = time.monotonic()
    call_command("migrate", verbosity=0, interactive=False)
    migrated = time.monotonic()
    now = timezone.now()
    ctx = people(now)
    data = datasets(ctx, now)
    catalogue = models_and_versions(ctx, args.versions, now)
    runs = links_and_runs(ctx, data, catalogue, now)
    catalogued = time.monotonic()
    chain = audit_chain(ctx, catalogue, args.audit_events)
    done = time.monotonic()
    out = {
        "versions": args.versions,
        "audit_events": args.audit_events,
        "chain_seq": chain["seq"],
        "evaluation_runs": runs,
        "suite": ctx["suite"].name,
        "reviewer_token": ctx["reviewer_token"],
        "tokens": ctx["tokens"],
        "versions_by_agency": {
            str(a): v for a, v in catalogue["versions_by_agency"].items()
        },
        "models_by_agency": {
            str(a): m for a, m in catalogue["models_by_agency"].items()
        },
        "seconds": {
            "migrate": round(migrated - started, 1),
            "catalogue": round(catalogued - migrated, 1),
            "audit": round(done - catalogued, 1),
        },
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out))
    print(json.dumps(out["seconds"]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
