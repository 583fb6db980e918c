"""The engine on Optimum exports of the SLM families, against PyTorch's values.

The fixtures under ``tests/fixtures/families/<family>/`` were exported by
``tests/fixtures/families/export.py`` (torch, transformers, optimum-onnx);
this test needs none of those: it loads each export with ``load_model``, runs
the registration self-test, and checks the engine's per-token
log-likelihoods (``loglikelihood_rolling``: first token conditioned on BOS,
else EOS) to 1e-4 and its greedy continuations (through the KV cache) token
for token against ``reference.json``. The family list is fixed here, so a
missing or incomplete fixture directory fails instead of being skipped.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from engine import bundle, evaluate
from engine.runtime import load_model
from engine.session import RuntimeSettings

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "families"
FAMILIES = (
    "phi3",
    "gemma",
    "gemma2",
    "granite",
    "qwen2",
    "llama",
    "mistral",
    "gpt2",
    "olmo",
    "stablelm",
)
TOLERANCE = 1e-4
REQUIRED_FILES = (
    "model.onnx",
    "config.json",
    "generation_config.json",
    "tokenizer.json",
    "reference.json",
)
MAX_FIXTURE_BYTES = 2 * 1024**2
# Families whose real tokenizer.json adds BOS in its post-processor (as the
# fixtures' do): token id of that BOS.
TOKENIZER_BOS = {"llama": 1, "mistral": 1, "gemma": 2, "gemma2": 2}


@pytest.fixture(scope="module", params=FAMILIES)
def family(request):
    """``(name, directory, reference, model)`` of one family's export."""
    name = request.param
    root = FIXTURES / name
    missing = [f for f in REQUIRED_FILES if not (root / f).is_file()]
    assert not missing, (
        f"fixture {root} lacks {missing}; regenerate it with "
        "`.venv-export/bin/python tests/fixtures/families/export.py "
        f"{name}`"
    )
    reference = json.loads((root / "reference.json").read_text(encoding="utf-8"))
    facts = bundle.inspect_bundle(root)
    # One thread: the fixtures are tiny, and results must not depend on how
    # many cores the test machine has.
    model = load_model(root, settings=RuntimeSettings(intra_op_threads=1), facts=facts)
    return name, root, reference, model, facts


def test_fixture_is_an_optimum_export_under_the_size_limit(family):
    name, root, reference, _model, facts = family
    assert reference["family"] == name
    assert facts.kind == "causal_lm_kv"
    assert facts.layout == "optimum"
    assert facts.num_layers == 2
    size = sum(p.stat().st_size for p in root.iterdir() if p.is_file())
    assert size < MAX_FIXTURE_BYTES


def test_selftest_passes(family):
    _name, _root, _reference, model, _facts = family
    figures = model.selftest()
    assert figures["passed"] is True
    assert figures["kv_max_abs_diff"] is not None


def test_bos_and_tokenisation_match_the_reference(family):
    _name, _root, reference, model, _facts = family
    assert model.bos_token_id == reference["conditioning_token_id"]
    for record in reference["texts"]:
        assert model.encode(record["text"]) == record["token_ids"]


def test_rolling_loglikelihoods_match_torch(family):
    _name, _root, reference, model, _facts = family
    for record in reference["texts"]:
        got = np.asarray(model.loglikelihood_rolling(record["token_ids"]))
        want = np.asarray(record["logprobs"])
        assert got.shape == want.shape
        np.testing.assert_allclose(got, want, rtol=0, atol=TOLERANCE)


def test_batched_loglikelihood_matches_torch(family):
    """All texts in one right-padded batch, empty context (conditions on BOS)."""
    _name, _root, reference, model, _facts = family
    records = reference["texts"]
    scored = model.loglikelihood(
        [([], r["token_ids"]) for r in records], batch_size=len(records)
    )
    for record, (total, _greedy, per_token) in zip(records, scored, strict=True):
        np.testing.assert_allclose(
            per_token, record["logprobs"], rtol=0, atol=TOLERANCE
        )
        assert total == pytest.approx(record["sum_logprob"], abs=TOLERANCE * 10)


def test_greedy_generation_matches_torch(family):
    _name, _root, reference, model, _facts = family
    steps = reference["greedy_new_tokens"]
    for record in reference["texts"]:
        cached = model.generate(record["token_ids"], max_new_tokens=steps, stop_ids=())
        assert cached == record["greedy_tokens"]
        full = model.generate(
            record["token_ids"], max_new_tokens=steps, stop_ids=(), use_cache=False
        )
        assert full == record["greedy_tokens"]


def test_contexts_are_encoded_as_the_tokenizer_says(family):
    """A BOS-adding tokenizer gives contexts BOS, as lm-evaluation-harness does.

    The first text is split after its fourth word into a context and a
    continuation. With the tokenizer's BOS in front of the context, the
    continuation's log-likelihood is PyTorch's, whose reference conditions
    every text on BOS. Perplexity never scores the BOS itself.
    """
    name, _root, reference, model, _facts = family
    record = reference["texts"][0]
    words = record["text"].split(" ")
    context, choice = " ".join(words[:4]), " ".join(words[4:])
    prefix = [TOKENIZER_BOS[name]] if name in TOKENIZER_BOS else []
    result = evaluate.run_task(
        model,
        "multiple_choice",
        [{"context": context, "choices": [choice, "no"], "answer": 0}],
    )
    if prefix:
        start = len(record["token_ids"]) - result.items[0]["continuation_tokens"][0]
        want = sum(record["logprobs"][start:])
        assert result.items[0]["lls"][0] == pytest.approx(want, abs=TOLERANCE * 10)
    ctx, cont = evaluate.encode_pair(model, context, " " + choice)
    assert ctx[: len(prefix)] == prefix
    assert ctx[len(prefix) :] + cont == record["token_ids"]
    scored = evaluate.run_task(model, "perplexity", [{"text": record["text"]}])
    assert scored.items[0]["tokens"] == len(record["token_ids"])
    assert scored.items[0]["sum_ll"] == pytest.approx(
        record["sum_logprob"], abs=TOLERANCE * 10
    )
    assert model.special_prefix == prefix


def test_every_family_directory_is_tested():
    """A fixture exported but not listed here would silently go untested."""
    on_disk = {p.name for p in FIXTURES.iterdir() if (p / "reference.json").exists()}
    assert on_disk == set(FAMILIES)


def test_fixtures_stay_small_in_total():
    total = sum(p.stat().st_size for p in FIXTURES.rglob("*") if p.is_file())
    assert total < 20 * 1024**2
