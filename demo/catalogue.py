"""The demo catalogue as data: who and what ``manage.py load_demo`` registers.

Two agencies and an oversight body, people in every role, three licences,
three dataset versions with full datasheets and four model versions whose
lineage crosses agencies, with one deliberate licence conflict. The models
are built by ``demo.bundles`` and registered by ``demo.loader``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from registry.models import DatasetRole, Derivation, PersonalData, Role

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
    """A demo person: one membership with one role; no password until invited."""

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


@dataclass(frozen=True)
class UseCaseSpec:
    """A demo use case, assessed, submitted and approved, so the register has entries.

    ``model`` is ``agency/slug`` of a demo model version; ``answers`` the
    impact questionnaire's (``aia@1``); the agency's member writes and
    assesses it, its maintainer submits it, the oversight reviewer approves.
    """

    agency: str
    model: str
    title: str
    purpose: str
    public_service: str
    affected_people: str
    decision_informed: str
    human_oversight: str
    answers: dict[str, Any]
    rationale: str


_LOW_RISK_ANSWERS = {
    "prohibited_practices": ["none"],
    "areas": ["general_information"],
    "decision_role": "no_decision",
    "affected_people": "staff_only",
    "scale": "under_1k",
    "impact_on_rights": "none",
    "reversibility": "easily",
    "personal_data_in_use": "none",
    "data_representativeness": "assessed",
    "public_interaction": "no",
    "human_oversight": "every_output",
    "explainability": "yes",
    "contestability": "not_needed",
    "fallback": "yes",
}

USE_CASES = (
    UseCaseSpec(
        agency=ARDEN,
        model=SMALL_BASE,
        title="Drafting replies to residents' letters",
        purpose=(
            "Draft a first reply to residents' written questions about council "
            "services, in the council's plain language; a contact-centre officer "
            "checks, edits and sends every reply."
        ),
        public_service="Contact centre, Arden City Council",
        affected_people="Residents who write to the council",
        decision_informed="None: officers write and sign every reply.",
        human_oversight=(
            "A contact-centre officer reads and edits every draft before it is "
            "sent; drafts are never sent automatically."
        ),
        answers={**_LOW_RISK_ANSWERS, "public_interaction": "yes_disclosed"},
        rationale=(
            "The use drafts text that staff always check; the model card and "
            "its training data are public; the oversight described is adequate."
        ),
    ),
    UseCaseSpec(
        agency=LAKELAND,
        model=f"{LAKELAND}/lakeland-small-lm-int8",
        title="Library and bus answers for library staff",
        purpose=(
            "Suggest answers to visitors' questions about library services and "
            "rural bus times to library staff, on the libraries' small servers."
        ),
        public_service="Rural libraries, Lakeland Regional Authority",
        affected_people="Library staff; visitors indirectly",
        decision_informed="None: staff answer visitors themselves.",
        human_oversight="Library staff read every suggestion before answering.",
        answers=_LOW_RISK_ANSWERS,
        rationale=(
            "A quantised copy of an approved public model, used only as a "
            "suggestion to staff; low risk and adequately overseen."
        ),
    ),
)
