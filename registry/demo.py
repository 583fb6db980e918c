"""The demo catalogue that ``manage.py load_demo`` (and so ``make run``) shows.

Two agencies and an oversight body, people in every role, three licences,
three dataset versions with full datasheets and four model versions whose
lineage crosses agencies, with one deliberate licence conflict. Every model
is made here, by the engine's own NumPy trainer, from the corpus shipped in
``modelgen/corpus``: nothing is downloaded.

Every write goes through the registry services (``registry.services`` and
``registry.artifacts``), so the audit chain records the demo as it records
any registration. Platform-wide steps (agencies, memberships, licences) are
taken by the ``demo-loader`` platform administrator, which cannot log in;
catalogue steps by each agency's demo maintainer, because the services let
only an agency's own members register its datasets and models.

Idempotent: each object is looked up by its natural key (agency slug,
username, licence expression, dataset or model slug in its agency, version
string) before anything is built, and the models are trained only when a
model version still lacks its artifact, so a second run adds nothing.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model

from registry import services
from registry.models import (
    Agency,
    AIModel,
    Dataset,
    DatasetRole,
    DatasetVersion,
    Derivation,
    Licence,
    Membership,
    ModelVersion,
    PersonalData,
    Role,
    Task,
    Visibility,
)
from registry.services import artifacts
from registry.storage import artifact_tmp_dir, spool

DEMO_LOADER = "demo-loader"
ARDEN = "arden-city"
LAKELAND = "lakeland-region"
OVERSIGHT = "ai-oversight"
JURISDICTION = "GB"

# Every tenth corpus paragraph is held out, the split ``demo_models`` uses for
# its held-out perplexity, so the evaluation dataset is exactly that split.
HELDOUT_EVERY = 10


@dataclass(frozen=True)
class AgencySpec:
    """A demo agency."""

    slug: str
    name: str
    description: str
    contact_name: str
    is_oversight_body: bool = False


@dataclass(frozen=True)
class PersonSpec:
    """A demo person: one membership with one role; the password is unusable."""

    username: str
    agency: str
    role: str
    first_name: str
    last_name: str


@dataclass(frozen=True)
class DatasetSpec:
    """A demo dataset with its one version and datasheet."""

    agency: str
    slug: str
    name: str
    description: str
    licence: str
    filename: str
    datasheet: dict[str, Any]
    personal_data: str = PersonalData.NONE
    legal_basis: str = ""


@dataclass(frozen=True)
class ModelVersionSpec:
    """A demo model family with its one version, lineage and bundle."""

    agency: str
    slug: str
    name: str
    description: str
    intended_use: str
    out_of_scope_uses: str
    bundle: str
    licence: str
    datasets: tuple[tuple[str, str], ...] = ()
    base: str | None = None
    derivation: str = ""
    training_hardware: str = ""
    limitations: str = ""
    risks: str = ""
    ethical_considerations: str = ""
    is_public: bool = False
    card: dict[str, Any] = field(default_factory=dict)


AGENCIES = (
    AgencySpec(
        slug=ARDEN,
        name="Arden City Council",
        description=(
            "A city council that trains small assistants for its contact centre "
            "on its own published service explanations."
        ),
        contact_name="Digital Services Unit",
    ),
    AgencySpec(
        slug=LAKELAND,
        name="Lakeland Regional Authority",
        description=(
            "A regional authority that runs Arden's public model, quantised, on "
            "the small servers of its rural libraries."
        ),
        contact_name="Regional Technology Office",
    ),
    AgencySpec(
        slug=OVERSIGHT,
        name="Office for Public AI Oversight",
        description=(
            "The oversight body that reviews evidence and decides on approvals "
            "for every agency."
        ),
        contact_name="Review Secretariat",
        is_oversight_body=True,
    ),
)

PEOPLE = (
    PersonSpec("arden.maintainer", ARDEN, Role.MAINTAINER, "Aoife", "Byrne"),
    PersonSpec("arden.member", ARDEN, Role.MEMBER, "Tomasz", "Nowak"),
    PersonSpec("lakeland.maintainer", LAKELAND, Role.MAINTAINER, "Priya", "Shah"),
    PersonSpec("lakeland.member", LAKELAND, Role.MEMBER, "Owen", "Hughes"),
    PersonSpec("oversight.reviewer", OVERSIGHT, Role.REVIEWER, "Marta", "Lindqvist"),
    PersonSpec("oversight.admin", OVERSIGHT, Role.ADMIN, "Kwame", "Mensah"),
)

APACHE = "Apache-2.0"
CC_BY = "CC-BY-4.0"
CC_BY_NC = "CC-BY-NC-4.0"
LICENCES = (APACHE, CC_BY, CC_BY_NC)

CORPUS = "public-services-corpus"
HELDOUT = "public-services-heldout"
REQUESTS = "citizen-requests"

DATASETS = (
    DatasetSpec(
        agency=ARDEN,
        slug=CORPUS,
        name="Public-services explanations",
        description="Plain-language explanations of council services, by topic.",
        licence=CC_BY,
        filename="public-services-corpus.jsonl",
        datasheet={
            "motivation": (
                "Give the city's assistants the plain language its service pages "
                "use, so that drafted answers sound like the council and stay "
                "within what it publishes."
            ),
            "composition": (
                "One JSON object per paragraph: the topic (benefits, council tax, "
                "housing, libraries, parking and transport, planning permits, "
                "roads and streets, waste) and the paragraph's text. Nine "
                "paragraphs in ten of the Civitas sample corpus; the tenth is "
                "the held-out set."
            ),
            "collection_process": (
                "Written by service staff as public web guidance and released "
                "with the Civitas sample corpus (CC0); compiled here by topic."
            ),
            "preprocessing": "Whitespace collapsed; paragraphs split on blank lines.",
            "intended_uses": "Training small language models for public services.",
            "distribution": "Inside Civitas only; the source texts are public.",
            "maintenance": "Rebuilt as the service pages change, as a new version.",
        },
    ),
    DatasetSpec(
        agency=ARDEN,
        slug=HELDOUT,
        name="Public-services held-out texts",
        description="The evaluation split of the public-services explanations.",
        licence=CC_BY,
        filename="public-services-heldout.jsonl",
        datasheet={
            "motivation": (
                "Measure how well a model predicts service text it never saw "
                "(held-out perplexity) before it is offered to the contact centre."
            ),
            "composition": (
                "Every tenth paragraph of the Civitas sample corpus, one JSON "
                "object per paragraph with its topic; never used for training."
            ),
            "collection_process": (
                "Split deterministically from the same source as the training "
                "corpus (paragraph index modulo ten equal to zero)."
            ),
            "preprocessing": "As the training corpus.",
            "intended_uses": "Evaluation only; never training or fine-tuning.",
            "distribution": "Inside Civitas only.",
            "maintenance": "Versioned together with the training corpus.",
        },
    ),
    DatasetSpec(
        agency=ARDEN,
        slug=REQUESTS,
        name="Citizen requests (pseudonymised)",
        description="Requests residents sent to the contact centre, by department.",
        licence=CC_BY_NC,
        filename="citizen-requests.jsonl",
        personal_data=PersonalData.PSEUDONYMISED,
        legal_basis=(
            "GDPR Art. 6(1)(e): processing necessary for a task carried out in "
            "the public interest (handling residents' requests); names, "
            "addresses and reference numbers replaced by pseudonyms before "
            "export, key held by the contact centre."
        ),
        datasheet={
            "motivation": (
                "Teach an assistant how residents actually phrase requests, so "
                "it can draft a first reply and suggest the right department."
            ),
            "composition": (
                "Short requests with the department that handled them (benefits, "
                "housing, tax, transport). Every person is a pseudonym such as "
                "resident-0412; no free-text identifiers remain."
            ),
            "collection_process": (
                "Exported from the contact-centre case system for one quarter; "
                "pseudonymised by the data protection team before export."
            ),
            "preprocessing": (
                "Names, addresses, phone numbers and case references replaced by "
                "pseudonyms; requests under five words dropped."
            ),
            "intended_uses": (
                "Non-commercial research and fine-tuning of the council's own "
                "assistants; not for resale or commercial services."
            ),
            "distribution": "Under CC BY-NC 4.0 to other public bodies on request.",
            "maintenance": "Re-exported yearly; the pseudonym key is rotated.",
        },
    ),
)

# Requests as residents write them; people appear only as pseudonyms.
CITIZEN_REQUESTS = (
    (
        "benefits",
        "resident-0412 asks how to apply for help with rent after losing work",
    ),
    ("benefits", "can i get council tax support if i only work two days a week"),
    ("benefits", "resident-1187 wants to know when the hardship payment will arrive"),
    ("benefits", "How do I report a change in my income for housing benefit?"),
    ("benefits", "my carers allowance stopped and nobody told me why"),
    ("benefits", "Is there a grant for school uniforms for low-income families?"),
    ("benefits", "resident-0093 needs a form for free school meals in paper"),
    ("benefits", "who do i talk to about a crisis payment for food this week"),
    ("housing", "resident-0761 reports damp and mould in the back bedroom again"),
    ("housing", "How long is the waiting list for a two-bedroom council flat?"),
    ("housing", "the boiler in our block has not worked since friday"),
    ("housing", "resident-2204 has been given notice by a private landlord"),
    ("housing", "Can I swap my council home with a tenant in another town?"),
    ("housing", "I need to add my partner to the tenancy, what do I send?"),
    ("housing", "water coming through the ceiling from the flat above, urgent"),
    ("housing", "resident-0518 asks whether the house share next door is licensed"),
    ("tax", "why did my council tax go up this year"),
    ("tax", "resident-1450 moved out in March and wants a council tax refund"),
    ("tax", "Can I pay council tax in twelve instalments instead of ten?"),
    ("tax", "I live alone now, how do I get the single person discount?"),
    ("tax", "received a reminder but I set up a direct debit last month"),
    ("tax", "resident-0334 asks which band their new flat is in"),
    ("tax", "Is there a council tax discount for a student household?"),
    ("tax", "the bill has the wrong name on it, resident-0876 is the owner now"),
    ("transport", "How do I renew my residents parking permit online?"),
    ("transport", "resident-0629 got a parking fine while loading outside home"),
    ("transport", "the bus stop on mill lane has no timetable any more"),
    ("transport", "Can my mother get a free bus pass at sixty-six?"),
    ("transport", "pothole on the high street damaged my tyre, who pays"),
    ("transport", "resident-1902 wants a dropped kerb for a wheelchair ramp"),
    ("transport", "When will the street lights on station road be fixed?"),
    ("transport", "how do I appeal a bus lane penalty charge"),
)

CARD = {
    "training_jurisdiction": JURISDICTION,
    "hosting_jurisdiction": JURISDICTION,
    "limitations": (
        "A very small model trained in seconds: it imitates the style of service "
        "guidance but does not know current rules, fees or dates."
    ),
    "risks": (
        "May state wrong facts fluently. Every drafted answer must be checked by "
        "a member of staff before it reaches a resident."
    ),
    "ethical_considerations": (
        "Trained only on public guidance written by the council; no personal "
        "data in the training set."
    ),
}

TINY_BASE = f"{ARDEN}/arden-tiny-lm"
SMALL_BASE = f"{ARDEN}/arden-small-lm"

MODEL_VERSIONS = (
    ModelVersionSpec(
        agency=ARDEN,
        slug="arden-tiny-lm",
        name="Arden Tiny LM",
        description="A tiny Llama-style language model of the council's guidance.",
        intended_use="Drafting replies to residents, always reviewed by staff.",
        out_of_scope_uses="Decisions about a person; legal or medical advice.",
        bundle="civitas-llama-tiny",
        licence=APACHE,
        datasets=((CORPUS, DatasetRole.TRAINING), (HELDOUT, DatasetRole.EVALUATION)),
        training_hardware="2 CPU cores, NumPy (civitas-modelgen)",
        card=CARD,
    ),
    ModelVersionSpec(
        agency=ARDEN,
        slug="arden-small-lm",
        name="Arden Small LM",
        description="A wider, deeper sibling of the tiny model, offered to others.",
        intended_use="Drafting replies to residents, always reviewed by staff.",
        out_of_scope_uses="Decisions about a person; legal or medical advice.",
        bundle="civitas-llama-small",
        licence=APACHE,
        datasets=((CORPUS, DatasetRole.TRAINING), (HELDOUT, DatasetRole.EVALUATION)),
        training_hardware="2 CPU cores, NumPy (civitas-modelgen)",
        is_public=True,
        card=CARD,
    ),
    ModelVersionSpec(
        agency=ARDEN,
        slug="arden-requests-assistant",
        name="Arden Requests Assistant",
        description="The tiny model fine-tuned on residents' own requests.",
        intended_use="Suggesting a first reply and a department for a request.",
        out_of_scope_uses="Answering residents without a member of staff.",
        bundle="arden-requests-assistant",
        licence=APACHE,
        datasets=(
            (REQUESTS, DatasetRole.FINE_TUNING),
            (HELDOUT, DatasetRole.EVALUATION),
        ),
        base=TINY_BASE,
        derivation=Derivation.FINE_TUNED,
        training_hardware="2 CPU cores, NumPy (civitas-modelgen)",
        card={
            **CARD,
            "ethical_considerations": (
                "Fine-tuned on pseudonymised requests under CC BY-NC 4.0 while "
                "the model is licensed Apache-2.0: the licence conflict is shown "
                "in its lineage and must be resolved before any approval."
            ),
        },
    ),
    ModelVersionSpec(
        agency=LAKELAND,
        slug="lakeland-small-lm-int8",
        name="Lakeland Small LM (int8)",
        description="Arden's public small model, dynamically quantised to int8.",
        intended_use="Drafting library and transport answers on small servers.",
        out_of_scope_uses="Decisions about a person; legal or medical advice.",
        bundle="lakeland-small-lm-int8",
        licence=APACHE,
        base=SMALL_BASE,
        derivation=Derivation.QUANTISED,
        training_hardware="none: post-training dynamic quantisation (ONNX Runtime)",
        card={
            **CARD,
            "limitations": (
                "As the Arden Small LM, with int8 weights: a quarter of the size, "
                "slightly different outputs."
            ),
        },
    ),
)


# --- bundles (pure: the engine's trainer and ONNX Runtime, no Django) --------

# Small enough to train both base models in about ten seconds on two cores.
FINE_TUNE_STEPS = 80


def _demo_specs():
    """The two base models' shapes and budgets (``engine`` DemoSpec)."""
    from modelgen.train import DemoSpec

    return (
        DemoSpec(
            "civitas-llama-tiny", 64, 2, 4, 2, 172, steps=200, lr=3e-3, seq_len=64
        ),
        DemoSpec(
            "civitas-llama-small", 96, 3, 4, 2, 256, steps=120, lr=2e-3, seq_len=64
        ),
    )


def _corpus_split() -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """The (topic, text) paragraphs for training and for evaluation."""
    from modelgen.train import corpus_documents

    docs = corpus_documents()
    train = [d for i, d in enumerate(docs) if i % HELDOUT_EVERY]
    heldout = [d for i, d in enumerate(docs) if not i % HELDOUT_EVERY]
    return train, heldout


def _fine_tune(base_dir: Path, dest_dir: Path, texts: list[str], *, seed: int) -> Path:
    """Train every weight of a base bundle further on ``texts``; write a new bundle."""
    import onnx
    from onnx import numpy_helper
    from tokenizers import Tokenizer

    from modelgen.lm import LMConfig, weight_shapes
    from modelgen.train import perplexity, train_lm, write_lm_bundle

    config = json.loads((base_dir / "config.json").read_text(encoding="utf-8"))
    cfg = LMConfig.from_hf_config(config)
    names = set(weight_shapes(cfg))
    graph = onnx.load(str(base_dir / "model.onnx")).graph
    # The builder names each initializer after its weight, so the trained
    # weights come back out of the graph unchanged.
    weights = {
        t.name: numpy_helper.to_array(t) for t in graph.initializer if t.name in names
    }
    tokenizer = Tokenizer.from_file(str(base_dir / "tokenizer.json"))
    ids = [tokenizer.encode(text).ids for text in texts]
    losses: list[float] = []
    started = time.perf_counter()
    tuned = train_lm(
        cfg,
        ids,
        steps=FINE_TUNE_STEPS,
        lr=1e-3,
        seed=seed,
        seq_len=32,
        weights=weights,
        history=losses,
    )
    record = {
        "trained_parameters": "all",
        "base": base_dir.name,
        "steps": FINE_TUNE_STEPS,
        "seed": seed,
        "seconds": round(time.perf_counter() - started, 2),
        "loss_first": losses[0],
        "loss_last_10_mean": sum(losses[-10:]) / len(losses[-10:]),
        "perplexity_on_requests_before": perplexity(cfg, weights, ids, seq_len=32),
        "perplexity_on_requests_after": perplexity(cfg, tuned, ids, seq_len=32),
    }
    return write_lm_bundle(
        dest_dir, cfg, tuned, tokenizer, extra_files={"civitas_training.json": record}
    )


def _quantise(base_dir: Path, dest_dir: Path) -> Path:
    """Dynamic int8 quantisation of a bundle's graph; the other files are copied."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    dest_dir.mkdir(parents=True)
    for path in base_dir.iterdir():
        if path.name != "model.onnx":
            shutil.copy2(path, dest_dir / path.name)
    # ONNX Runtime logs a pre-processing hint on the root logger for every
    # call; it is advice for large vision models and would only alarm here.
    logging.disable(logging.WARNING)
    try:
        quantize_dynamic(
            base_dir / "model.onnx",
            dest_dir / "model.onnx",
            weight_type=QuantType.QInt8,
        )
    finally:
        logging.disable(logging.NOTSET)
    return dest_dir


def build_bundles(dest_root: Path) -> dict[str, Path]:
    """Train and write every demo bundle under ``dest_root``; name -> directory.

    The two base models come from ``modelgen.lm.demo_models``; the
    requests assistant is the tiny one trained further on the citizen
    requests; Lakeland's is the small one quantised to int8. Deterministic.
    """
    import modelgen

    tiny, small = modelgen.demo_models(dest_root, specs=_demo_specs())
    requests = [text for _, text in CITIZEN_REQUESTS]
    return {
        tiny.name: tiny,
        small.name: small,
        "arden-requests-assistant": _fine_tune(
            tiny, dest_root / "arden-requests-assistant", requests, seed=7
        ),
        "lakeland-small-lm-int8": _quantise(
            small, dest_root / "lakeland-small-lm-int8"
        ),
    }


def _zip_bundle(bundle_dir: Path, dest: Path) -> Path:
    """Zip a bundle directory with stable member order and timestamps."""
    with zipfile.ZipFile(dest, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(bundle_dir.iterdir()):
            info = zipfile.ZipInfo(path.name, date_time=(2026, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, path.read_bytes())
    return dest


def _dataset_records(slug: str) -> list[dict[str, str]]:
    """The rows of a demo dataset's file."""
    if slug == REQUESTS:
        return [{"department": d, "text": t} for d, t in CITIZEN_REQUESTS]
    train, heldout = _corpus_split()
    rows = train if slug == CORPUS else heldout
    return [{"topic": topic, "text": text} for topic, text in rows]


# --- the catalogue (through the services) ------------------------------------


@dataclass
class LoadReport:
    """What one run created, for the command to print."""

    created: list[str] = field(default_factory=list)
    trained_seconds: float | None = None

    def add(self, what: str) -> None:
        """Note one created object."""
        self.created.append(what)


def _upload(path: Path, *, name: str):
    """A spooled upload of a local file, hashed on the way, as the API makes one."""
    with open(path, "rb") as source:
        return spool(source, name=name, max_bytes=settings.CIVITAS_UPLOAD_MAX_BYTES)


def _loader():
    """The platform administrator that takes the demo's platform-wide steps.

    Its password is unusable: it exists to be named in the audit chain.
    """
    users = get_user_model().objects
    loader = users.filter(username=DEMO_LOADER).first()
    if loader is None:
        loader = users.create_user(
            username=DEMO_LOADER,
            email="demo-loader@civitas.invalid",
            password=None,
            first_name="Demo catalogue loader",
            is_superuser=True,
        )
    return loader


def _agencies(loader, report: LoadReport) -> dict[str, Agency]:
    existing = {
        a.slug: a for a in Agency.objects.filter(slug__in=[s.slug for s in AGENCIES])
    }
    for spec in AGENCIES:
        if spec.slug not in existing:
            existing[spec.slug] = services.agency_create(
                actor=loader,
                name=spec.name,
                slug=spec.slug,
                jurisdiction=JURISDICTION,
                contact_name=spec.contact_name,
                contact_email=f"contact@{spec.slug}.invalid",
                description=spec.description,
                is_oversight_body=spec.is_oversight_body,
            )
            report.add(f"agency {spec.slug}")
    return existing


def _people(loader, agencies: dict[str, Agency], report: LoadReport) -> dict[str, Any]:
    users = get_user_model().objects
    found = {
        u.username: u for u in users.filter(username__in=[p.username for p in PEOPLE])
    }
    members = set(
        Membership.objects.filter(user__in=found.values()).values_list(
            "user__username", flat=True
        )
    )
    for spec in PEOPLE:
        user = found.get(spec.username)
        if user is None:
            # Staff, so that an operator who sets a password can try the admin
            # as this person; unusable until then.
            user = users.create_user(
                username=spec.username,
                email=f"{spec.username}@{spec.agency}.invalid",
                password=None,
                first_name=spec.first_name,
                last_name=spec.last_name,
                is_staff=True,
            )
            found[spec.username] = user
            report.add(f"user {spec.username}")
        if spec.username not in members:
            services.membership_add(
                actor=loader, agency=agencies[spec.agency], user=user, role=spec.role
            )
            report.add(f"membership {spec.username} ({spec.role})")
    return found


def _licences(loader, report: LoadReport) -> dict[str, Licence]:
    found = {}
    for expression in LICENCES:
        licence, created = services.licence_register(
            actor=loader, expression=expression
        )
        found[expression] = licence
        if created:
            report.add(f"licence {licence.expression}")
    return found


def _maintainer(people: dict[str, Any], agency: str):
    """The agency's demo maintainer, who registers its catalogue."""
    spec = next(p for p in PEOPLE if p.agency == agency and p.role == Role.MAINTAINER)
    return people[spec.username]


def _datasets(
    people, licences, report: LoadReport, workdir: Path
) -> dict[str, DatasetVersion]:
    found = {}
    for spec in DATASETS:
        actor = _maintainer(people, spec.agency)
        dataset = Dataset.objects.filter(
            agency__slug=spec.agency, slug=spec.slug
        ).first()
        if dataset is None:
            dataset = services.dataset_create(
                actor=actor,
                name=spec.name,
                slug=spec.slug,
                description=spec.description,
            )
            report.add(f"dataset {dataset}")
        version = DatasetVersion.objects.filter(
            dataset=dataset, version="1.0.0"
        ).first()
        records = None
        if version is None:
            records = _dataset_records(spec.slug)
            version = services.dataset_version_create(
                actor=actor,
                dataset=dataset,
                version="1.0.0",
                licence=licences[spec.licence],
                record_count=len(records),
                origin_jurisdiction=JURISDICTION,
                languages=["en"],
                personal_data=spec.personal_data,
                legal_basis=spec.legal_basis,
                **spec.datasheet,
            )
            report.add(f"dataset version {version}")
        if not version.storage_key:
            records = records or _dataset_records(spec.slug)
            path = workdir / spec.filename
            path.write_text(
                "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records),
                encoding="utf-8",
            )
            upload = _upload(path, name=spec.filename)
            try:
                version = artifacts.dataset_version_file_upload(
                    actor=actor, dataset_version=version, upload=upload
                )
            finally:
                upload.close()
            report.add(f"file of {version}")
        found[spec.slug] = version
    return found


def _models(people, report: LoadReport) -> dict[str, AIModel]:
    found = {}
    for spec in MODEL_VERSIONS:
        actor = _maintainer(people, spec.agency)
        model = AIModel.objects.filter(agency__slug=spec.agency, slug=spec.slug).first()
        if model is None:
            model = services.model_create(
                actor=actor,
                name=spec.name,
                slug=spec.slug,
                task=Task.TEXT_GENERATION,
                domain="Public services",
                description=spec.description,
                intended_use=spec.intended_use,
                out_of_scope_uses=spec.out_of_scope_uses,
            )
            report.add(f"model {model}")
        if spec.is_public and model.visibility != Visibility.PUBLIC:
            services.model_publish(
                actor=_loader(),
                model=model,
                reason="demo catalogue: a public base for the other agency",
            )
            report.add(f"publication of {model}")
        found[f"{spec.agency}/{spec.slug}"] = model
    return found


def _model_versions(
    people,
    licences,
    datasets,
    models,
    report: LoadReport,
    *,
    bundles: Callable[[], dict[str, Path]],
    workdir: Path,
) -> dict[str, ModelVersion]:
    """Register each model version and upload its bundle, in lineage order."""
    found: dict[str, ModelVersion] = {}
    for spec in MODEL_VERSIONS:
        key = f"{spec.agency}/{spec.slug}"
        actor = _maintainer(people, spec.agency)
        model = models[key]
        version = ModelVersion.objects.filter(model=model, version="1.0.0").first()
        if version is None:
            version = services.model_version_create(
                actor=actor,
                model=model,
                version="1.0.0",
                licence=licences[spec.licence],
                base_version=found[spec.base] if spec.base else None,
                derivation=spec.derivation,
                datasets=[(datasets[slug], role) for slug, role in spec.datasets],
                training_run=(
                    f"civitas-modelgen:{spec.bundle}" if spec.datasets else ""
                ),
                training_hardware=spec.training_hardware,
                **spec.card,
            )
            report.add(f"model version {version}")
        if not version.is_released:
            bundle_dir = bundles()[spec.bundle]
            archive = _zip_bundle(bundle_dir, workdir / f"{spec.bundle}.zip")
            upload = _upload(archive, name=archive.name)
            try:
                version = artifacts.model_version_artifact_upload(
                    actor=actor, version=version, upload=upload
                )
            finally:
                upload.close()
            report.add(f"bundle of {version}")
        found[key] = version
    return found


def load_catalogue() -> LoadReport:
    """Create whatever part of the demo catalogue is missing; return what was made.

    Models are trained (about ten seconds on two cores) only when a model
    version still lacks its artifact, and at most once per run. Raises the
    services' errors if the database holds conflicting objects under the
    demo's natural keys.
    """
    report = LoadReport()
    # Beside the artifact store, so that storing an upload is a rename.
    workdir = Path(tempfile.mkdtemp(prefix="demo-", dir=artifact_tmp_dir()))
    built: dict[str, Path] = {}

    def bundles() -> dict[str, Path]:
        if not built:
            started = time.perf_counter()
            built.update(build_bundles(workdir / "bundles"))
            report.trained_seconds = time.perf_counter() - started
        return built

    try:
        loader = _loader()
        agencies = _agencies(loader, report)
        people = _people(loader, agencies, report)
        licences = _licences(loader, report)
        datasets = _datasets(people, licences, report, workdir)
        models = _models(people, report)
        _model_versions(
            people, licences, datasets, models, report, bundles=bundles, workdir=workdir
        )
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return report
