"""The demo's model bundles and dataset files, made here with nothing downloaded.

Every model is made by the project's own NumPy trainer (``modelgen``) from
the corpus shipped in ``modelgen/corpus``: the two base models, the tiny one
fine-tuned on the citizen requests and the small one quantised to int8
(``modelgen.derive``). Pure: no database, no Django.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

from demo.catalogue import CITIZEN_REQUESTS, CORPUS, HELDOUT_EVERY, REQUESTS

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


def build_bundles(dest_root: Path) -> dict[str, Path]:
    """Train and write every demo bundle under ``dest_root``; name -> directory.

    The two base models come from ``modelgen.lm.demo_models``; the
    requests assistant is the tiny one trained further on the citizen
    requests; Lakeland's is the small one quantised to int8. Deterministic.
    """
    import modelgen
    from modelgen.derive import fine_tune, quantise

    tiny, small = modelgen.demo_models(dest_root, specs=_demo_specs())
    requests = [text for _, text in CITIZEN_REQUESTS]
    return {
        tiny.name: tiny,
        small.name: small,
        "arden-requests-assistant": fine_tune(
            tiny,
            dest_root / "arden-requests-assistant",
            requests,
            seed=7,
            steps=FINE_TUNE_STEPS,
        ),
        "lakeland-small-lm-int8": quantise(
            small, dest_root / "lakeland-small-lm-int8"
        ),
    }


def zip_bundle(bundle_dir: Path, dest: Path) -> Path:
    """Zip a bundle directory with stable member order and timestamps."""
    with zipfile.ZipFile(dest, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(bundle_dir.iterdir()):
            info = zipfile.ZipInfo(path.name, date_time=(2026, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, path.read_bytes())
    return dest


def dataset_records(slug: str) -> list[dict[str, str]]:
    """The rows of a demo dataset's file."""
    if slug == REQUESTS:
        return [{"department": d, "text": t} for d, t in CITIZEN_REQUESTS]
    train, heldout = _corpus_split()
    rows = train if slug == CORPUS else heldout
    return [{"topic": topic, "text": text} for topic, text in rows]
