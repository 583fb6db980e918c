"""The IOBinding decode loop (``engine.decode``) against the ``session.run`` loop.

``greedy_reference`` is ``CausalLM.generate``'s cached loop as it was before
``engine.decode``: every step through ``InferenceSession.run`` with NumPy
inputs, the presents fed back as the next past. The new loop must give the
same tokens and last-step logits within 1e-5, on the ten family fixtures
(Optimum, ``Concat``-grown cache), their fused ``optimised`` graphs and
modelgen's genai graphs (``GroupQueryAttention``: one in-place cache buffer
per tensor), fp32 and int4 (``MatMulNBits``), Optimum 1.x merged graphs
(``If``), for stop ids, a budget up to the context length, an empty prompt
and a truncated prompt. Real ONNX Runtime; run without Django:
``pytest tests/engine/test_decode.py -p no:django``.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from onnx import helper

import modelgen
from engine.bundle import gqa_cache_tensors, inspect_bundle
from engine.decode import greedy, greedy_reference
from engine.optimise import optimise_bundle
from engine.quantise import Derivation, quantise_graph
from engine.runtime import load_model
from engine.session import RuntimeSettings
from tests.engine.test_families import FAMILIES, FIXTURES

FUSED_FAMILIES = ("llama", "mistral", "qwen2")
SETTINGS = RuntimeSettings(intra_op_threads=1)
LOGIT_TOLERANCE = 1e-5


def assert_same(lm, prompt: list[int], budget: int, stops=frozenset()) -> list[int]:
    expected, expected_logits = greedy_reference(lm, prompt, budget, stops)
    tokens, logits = greedy(lm, prompt, budget, stops, shared=lm.shares_cache_buffers)
    assert tokens == expected
    np.testing.assert_allclose(logits, expected_logits, rtol=0, atol=LOGIT_TOLERANCE)
    return tokens


def prompt_of(lm, length: int, seed: int = 0) -> list[int]:
    rng = np.random.default_rng(seed)
    return [int(t) for t in rng.integers(3, min(lm.vocab_size, 300), length)]


@pytest.fixture(scope="module")
def fused(tmp_path_factory) -> dict[str, Path]:
    """The ``optimised`` graph of each fusable family fixture."""
    roots = {}
    for family in FUSED_FAMILIES:
        dest = tmp_path_factory.mktemp(f"fused-{family}") / "bundle"
        report = optimise_bundle(FIXTURES / family, dest)
        assert report["status"] == "fused", report
        roots[family] = dest
    return roots


def int4_of(root: Path, dest: Path) -> Path:
    shutil.copytree(root, dest, ignore=shutil.ignore_patterns("model.onnx*"))
    quantise_graph(
        root / "model.onnx", dest / "model.onnx", Derivation("int4"), feeds=None
    )
    return dest


@pytest.fixture(scope="module")
def modelgen_bundles(tmp_path_factory) -> dict[str, Path]:
    """modelgen's genai (GroupQueryAttention fp32 and int4) and merged layouts."""
    texts = [t for _, t in modelgen.corpus_documents()]
    tokenizer = modelgen.train_tokenizer(texts, 300)
    cfg = modelgen.LMConfig(
        vocab_size=320,
        hidden_size=64,
        num_layers=2,
        num_heads=4,
        num_kv_heads=2,
        intermediate_size=96,
        max_position_embeddings=40,
    )
    weights = modelgen.init_weights(cfg, 21)
    root = tmp_path_factory.mktemp("decode")
    return {
        layout: modelgen.write_lm_bundle(
            root / layout, cfg, weights, tokenizer, layout=layout, external_data=True
        )
        for layout in ("genai_gqa", "genai_int4", "merged", "genai")
    }


@pytest.mark.parametrize("family", FAMILIES)
def test_unfused_families_decode_alike(family):
    lm = load_model(FIXTURES / family, settings=SETTINGS)
    assert lm.shares_cache_buffers is False  # Concat-grown cache
    tokens = assert_same(lm, prompt_of(lm, 9), 20)
    assert len(tokens) == 20
    assert lm.generate(prompt_of(lm, 9), max_new_tokens=20, stop_ids=()) == tokens


@pytest.mark.parametrize("family", FUSED_FAMILIES)
def test_fused_families_share_one_cache_buffer_and_decode_alike(family, fused):
    lm = load_model(fused[family], settings=SETTINGS)
    assert lm.shares_cache_buffers is True
    quads = {tuple(q) for q in inspect_bundle(fused[family]).gqa_cache}
    names = zip(lm.past_names, lm.present_names, strict=True)
    assert quads == {(*past, *present) for past, present in names}
    unfused = load_model(FIXTURES / family, settings=SETTINGS)
    tokens = assert_same(lm, prompt_of(lm, 11), 30)
    assert tokens == unfused.generate(prompt_of(lm, 11), max_new_tokens=30, stop_ids=())
    assert lm.selftest()["passed"]


def test_int4_graphs_decode_alike(fused, tmp_path):
    for name, root in (("fused", fused["llama"]), ("unfused", FIXTURES / "llama")):
        lm = load_model(int4_of(root, tmp_path / name), settings=SETTINGS)
        assert lm.shares_cache_buffers is (name == "fused")
        assert len(assert_same(lm, prompt_of(lm, 7, 3), 24)) == 24
        assert lm.selftest()["passed"]


@pytest.mark.parametrize(
    "layout, shared",
    [("genai_gqa", True), ("genai_int4", True), ("merged", False), ("genai", False)],
)
def test_modelgen_layouts_decode_alike(modelgen_bundles, layout, shared):
    lm = load_model(modelgen_bundles[layout], settings=SETTINGS)
    assert lm.shares_cache_buffers is shared
    assert len(assert_same(lm, prompt_of(lm, 6, 4), 16)) == 16
    assert lm.selftest()["passed"]


@pytest.mark.parametrize("source", ["fused", "unfused"])
def test_stop_ids_budget_at_the_context_length_empty_and_truncated_prompts(
    source, fused
):
    lm = load_model(
        fused["mistral"] if source == "fused" else FIXTURES / "mistral",
        settings=SETTINGS,
    )
    prompt = prompt_of(lm, 8, 5)
    free = assert_same(lm, prompt, 12)
    # A stop id ends generation before it, whichever step it comes at.
    stop = free[4]
    first = free.index(stop)
    assert assert_same(lm, prompt, 12, {stop, 10**6}) == free[:first]
    assert lm.generate(prompt, max_new_tokens=12, stop_ids=[stop]) == free[:first]
    # The budget reaches the context length: the buffer holds every position.
    length = lm.context_length
    near_end = prompt_of(lm, length - 9, 6)
    tokens = lm.generate(near_end, max_new_tokens=9, stop_ids=())
    assert len(tokens) == 9
    assert tokens == assert_same(lm, near_end, 9)
    # One token: the buffer holds the prompt alone.
    assert lm.generate(prompt, max_new_tokens=1, stop_ids=()) == free[:1]
    # An empty prompt starts from BOS.
    empty = lm.generate([], max_new_tokens=5, stop_ids=())
    assert empty == assert_same(lm, [lm.bos_token_id], 5)
    # A prompt longer than the context keeps its last tokens.
    long = prompt_of(lm, length + 30, 7)
    kept = long[-(length - 6) :]
    assert lm.generate(long, max_new_tokens=6, stop_ids=()) == assert_same(lm, kept, 6)


def test_generation_counts_the_tokens_it_feeds(fused):
    lm = load_model(fused["llama"], settings=SETTINGS)
    before = lm.tokens_processed
    tokens = lm.generate(prompt_of(lm, 10), max_new_tokens=8, stop_ids=())
    # The prompt, then every generated token but the last.
    assert lm.tokens_processed - before == 10 + len(tokens) - 1


def test_a_packed_query_key_value_kernel_is_detected_by_its_cache_io(tmp_path):
    """Detection reads the kernel's cache inputs and outputs, so a packed QKV
    input (key and value inputs empty) and any tensor names are found."""
    cache = [("pk", "pv", "nk", "nv"), ("a.past", "b.past", "a.new", "b.new")]
    nodes = [
        helper.make_node(
            "GroupQueryAttention",
            [f"qkv{i}", "", "", past_k, past_v, "seqlens", "total"],
            [f"out{i}", present_k, present_v],
            domain="com.microsoft",
            num_heads=2,
            kv_num_heads=1,
        )
        for i, (past_k, past_v, present_k, present_v) in enumerate(cache)
    ]
    nodes.append(helper.make_node("Concat", ["x", "y"], ["z"], axis=2))
    graph = helper.make_graph(nodes, "g", [], [])
    graph.node.append(  # inside a subgraph: not a top-level cache writer
        helper.make_node(
            "If", ["c"], ["r"],
            then_branch=helper.make_graph([nodes[0]], "t", [], []),
            else_branch=helper.make_graph([], "e", [], []),
        )
    )  # fmt: skip
    assert {tuple(q) for q in gqa_cache_tensors(graph)} == set(cache)
    assert len(gqa_cache_tensors(graph)) == 2


def test_facts_without_the_cache_writers_mean_the_generic_path(fused):
    """Facts stored before ``gqa_cache`` existed (or a graph without it): the
    present values are passed on as the next past, with the same tokens."""
    facts = inspect_bundle(fused["llama"]).to_dict()
    del facts["gqa_cache"]
    lm = load_model(fused["llama"], settings=SETTINGS, facts=facts)
    assert lm.shares_cache_buffers is False
    shared = load_model(fused["llama"], settings=SETTINGS)
    assert shared.shares_cache_buffers is True
    prompt = prompt_of(lm, 7)
    assert assert_same(lm, prompt, 12) == assert_same(shared, prompt, 12)
