"""Models Civitas builds itself: graphs against the NumPy reference, training, bundles.

Run without Django: ``pytest tests/modelgen/test_modelgen.py -p no:django``.
Every ONNX model here is executed by ONNX Runtime and compared with
``modelgen.numpy_forward``, a float64 forward written independently of the
graph builder.
"""

from __future__ import annotations

import json
import math

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import numpy_helper

import modelgen
from engine import bundle

TINY = {
    "vocab_size": 96,
    "hidden_size": 32,
    "num_layers": 2,
    "num_heads": 4,
    "num_kv_heads": 2,
    "intermediate_size": 48,
    "max_position_embeddings": 32,
}


def run_onnx(
    model: onnx.ModelProto, ids: np.ndarray, mask: np.ndarray, *, head_dim: int = 8
) -> np.ndarray:
    """Logits of a causal LM graph fed an empty cache, inputs bound by name."""
    session = ort.InferenceSession(
        model.SerializeToString(), providers=["CPUExecutionProvider"]
    )
    feed: dict[str, np.ndarray] = {}
    for port in session.get_inputs():
        dtype = np.int32 if port.type == "tensor(int32)" else np.int64
        if port.name == "input_ids":
            feed[port.name] = ids.astype(dtype)
        elif port.name == "attention_mask":
            feed[port.name] = mask.astype(dtype)
        elif port.name == "position_ids":
            feed[port.name] = modelgen.default_position_ids(mask).astype(dtype)
        elif port.name == "use_cache_branch":
            feed[port.name] = np.array([False])
        else:
            kv_heads = port.shape[1]
            feed[port.name] = np.zeros(
                (ids.shape[0], kv_heads, 0, head_dim), np.float32
            )
    return session.run(["logits"], feed)[0]


@pytest.fixture(scope="module")
def tokenizer():
    return modelgen.train_tokenizer(
        [text for _, text in modelgen.corpus_documents()], 300
    )


def test_config_round_trips_through_llama_config_json():
    cfg = modelgen.LMConfig(**TINY, tie_word_embeddings=True)
    hf = cfg.to_hf_config()
    assert hf["model_type"] == "llama"
    assert hf["architectures"] == ["LlamaForCausalLM"]
    assert hf["head_dim"] == 8
    assert hf["num_key_value_heads"] == 2
    assert modelgen.LMConfig.from_hf_config(hf) == cfg


@pytest.mark.parametrize("tied", [False, True])
def test_parameter_count_equals_the_weights_created(tied):
    cfg = modelgen.LMConfig(**TINY, tie_word_embeddings=tied)
    weights = modelgen.init_weights(cfg, 0)
    assert cfg.parameter_count() == sum(w.size for w in weights.values())
    assert ("lm_head" in weights) is not tied


def test_config_rejects_heads_that_do_not_divide():
    with pytest.raises(ValueError, match="num_kv_heads"):
        modelgen.LMConfig(**{**TINY, "num_kv_heads": 3})
    with pytest.raises(ValueError, match="num_heads"):
        modelgen.LMConfig(**{**TINY, "num_heads": 5})


def test_init_weights_is_deterministic_in_the_seed():
    cfg = modelgen.LMConfig(**TINY)
    a, b, c = (modelgen.init_weights(cfg, s) for s in (7, 7, 8))
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert not np.array_equal(a["layers.0.q_proj"], c["layers.0.q_proj"])


@pytest.mark.parametrize("tied", [False, True])
@pytest.mark.parametrize("layout", modelgen.LAYOUTS)
def test_onnx_logits_equal_numpy_reference_with_padding(layout, tied):
    cfg = modelgen.LMConfig(**TINY, tie_word_embeddings=tied)
    weights = modelgen.init_weights(cfg, 3)
    model = modelgen.build_causal_lm(cfg, weights, layout=layout)
    onnx.checker.check_model(model, full_check=True)
    rng = np.random.default_rng(0)
    ids = rng.integers(0, cfg.vocab_size, (3, 9))
    mask = np.ones_like(ids)
    mask[1, 6:] = 0  # right padding
    mask[2, :4] = 0  # left padding
    expected = modelgen.numpy_forward(cfg, weights, ids, mask)
    got = run_onnx(model, ids, mask)
    assert got.shape == (3, 9, cfg.vocab_size)
    real = mask == 1
    assert np.abs(got[real] - expected[real]).max() < 1e-4
    assert np.abs(expected).max() > 1.0  # the comparison is not between near-zeros


def test_genai_layout_contract():
    cfg = modelgen.LMConfig(**TINY)
    model = modelgen.build_causal_lm(cfg, modelgen.init_weights(cfg, 0), layout="genai")
    names = [i.name for i in model.graph.input]
    assert "position_ids" not in names
    past = next(i for i in model.graph.input if i.name == "past_key_values.0.key")
    dims = past.type.tensor_type.shape.dim
    assert dims[1].dim_value == cfg.num_kv_heads
    assert dims[3].dim_param == "kv_cache_dim"
    assert {n.op_type for n in model.graph.node} >= {"CumSum"}
    decoder = modelgen.genai_config(cfg)["model"]["decoder"]
    assert decoder["head_size"] == cfg.head_dim
    assert decoder["inputs"]["past_key_names"] == "past_key_values.%d.key"
    assert decoder["outputs"]["present_value_names"] == "present.%d.value"
    assert decoder["num_key_value_heads"] == cfg.num_kv_heads


@pytest.mark.parametrize("bits", [4, 8])
def test_quantize_blockwise_packs_as_matmulnbits_and_bounds_the_error(bits):
    matrix = np.random.default_rng(5).normal(0, 1, (64, 24)).astype(np.float32)
    packed, scales, dequantized = modelgen.quantize_blockwise(
        matrix, bits=bits, block_size=32
    )
    assert packed.dtype == np.uint8
    assert packed.shape == (24, 2, 32 * bits // 8)
    assert scales.shape == (48,)
    per_block = np.repeat(scales.reshape(24, 2), 32, axis=1).T  # [K, N]
    assert np.all(np.abs(dequantized - matrix) <= per_block / 2 + 1e-6)
    with pytest.raises(ValueError, match="block_size"):
        modelgen.quantize_blockwise(matrix[:48], block_size=32)


@pytest.mark.parametrize("bits", [None, 4, 8])
def test_genai_contrib_graph_equals_numpy_on_its_effective_weights(bits):
    cfg = modelgen.LMConfig(**{**TINY, "hidden_size": 64, "intermediate_size": 96})
    weights = modelgen.init_weights(cfg, 6)
    model, effective = modelgen.build_genai_contrib(cfg, weights, bits=bits)
    onnx.checker.check_model(model, full_check=True)
    ops = {(n.domain, n.op_type) for n in model.graph.node}
    assert ("com.microsoft", "GroupQueryAttention") in ops
    assert (("com.microsoft", "MatMulNBits") in ops) is (bits is not None)
    changed = not np.array_equal(
        effective["layers.0.q_proj"], weights["layers.0.q_proj"]
    )
    assert changed is (bits is not None)
    ids = np.random.default_rng(1).integers(0, cfg.vocab_size, (2, 7))
    mask = np.ones_like(ids)
    mask[1, 4:] = 0  # right padding
    expected = modelgen.numpy_forward(cfg, effective, ids, mask)
    got = run_onnx(model, ids, mask, head_dim=cfg.head_dim)
    assert np.abs(got - expected)[mask == 1].max() < 1e-4
    with pytest.raises(ValueError, match="multiple of 16"):
        modelgen.build_genai_contrib(modelgen.LMConfig(**TINY), weights)


@pytest.mark.parametrize("bits", [None, 4])
def test_packed_qkv_gives_the_unpacked_logits_and_the_same_int4_bytes(bits):
    """The builder's packed Q/K/V: one ``qkv_proj`` whose quantised blocks and
    scales are the q, k and v ones side by side (blockwise is per column)."""
    cfg = modelgen.LMConfig(
        **{**TINY, "hidden_size": 64, "num_kv_heads": 2, "intermediate_size": 96}
    )
    weights = modelgen.init_weights(cfg, 7)
    packed, effective = modelgen.build_genai_contrib(cfg, weights, bits=bits)
    unpacked, expected = modelgen.build_genai_contrib(
        cfg, weights, bits=bits, packed_qkv=False
    )
    for name, value in expected.items():
        np.testing.assert_array_equal(effective[name], value)
    stored = {t.name: numpy_helper.to_array(t) for t in packed.graph.initializer}
    separate = {t.name: numpy_helper.to_array(t) for t in unpacked.graph.initializer}
    assert "layers.0.qkv_proj" in stored and "layers.0.q_proj" not in stored
    suffixes = ("", ".scales") if bits else ("",)
    for suffix in suffixes:
        parts = [separate[f"layers.0.{p}_proj{suffix}"] for p in "qkv"]
        axis = 1 if bits is None else 0  # float [K, N]; MatMulNBits [N, ...]
        np.testing.assert_array_equal(
            stored[f"layers.0.qkv_proj{suffix}"], np.concatenate(parts, axis=axis)
        )
    gqa = next(n for n in packed.graph.node if n.op_type == "GroupQueryAttention")
    assert list(gqa.input[1:3]) == ["", ""]
    ids = np.random.default_rng(2).integers(0, cfg.vocab_size, (2, 9))
    mask = np.ones_like(ids)
    mask[1, 5:] = 0
    got = run_onnx(packed, ids, mask, head_dim=cfg.head_dim)[mask == 1]
    want = run_onnx(unpacked, ids, mask, head_dim=cfg.head_dim)[mask == 1]
    assert (np.abs(got - want) / np.maximum(np.abs(want), 1e-6)).max() < 1e-4


def test_merged_layout_is_an_if_on_use_cache_branch():
    cfg = modelgen.LMConfig(**TINY)
    model = modelgen.build_causal_lm(
        cfg, modelgen.init_weights(cfg, 0), layout="merged"
    )
    flag = next(i for i in model.graph.input if i.name == "use_cache_branch")
    assert flag.type.tensor_type.elem_type == onnx.TensorProto.BOOL
    assert [n.op_type for n in model.graph.node if n.op_type == "If"] == ["If"]


def test_tied_embeddings_are_stored_once():
    cfg = modelgen.LMConfig(**TINY, tie_word_embeddings=True)
    model = modelgen.build_causal_lm(cfg, modelgen.init_weights(cfg, 0))
    names = [t.name for t in model.graph.initializer]
    assert names.count("embed_tokens") == 1
    assert "lm_head" not in names


def constant_elements(model: onnx.ModelProto) -> int:
    """Elements of the graph's constant initializers (rotary tables, shapes)."""
    constants = [t for t in model.graph.initializer if t.name.startswith("const_")]
    return sum(math.prod(t.dims) for t in constants)


@pytest.mark.parametrize("external_data", [False, True])
@pytest.mark.parametrize("layout", ["optimum", "merged"])
def test_a_tied_head_stored_twice_is_counted_once(
    tmp_path, tokenizer, layout, external_data
):
    """Defect 14: a tied embedding exported as two identical initializers."""
    cfg = modelgen.LMConfig(**{**TINY, "vocab_size": 320}, tie_word_embeddings=True)
    weights = modelgen.init_weights(cfg, 0)
    model = modelgen.build_causal_lm(cfg, weights, layout=layout, tied_head_copy=True)
    names = [t.name for t in model.graph.initializer]
    assert names.count("embed_tokens") == names.count("lm_head.weight") == 1
    root = modelgen.write_bundle(
        tmp_path / "b",
        model,
        tokenizer,
        cfg.to_hf_config(),
        external_data=external_data,
    )
    facts = bundle.inspect_bundle(root)
    # The graph's constants (rotary frequencies, shapes) are initializers too.
    true_count = cfg.parameter_count() + constant_elements(model)
    assert facts.parameter_count == true_count
    assert facts.shared_initializers == [["embed_tokens", "lm_head.weight"]]
    head_bytes = 4 * cfg.vocab_size * cfg.hidden_size
    shared = modelgen.build_causal_lm(cfg, weights, layout=layout)
    stored_once = bundle.inspect_bundle(
        modelgen.write_bundle(tmp_path / "once", shared, tokenizer, cfg.to_hf_config())
    )
    assert stored_once.parameter_count == true_count
    assert stored_once.shared_initializers == []
    assert facts.weight_bytes == stored_once.weight_bytes + head_bytes  # as stored
    assert facts.to_dict()["shared_initializers"] == [
        ["embed_tokens", "lm_head.weight"]
    ]
    logits = run_onnx(model, np.array([[3, 4, 5]]), np.ones((1, 3), np.int64))
    expected = run_onnx(shared, np.array([[3, 4, 5]]), np.ones((1, 3), np.int64))
    np.testing.assert_array_equal(logits, expected)


def test_equal_shapes_with_different_values_are_all_counted(tmp_path, tokenizer):
    cfg = modelgen.LMConfig(**{**TINY, "vocab_size": 320})
    model = modelgen.build_causal_lm(cfg, modelgen.init_weights(cfg, 0))
    root = modelgen.write_bundle(
        tmp_path / "b", model, tokenizer, cfg.to_hf_config(), external_data=True
    )
    facts = bundle.inspect_bundle(root)
    # Every layer's projections share dtype and shape but not values, and the
    # norm gains (all ones) are separate parameters that merely start equal.
    assert facts.shared_initializers == []
    assert facts.parameter_count == cfg.parameter_count() + constant_elements(model)


def test_input_order_and_int32_ids_are_honoured():
    cfg = modelgen.LMConfig(**TINY)
    weights = modelgen.init_weights(cfg, 1)
    order = [
        "input_ids",
        *[f"past_key_values.{i}.{kv}" for i in range(2) for kv in ("key", "value")],
        "attention_mask",
        "position_ids",
    ]
    model = modelgen.build_causal_lm(cfg, weights, ids_dtype="int32", input_order=order)
    assert [i.name for i in model.graph.input] == order
    ids = np.random.default_rng(2).integers(0, cfg.vocab_size, (2, 5))
    mask = np.ones_like(ids)
    expected = modelgen.numpy_forward(cfg, weights, ids, mask)
    assert np.abs(run_onnx(model, ids, mask) - expected).max() < 1e-4


def test_build_rejects_bad_arguments():
    cfg = modelgen.LMConfig(**TINY)
    weights = modelgen.init_weights(cfg, 0)
    with pytest.raises(ValueError, match="layout"):
        modelgen.build_causal_lm(cfg, weights, layout="onnx-genai")
    with pytest.raises(ValueError, match="input_order"):
        modelgen.build_causal_lm(cfg, weights, input_order=["input_ids"])
    with pytest.raises(ValueError, match="missing weights"):
        modelgen.build_causal_lm(cfg, {k: v for k, v in weights.items() if k != "norm"})


@pytest.mark.parametrize("tied", [False, True])
def test_gradients_match_finite_differences(tied):
    cfg = modelgen.LMConfig(
        vocab_size=23,
        hidden_size=8,
        num_layers=2,
        num_heads=4,
        num_kv_heads=2,
        intermediate_size=12,
        max_position_embeddings=16,
        tie_word_embeddings=tied,
    )
    weights = {
        k: v.astype(np.float64) for k, v in modelgen.init_weights(cfg, 3).items()
    }
    rng = np.random.default_rng(0)
    inputs, targets = rng.integers(0, 23, (2, 6)), rng.integers(0, 23, (2, 6))
    loss, grads = modelgen.lm_loss_and_grads(cfg, weights, inputs, targets)
    logp = modelgen.log_softmax(modelgen.numpy_forward(cfg, weights, inputs))
    assert loss == pytest.approx(
        -np.take_along_axis(logp, targets[..., None], -1).mean()
    )
    assert sorted(grads) == sorted(weights)
    for name, array in weights.items():
        for _ in range(2):
            index = tuple(int(rng.integers(0, s)) for s in array.shape)
            old = array[index]
            array[index] = old + 1e-6
            up, _ = modelgen.lm_loss_and_grads(
                cfg, weights, inputs, targets, need_grads=False
            )
            array[index] = old - 1e-6
            down, _ = modelgen.lm_loss_and_grads(
                cfg, weights, inputs, targets, need_grads=False
            )
            array[index] = old
            numeric = (up - down) / 2e-6
            assert grads[name][index] == pytest.approx(numeric, rel=1e-4, abs=1e-8), (
                name
            )


def test_tokenizer_special_ids_and_round_trip(tokenizer):
    assert [tokenizer.token_to_id(t) for t in modelgen.SPECIAL_TOKENS] == [0, 1, 2]
    text = "Bulky items such as sofas can be collected for a fee. Zürich €5"
    ids = tokenizer.encode(text).ids
    assert 0 not in ids and 1 not in ids  # no special tokens added
    assert tokenizer.decode(ids) == text
    assert tokenizer.padding is None and tokenizer.truncation is None
    again = modelgen.train_tokenizer([t for _, t in modelgen.corpus_documents()], 300)
    assert again.get_vocab() == tokenizer.get_vocab()


def test_corpus_is_shipped_with_a_cc0_licence():
    docs = modelgen.corpus_documents()
    topics = {topic for topic, _ in docs}
    assert len(topics) >= 10 and len(docs) > 150
    size = sum(p.stat().st_size for p in modelgen.CORPUS_DIR.glob("*.txt"))
    assert 50_000 < size < 400_000
    assert "CC0" in (modelgen.CORPUS_DIR / "README.md").read_text(encoding="utf-8")


def test_train_lm_lowers_heldout_perplexity(tokenizer):
    docs = modelgen.corpus_documents()
    train = [tokenizer.encode(t).ids for i, (_, t) in enumerate(docs) if i % 10]
    held = [tokenizer.encode(t).ids for i, (_, t) in enumerate(docs) if not i % 10]
    cfg = modelgen.LMConfig(
        vocab_size=320,
        hidden_size=32,
        num_layers=1,
        num_heads=4,
        num_kv_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
    )
    initial = modelgen.init_weights(cfg, 0)
    losses: list[float] = []
    trained = modelgen.train_lm(
        cfg,
        train,
        steps=120,
        lr=5e-3,
        seed=0,
        seq_len=64,
        weights=initial,
        history=losses,
    )
    before = modelgen.perplexity(cfg, initial, held)
    after = modelgen.perplexity(cfg, trained, held)
    assert len(losses) == 120
    assert np.mean(losses[-10:]) < losses[0] - 1.5
    assert after < 0.25 * before
    assert after < 100  # far from the uniform 320 as well as from the random init


def test_train_lm_is_deterministic_and_leaves_inputs_alone():
    cfg = modelgen.LMConfig(**TINY)
    stream = np.random.default_rng(0).integers(3, cfg.vocab_size, 500)
    initial = modelgen.init_weights(cfg, 0)
    snapshot = {k: v.copy() for k, v in initial.items()}
    a = modelgen.train_lm(cfg, stream, steps=5, lr=1e-3, seed=4, weights=initial)
    b = modelgen.train_lm(cfg, stream, steps=5, lr=1e-3, seed=4, weights=initial)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert all(np.array_equal(initial[k], snapshot[k]) for k in initial)
    assert not np.array_equal(a["embed_tokens"], initial["embed_tokens"])
    with pytest.raises(ValueError, match="shorter than one window"):
        modelgen.train_lm(cfg, [3, 4, 5], steps=1, lr=1e-3, seed=0)


def test_classifier_beats_chance_and_onnx_matches_numpy(tokenizer):
    docs = modelgen.corpus_documents()
    topics = sorted({t for t, _ in docs})
    ids = [tokenizer.encode(text).ids for _, text in docs]
    labels = [topics.index(t) for t, _ in docs]
    train = [i for i in range(len(docs)) if i % 5]
    test = [i for i in range(len(docs)) if not i % 5]
    losses: list[float] = []
    params = modelgen.train_classifier(
        [ids[i] for i in train],
        [labels[i] for i in train],
        vocab_size=tokenizer.get_vocab_size(),
        num_labels=len(topics),
        history=losses,
    )
    assert np.mean(losses[-20:]) < 0.5 * losses[0]
    model = modelgen.build_classifier(
        params["embedding"], params["weight"], params["bias"]
    )
    onnx.checker.check_model(model, full_check=True)
    session = ort.InferenceSession(
        model.SerializeToString(), providers=["CPUExecutionProvider"]
    )
    width = max(len(ids[i]) for i in test)
    batch = np.full((len(test), width), 2, dtype=np.int64)
    mask = np.zeros_like(batch)
    for row, i in enumerate(test):
        batch[row, : len(ids[i])], mask[row, : len(ids[i])] = ids[i], 1
    (logits,) = session.run(["logits"], {"input_ids": batch, "attention_mask": mask})
    pooled = np.stack([params["embedding"][ids[i]].mean(axis=0) for i in test])
    expected = pooled @ params["weight"] + params["bias"]
    assert np.abs(logits - expected).max() < 1e-4
    accuracy = np.mean(logits.argmax(axis=1) == np.asarray([labels[i] for i in test]))
    assert accuracy > 3.0 / len(topics)  # chance is 1 / 14


def test_decoder_classifier_matches_numpy_with_padding():
    cfg = modelgen.LMConfig(**TINY)
    weights = modelgen.init_weights(cfg, 3)
    rng = np.random.default_rng(4)
    weight = rng.normal(size=(cfg.hidden_size, 5)).astype(np.float32)
    bias = rng.normal(size=5).astype(np.float32)
    model = modelgen.build_decoder_classifier(cfg, weights, weight, bias)
    onnx.checker.check_model(model, full_check=True)
    assert "lm_head" not in {init.name for init in model.graph.initializer}
    ids = rng.integers(3, cfg.vocab_size, size=(3, 9))
    mask = np.ones_like(ids)
    mask[1, 6:] = 0  # right padding
    mask[2, :] = 0  # no real token: the bias alone
    session = ort.InferenceSession(
        model.SerializeToString(), providers=["CPUExecutionProvider"]
    )
    (logits,) = session.run(["logits"], {"input_ids": ids, "attention_mask": mask})
    # numpy_forward with the classifier weight as its head gives per-token
    # label scores; their masked mean plus the bias is the classifier's output.
    per_token = modelgen.numpy_forward(cfg, {**weights, "lm_head": weight}, ids, mask)
    counts = np.maximum(mask.sum(axis=1, keepdims=True), 1)
    expected = (per_token * mask[..., None]).sum(axis=1) / counts + bias
    assert np.abs(logits - expected).max() < 1e-4
    assert np.allclose(logits[2], bias)
    # The padded row scores as its unpadded prefix alone.
    (alone,) = session.run(
        ["logits"], {"input_ids": ids[1:2, :6], "attention_mask": mask[1:2, :6]}
    )
    assert np.abs(alone[0] - logits[1]).max() < 1e-5
    with pytest.raises(ValueError, match="weight must be"):
        modelgen.build_decoder_classifier(cfg, weights, weight[1:], bias)


def test_write_bundle_lays_out_files_as_optimum(tmp_path, tokenizer):
    cfg = modelgen.LMConfig(**{**TINY, "vocab_size": 320})
    model = modelgen.build_causal_lm(cfg, modelgen.init_weights(cfg, 0), layout="genai")
    raw_before = model.graph.initializer[0].raw_data
    root = modelgen.write_bundle(
        tmp_path / "b",
        model,
        tokenizer,
        cfg.to_hf_config(),
        genai_config=modelgen.genai_config(cfg),
        external_data=True,
    )
    files = {p.name for p in root.iterdir()}
    assert files == {
        "model.onnx",
        "model.onnx.data",
        "tokenizer.json",
        "tokenizer_config.json",
        "config.json",
        "generation_config.json",
        "genai_config.json",
    }
    assert model.graph.initializer[0].raw_data == raw_before  # proto untouched
    assert (root / "model.onnx").stat().st_size < (
        root / "model.onnx.data"
    ).stat().st_size
    generation = json.loads((root / "generation_config.json").read_text())
    assert (generation["bos_token_id"], generation["eos_token_id"]) == (0, 1)
    tok_config = json.loads((root / "tokenizer_config.json").read_text())
    assert tok_config["bos_token"] == "<|bos|>"
    facts = bundle.inspect_bundle(root)
    assert (facts.kind, facts.layout, facts.num_layers) == ("causal_lm_kv", "genai", 2)
    assert facts.external_files == ["model.onnx.data"]
    modelgen.write_bundle(root, model, tokenizer, cfg.to_hf_config())
    assert not (root / "model.onnx.data").exists()  # stale weights removed


def test_demo_models_pipeline_writes_loadable_bundles(tmp_path):
    spec = modelgen.DemoSpec(
        "demo-test", 32, 1, 4, 2, 64, steps=15, lr=3e-3, seq_len=32
    )
    paths = modelgen.demo_models(tmp_path / "a", specs=[spec], include_extras=True)
    assert [p.name for p in paths] == [
        "demo-test",
        "civitas-topic-classifier",
        "civitas-tabular-triage",
    ]
    kinds = [bundle.inspect_bundle(p).kind for p in paths]
    assert kinds == ["causal_lm_kv", "seq_classifier", "generic"]
    record = json.loads((paths[0] / "civitas_training.json").read_text())
    assert record["trained_parameters"] == "all"
    assert len(record["loss_curve"]) == 15
    assert record["heldout_perplexity_trained"] < record["heldout_perplexity_untrained"]
    again = modelgen.demo_models(tmp_path / "b", specs=[spec])
    assert (again[0] / "model.onnx").read_bytes() == (
        paths[0] / "model.onnx"
    ).read_bytes()
