"""ONNX Runtime adapter checked against the independent NumPy forward pass.

Run without Django: ``pytest tests/engine/test_runtime.py -p no:django``.
Bundles are real ONNX models from ``modelgen`` in every layout the adapter
supports; expected values come from ``modelgen.numpy_forward`` (float64).
"""

from __future__ import annotations

import json
import shutil
import threading

import numpy as np
import onnx
import pytest
from onnx import helper

import modelgen
from engine import bundle, causal_lm, runtime, session

CFG = dict(
    vocab_size=320,
    hidden_size=32,
    num_layers=2,
    num_heads=4,
    num_kv_heads=2,
    intermediate_size=64,
    max_position_embeddings=24,
)
KV_LAYOUTS = ("optimum", "merged", "genai")
SETTINGS = session.RuntimeSettings(intra_op_threads=1)


@pytest.fixture(scope="module")
def tokenizer():
    return modelgen.train_tokenizer([t for _, t in modelgen.corpus_documents()], 300)


@pytest.fixture(scope="module")
def cfg():
    return modelgen.LMConfig(**CFG)


@pytest.fixture(scope="module")
def weights(cfg):
    return modelgen.init_weights(cfg, 11)


@pytest.fixture(scope="module")
def bundles(tmp_path_factory, cfg, weights, tokenizer):
    root = tmp_path_factory.mktemp("bundles")
    return {
        layout: modelgen.write_lm_bundle(
            root / layout,
            cfg,
            weights,
            tokenizer,
            layout=layout,
            external_data=layout == "genai",
        )
        for layout in modelgen.LAYOUTS
    }


@pytest.fixture(scope="module")
def models(bundles):
    return {
        name: runtime.load_model(path, settings=SETTINGS)
        for name, path in bundles.items()
    }


def ref_logprobs(cfg, weights, seq) -> np.ndarray:
    """Float64 log-softmax ``[T, V]`` of one unpadded sequence."""
    return modelgen.log_softmax(
        modelgen.numpy_forward(cfg, weights, np.asarray([seq]))[0]
    )


def ref_greedy(cfg, weights, prompt, steps) -> list[int]:
    """Greedy continuation by full NumPy recomputation."""
    seq = list(prompt)
    for _ in range(steps):
        seq.append(int(ref_logprobs(cfg, weights, seq)[-1].argmax()))
    return seq[len(prompt) :]


def sample_ids(seed: int, n: int) -> list[int]:
    return [int(t) for t in np.random.default_rng(seed).integers(3, 300, n)]


def test_settings_resolve_threads_and_validate():
    settings = session.RuntimeSettings()
    data = settings.to_dict()
    assert data["intra_op_threads"] == 0
    assert data["resolved_intra_op_threads"] == session.available_cores() >= 1
    assert data["allow_spinning"] is False and data["inter_op_threads"] == 1
    with pytest.raises(ValueError, match="graph_optimization"):
        session.RuntimeSettings(graph_optimization="max")
    assert hash(settings) == hash(session.RuntimeSettings())


def test_session_is_cpu_only_sequential_without_spinning(bundles):
    made = session.make_session(bundles["optimum"] / "model.onnx", SETTINGS)
    assert made.get_providers() == ["CPUExecutionProvider"]
    options = made.get_session_options()
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    assert options.intra_op_num_threads == 1
    assert options.execution_mode.name == "ORT_SEQUENTIAL"


@pytest.mark.parametrize("layout", modelgen.LAYOUTS)
def test_selftest_passes_for_every_layout(models, layout):
    figures = models[layout].selftest()
    assert figures["passed"] is True
    assert (
        figures["logits_shape"][2]
        == CFG["vocab_size"]
        >= figures["tokenizer_vocab_size"]
    )
    assert figures["padding_max_abs_diff"] <= 1e-4
    if layout == "plain":
        assert figures["kv_max_abs_diff"] is None
    else:
        assert figures["kv_max_abs_diff"] <= 1e-4 and figures["generation_match"]


@pytest.mark.parametrize("layout", modelgen.LAYOUTS)
def test_forward_matches_numpy_for_a_right_padded_batch(models, cfg, weights, layout):
    model = models[layout]
    batch = [sample_ids(1, 9), sample_ids(2, 4), sample_ids(3, 1)]
    got = model.forward(batch)
    assert [g.shape for g in got] == [(9, 320), (4, 320), (1, 320)]
    for seq, lp in zip(batch, got, strict=True):
        assert np.abs(lp - ref_logprobs(cfg, weights, seq)).max() < 1e-4
        single = model.forward([seq])[0]
        assert np.abs(single - lp).max() < 1e-5


def test_layout_and_special_tokens_are_read_from_configs(models):
    assert {k: m.layout for k, m in models.items()} == {
        "optimum": "optimum",
        "plain": "plain",
        "merged": "optimum_merged",
        "genai": "genai",
    }
    model = models["optimum"]
    assert (model.bos_token_id, model.eos_token_id, model.context_length) == (0, 1, 24)
    assert model.vocab_size == 320 and model.has_cache
    text = "Report a missed bin collection."
    assert model.decode(model.encode(text)) == text


def test_loglikelihood_matches_numpy_and_keeps_input_order(models, cfg, weights):
    model = models["optimum"]
    requests = [
        (sample_ids(4, 5), sample_ids(5, 3)),
        ([], sample_ids(6, 4)),
        (sample_ids(7, 12), sample_ids(8, 1)),
        (sample_ids(9, 2), []),
    ]
    scored = model.loglikelihood(requests, batch_size=2)
    for (context, continuation), (total, greedy, per_token) in zip(
        requests[:3], scored[:3], strict=True
    ):
        seq = (context or [0]) + continuation
        lp = ref_logprobs(cfg, weights, seq[:-1])[-len(continuation) :]
        expected = lp[np.arange(len(continuation)), continuation]
        assert np.allclose(per_token, expected, atol=1e-4)
        assert total == pytest.approx(expected.sum(), abs=1e-4)
        assert greedy == bool(np.all(lp.argmax(axis=1) == continuation))
    assert scored[3] == (0.0, True, [])
    # a continuation made of the greedy tokens is greedy
    prompt = sample_ids(10, 4)
    greedy_cont = ref_greedy(cfg, weights, prompt, 3)
    assert model.loglikelihood([(prompt, greedy_cont)])[0][1] is True


@pytest.mark.parametrize("length", [1, 5, 12])
def test_continuation_scores_equal_the_full_log_softmax_to_the_bit(length):
    rng = np.random.default_rng(length)
    logits = (rng.standard_normal((12, 500)) * 4).astype(np.float32)
    full = causal_lm._log_softmax(logits)[-length:]
    for cont in (
        [int(t) for t in rng.integers(0, 500, length)],
        [int(t) for t in full.argmax(axis=1)],
    ):
        total, greedy, per_token = causal_lm._continuation_scores((logits, cont))
        expected = full[np.arange(length), cont].astype(np.float64)
        assert per_token == expected.tolist()
        assert total == float(expected.sum())
        assert greedy is bool(np.all(full.argmax(axis=1) == cont))


def test_loglikelihood_left_truncates_a_long_context(models, cfg, weights):
    model = models["plain"]
    context, continuation = sample_ids(11, 40), sample_ids(12, 5)
    total, _, _ = model.loglikelihood([(context, continuation)])[0]
    window = (context + continuation)[-(24 + 1) :][:-1]
    assert len(window) == 24
    expected = ref_logprobs(cfg, weights, window)[-5:][np.arange(5), continuation].sum()
    assert total == pytest.approx(expected, abs=1e-4)
    with pytest.raises(ValueError, match="exceeds the context length"):
        model.loglikelihood([(context, sample_ids(13, 25))])


def test_rolling_loglikelihood_scores_every_token_once(models, cfg, weights):
    model = models["genai"]
    tokens = sample_ids(14, 61)  # 2.5 windows of 24
    per_token = model.loglikelihood_rolling(tokens, batch_size=2)
    assert len(per_token) == len(tokens)
    # NumPy sliding computation: the first window reads BOS + tokens, every
    # later token sees the L tokens before it, window by window.
    length, expected = 24, []
    lp = ref_logprobs(cfg, weights, [0, *tokens[: length - 1]])
    expected += [lp[i, tokens[i]] for i in range(length)]
    start = length
    while start < len(tokens):
        end = min(start + length, len(tokens))
        window = tokens[end - length - 1 : end - 1]
        lp = ref_logprobs(cfg, weights, window)
        offset = len(window) - (end - start)
        expected += [lp[offset + k, tokens[start + k]] for k in range(end - start)]
        start = end
    assert np.allclose(per_token, expected, atol=1e-4)
    windows = model.rolling_windows(tokens)
    assert [t for _, cont in windows for t in cont] == tokens
    assert all(len(ctx) + len(cont) - 1 <= length for ctx, cont in windows)
    assert model.loglikelihood_rolling([]) == []


@pytest.mark.parametrize("layout", KV_LAYOUTS)
def test_cached_generation_equals_full_recompute(models, cfg, weights, layout):
    model = models[layout]
    prompt = sample_ids(15, 6)
    before = model.tokens_processed
    cached = model.generate(prompt, max_new_tokens=8, stop_ids=())
    fed_cached = model.tokens_processed - before
    full = model.generate(prompt, max_new_tokens=8, stop_ids=(), use_cache=False)
    assert cached == full == ref_greedy(cfg, weights, prompt, 8)
    assert fed_cached == 6 + 7  # prompt once, then one token per step


def test_generation_stops_at_stop_ids_and_the_context_end(models, cfg, weights):
    model = models["optimum"]
    prompt = sample_ids(16, 5)
    first = ref_greedy(cfg, weights, prompt, 1)[0]
    assert model.generate(prompt, max_new_tokens=5, stop_ids=[first]) == []
    long_prompt = sample_ids(17, 30)
    out = model.generate(long_prompt, max_new_tokens=6, stop_ids=())
    assert out == ref_greedy(cfg, weights, long_prompt[-18:], 6)


def break_present_value(model: onnx.ModelProto) -> onnx.ModelProto:
    """Scale the ``present.0.value`` output by 0.5; the logits stay correct.

    Only the graph output changes, so prefill logits are right but the next
    step reads a wrong cache, as a faulty export would.
    """
    broken = onnx.ModelProto()
    broken.CopyFrom(model)
    for node in broken.graph.node:
        for ports in (node.input, node.output):
            for i, name in enumerate(ports):
                if name == "present.0.value":
                    ports[i] = "present.0.value.raw"
    broken.graph.initializer.append(
        onnx.numpy_helper.from_array(np.array(0.5, np.float32), "half")
    )
    broken.graph.node.append(
        helper.make_node("Mul", ["present.0.value.raw", "half"], ["present.0.value"])
    )
    return broken


def test_selftest_rejects_a_cache_that_disagrees_with_prefill(
    tmp_path, cfg, weights, tokenizer
):
    model = break_present_value(modelgen.build_causal_lm(cfg, weights))
    root = modelgen.write_bundle(
        tmp_path / "broken", model, tokenizer, cfg.to_hf_config()
    )
    lm = runtime.load_model(root, settings=SETTINGS)
    with pytest.raises(session.RuntimeCheckError, match="kv_max_abs_diff") as info:
        lm.selftest()
    assert info.value.figures["kv_max_abs_diff"] > 1e-4
    assert info.value.figures["padding_max_abs_diff"] <= 1e-4
    assert info.value.figures["passed"] is False


def quantise_dynamic(model: onnx.ModelProto, dest) -> None:
    """Write ``model`` quantised with onnxruntime's ``quantize_dynamic`` (int8)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    source = dest.parent / "float.onnx"
    onnx.save_model(model, str(source))
    quantize_dynamic(source, dest / "model.onnx", weight_type=QuantType.QInt8)


@pytest.mark.parametrize("broken", [False, True])
def test_selftest_of_dynamic_int8_models_uses_a_relative_tolerance(
    tmp_path, cfg, weights, tokenizer, broken
):
    model = modelgen.build_causal_lm(cfg, weights)
    if broken:
        model = break_present_value(model)
    root = modelgen.write_bundle(tmp_path / "q8", model, tokenizer, cfg.to_hf_config())
    quantise_dynamic(model, root)
    lm = runtime.load_model(root, settings=SETTINGS)
    assert lm.dynamic_quantisation is True
    if broken:
        with pytest.raises(session.RuntimeCheckError, match="kv_max_abs_diff"):
            lm.selftest()
        return
    figures = lm.selftest()
    assert figures["passed"] and figures["tolerance"] > causal_lm.SELFTEST_TOLERANCE
    assert figures["padding_max_abs_diff"] > 1e-4  # why the absolute bound cannot hold
    with pytest.raises(session.RuntimeCheckError):
        lm.selftest(tolerance=1e-4)


def test_gpt2_input_order_and_int32_ids_bind_by_name(tmp_path, cfg, weights, tokenizer):
    order = [
        "input_ids",
        *[f"past_key_values.{i}.{kv}" for i in range(2) for kv in ("key", "value")],
        "attention_mask",
        "position_ids",
    ]
    model = modelgen.build_causal_lm(cfg, weights, input_order=order, ids_dtype="int32")
    root = modelgen.write_bundle(
        tmp_path / "gpt2", model, tokenizer, cfg.to_hf_config()
    )
    lm = runtime.load_model(root, settings=SETTINGS)
    assert [p.name for p in lm.session.get_inputs()] == order
    seq = sample_ids(18, 7)
    assert np.abs(lm.forward([seq])[0] - ref_logprobs(cfg, weights, seq)).max() < 1e-4
    assert lm.generate(seq, max_new_tokens=4, stop_ids=()) == ref_greedy(
        cfg, weights, seq, 4
    )
    assert lm.selftest()["passed"]


def test_genai_int4_contrib_bundle_runs_through_the_adapter(tmp_path, tokenizer):
    cfg = modelgen.LMConfig(**{**CFG, "hidden_size": 64, "intermediate_size": 96})
    weights = modelgen.init_weights(cfg, 12)
    root = modelgen.write_lm_bundle(
        tmp_path / "int4",
        cfg,
        weights,
        tokenizer,
        layout="genai_int4",
        external_data=True,
    )
    facts = bundle.inspect_bundle(root)
    assert (facts.layout, facts.quantisation) == ("genai", "int4")
    lm = runtime.load_model(root, settings=SETTINGS, facts=facts)
    assert lm.selftest()["passed"]
    _, effective = modelgen.build_genai_contrib(cfg, weights, bits=4)
    seq = sample_ids(20, 9)
    assert np.abs(lm.forward([seq])[0] - ref_logprobs(cfg, effective, seq)).max() < 1e-4
    cached = lm.generate(seq, max_new_tokens=6, stop_ids=())
    assert cached == lm.generate(seq, max_new_tokens=6, stop_ids=(), use_cache=False)
    assert cached == ref_greedy(cfg, effective, seq, 6)


def test_genai_bundle_without_hf_config_reads_genai_config(tmp_path, bundles):
    root = tmp_path / "genai-only"
    shutil.copytree(bundles["genai"], root)
    (root / "config.json").unlink()
    (root / "generation_config.json").unlink()
    genai = json.loads((root / "genai_config.json").read_text())
    genai["model"]["context_length"] = 20
    genai["model"]["eos_token_id"] = [1, 2]
    (root / "genai_config.json").write_text(json.dumps(genai))
    lm = runtime.load_model(root, settings=SETTINGS)
    assert (lm.layout, lm.context_length, lm.bos_token_id) == ("genai", 20, 0)
    assert lm.eos_token_id == 1 and lm.eos_token_ids == frozenset({1, 2})
    assert lm.selftest()["passed"]


def test_forward_rejects_overlong_and_out_of_vocabulary_input(models):
    model = models["optimum"]
    with pytest.raises(ValueError, match="context length"):
        model.forward([sample_ids(19, 25)])
    with pytest.raises(ValueError, match="vocabulary"):
        model.forward([[5, 320]])
    with pytest.raises(ValueError, match="empty"):
        model.forward([[]])


def test_session_cache_reuses_and_evicts_by_budget(bundles):
    created = []

    def factory(path, settings):
        created.append(path.parent.name)
        return session.make_session(path, settings)

    unit = session.SessionCache.estimate_bytes(1000)
    assert unit == 2500
    cache = session.SessionCache(budget_bytes=2 * unit, factory=factory)
    paths = {
        name: bundles[name] / "model.onnx" for name in ("optimum", "plain", "merged")
    }
    a = cache.get("a", paths["optimum"], SETTINGS, 1000)
    cache.get("b", paths["plain"], SETTINGS, 1000)
    assert cache.get("a", paths["optimum"], SETTINGS, 1000) is a  # hit, now most recent
    cache.get("c", paths["merged"], SETTINGS, 1000)  # evicts "b", the least recent
    assert ("a", SETTINGS) in cache and ("c", SETTINGS) in cache
    assert ("b", SETTINGS) not in cache
    assert created == ["optimum", "plain", "merged"]
    other = session.RuntimeSettings(intra_op_threads=2)
    assert (
        cache.get("a", paths["optimum"], other, 1000) is not a
    )  # settings are part of the key
    assert cache.stats() == {
        "entries": 2,
        "bytes_in_use": 2 * unit,
        "budget_bytes": 2 * unit,
        "hits": 1,
        "misses": 4,
        "evictions": 2,
    }
    cache.get("huge", paths["plain"], SETTINGS, 10_000)  # over budget: kept alone
    assert len(cache) == 1


def test_session_cache_is_thread_safe(bundles):
    cache = session.SessionCache(budget_bytes=10**9)
    path = bundles["plain"] / "model.onnx"
    results = []
    threads = [
        threading.Thread(
            target=lambda: results.append(cache.get("k", path, SETTINGS, 100))
        )
        for _ in range(4)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len({id(s) for s in results}) == 1
    assert cache.stats()["misses"] == 1 and cache.stats()["hits"] == 3


def test_load_model_uses_the_cache_by_digest(bundles):
    cache = session.SessionCache(budget_bytes=10**9)
    one = runtime.load_model(
        bundles["optimum"], settings=SETTINGS, cache=cache, digest="d1"
    )
    two = runtime.load_model(
        bundles["optimum"], settings=SETTINGS, cache=cache, digest="d1"
    )
    assert one.session is two.session
    assert one.settings is SETTINGS


def test_sequence_classifier_probabilities_match_numpy(tmp_path, tokenizer):
    docs = modelgen.corpus_documents()[:40]
    topics = sorted({t for t, _ in docs})
    params = modelgen.train_classifier(
        [tokenizer.encode(text).ids for _, text in docs],
        [topics.index(t) for t, _ in docs],
        vocab_size=tokenizer.get_vocab_size(),
        num_labels=len(topics),
        steps=30,
    )
    root = modelgen.write_classifier_bundle(tmp_path / "clf", params, tokenizer, topics)
    model = runtime.load_model(root, settings=SETTINGS)
    assert isinstance(model, runtime.SequenceClassifier)
    assert model.labels == topics and model.num_labels == len(topics)
    texts = ["Put your bins out by seven.", "Join the library for free.", ""]
    probs = model.predict_proba(texts, batch_size=2)
    assert probs.shape == (3, len(topics))
    assert np.allclose(probs.sum(axis=1), 1.0)
    for text, row in zip(texts[:2], probs, strict=False):
        pooled = params["embedding"][tokenizer.encode(text).ids].mean(axis=0)
        logits = pooled.astype(np.float64) @ params["weight"] + params["bias"]
        expected = np.exp(logits - logits.max())
        assert np.abs(row - expected / expected.sum()).max() < 1e-5
    assert model.tokens_processed > 0


def test_tensor_model_matches_sklearn(tmp_path):
    pytest.importorskip("skl2onnx")
    rng = np.random.default_rng(3)
    x = rng.normal(0, 1, (120, 4)).astype(np.float32)
    y = (x[:, 0] > 0).astype(int) + (x[:, 1] > 0.5).astype(int)  # three classes
    proto, clf = modelgen.build_tabular_model(x, y)
    root = modelgen.write_bundle(tmp_path / "tab", proto)
    model = runtime.load_model(root, settings=SETTINGS)
    assert isinstance(model, runtime.TensorModel)
    assert not hasattr(model, "tokenizer")  # evaluate.model_kind relies on this
    assert model.output_name == "probabilities" and model.num_features == 4
    features = rng.normal(0, 1, (50, 4)).astype(np.float32)
    got = model.predict_proba(features)
    assert got.shape == (50, 3)
    assert np.abs(got - clf.predict_proba(features)).max() < 1e-5
    with pytest.raises(ValueError, match="features"):
        model.predict_proba(features[:, :3])


def test_unsupported_inputs_are_refused(tmp_path, cfg, weights, tokenizer):
    model = modelgen.build_causal_lm(cfg, weights, layout="plain")
    model.graph.input.append(
        helper.make_tensor_value_info("pixel_values", onnx.TensorProto.FLOAT, [1, 3])
    )
    root = modelgen.write_bundle(tmp_path / "odd", model, tokenizer, cfg.to_hf_config())
    with pytest.raises(session.RuntimeCheckError, match="pixel_values"):
        runtime.load_model(root, settings=SETTINGS)


def test_bos_falls_back_to_eos_when_the_config_names_none(tmp_path):
    """lm-evaluation-harness conditions the first token on BOS, else EOS."""
    import json
    import shutil
    from pathlib import Path

    from engine.runtime import load_model

    fixture = Path(__file__).resolve().parents[1] / "fixtures" / "families" / "llama"
    bundle = shutil.copytree(fixture, tmp_path / "llama")
    for name in ("config.json", "generation_config.json"):
        path = bundle / name
        if path.exists():
            data = json.loads(path.read_text())
            data["bos_token_id"] = None
            path.write_text(json.dumps(data))
    eos = json.loads((bundle / "config.json").read_text())["eos_token_id"]

    model = load_model(bundle)

    assert model.bos_token_id == (eos[0] if isinstance(eos, list) else eos)
    assert model.bos_token_id != 1  # the tokenizer's "<s>" is not guessed
