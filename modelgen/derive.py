"""Models derived from a trained bundle: fine-tuned further, or quantised.

Pure Python over NumPy, ``onnx``, ``tokenizers`` and ONNX Runtime's
quantisation tools; imports nothing of the project but ``modelgen``.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from pathlib import Path


def fine_tune(
    base_dir: Path, dest_dir: Path, texts: list[str], *, seed: int, steps: int
) -> Path:
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
        steps=steps,
        lr=1e-3,
        seed=seed,
        seq_len=32,
        weights=weights,
        history=losses,
    )
    record = {
        "trained_parameters": "all",
        "base": base_dir.name,
        "steps": steps,
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


def quantise(base_dir: Path, dest_dir: Path) -> Path:
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
            # 7-bit weights, as engine.quantise derives: full 8-bit ones
            # saturate ONNX Runtime's int8 kernel on CPUs without VNNI.
            reduce_range=True,
        )
    finally:
        logging.disable(logging.NOTSET)
    return dest_dir


def write_matmul_chain(
    dest_dir: Path, *, layers: int, side: int, noise: float = 0.0, seed: int = 0
) -> Path:
    """A chain of ``layers`` MatMuls by ``side`` x ``side`` float32 matrices.

    The weights live in one external data file, ``weights.bin``, written one
    matrix at a time (memory stays at one matrix). Matrix ``i`` is drawn from
    seed ``i``; ``noise`` adds that much Gaussian noise from seed ``seed + i``,
    so two chains with the same layers differ only by the noise: a base and a
    "fine-tuned" copy of any size, for comparing them by streaming.
    """
    import numpy as np
    from onnx import TensorProto, helper, save

    dest_dir.mkdir(parents=True)
    initializers, nodes = [], []
    offset = 0
    with open(dest_dir / "weights.bin", "wb") as out:
        for layer in range(layers):
            matrix = np.random.default_rng(layer).standard_normal(
                (side, side), dtype=np.float32
            )
            if noise:
                extra = np.random.default_rng(seed + layer)
                matrix += noise * extra.standard_normal((side, side), np.float32)
            data = matrix.tobytes()
            out.write(data)
            del matrix
            tensor = TensorProto(
                name=f"w{layer}", data_type=TensorProto.FLOAT, dims=[side, side]
            )
            tensor.data_location = TensorProto.EXTERNAL
            for key, value in (
                ("location", "weights.bin"),
                ("offset", str(offset)),
                ("length", str(len(data))),
            ):
                tensor.external_data.add(key=key, value=value)
            offset += len(data)
            initializers.append(tensor)
            source = "x" if layer == 0 else f"h{layer - 1}"
            target = "y" if layer == layers - 1 else f"h{layer}"
            nodes.append(helper.make_node("MatMul", [source, f"w{layer}"], [target]))
    graph = helper.make_graph(
        nodes,
        "chain",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, side])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, side])],
        initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    save(model, str(dest_dir / "model.onnx"))
    return dest_dir
