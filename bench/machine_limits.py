"""The machine's limits, measured in the same run as the throughputs.

* ``matmul_gflops``: ONNX Runtime fp32 MatMul GFLOP/s of a chain of
  4 x [1024x4096, 4096x1024] with Relu at M = 256 rows, with the engine's
  session settings (the ceiling for scoring);
* ``int8_matmul_gops``: the same chain after ``quantize_dynamic`` (int8
  weights, ``DynamicQuantizeMatMul``), the ceiling for int8 scoring;
* ``bandwidth``: memory read bandwidth (NumPy sgemv and sum, and a one-row
  ORT MatMul) over arrays far larger than L3 (the ceiling for generation).

Limits take the best of their repeats: they are upper bounds.
"""

from __future__ import annotations

import logging
import math
import tempfile
from pathlib import Path

import numpy as np

from bench.baselines import timed

MATMUL_ROWS, MATMUL_K, MATMUL_N, MATMUL_LAYERS = 256, 1024, 4096, 4


def _matmul_chain(rng) -> object:
    """The reference chain 4 x [1024x4096, 4096x1024] with Relu, as a model."""
    from onnx import TensorProto, helper, numpy_helper

    nodes, inits, x = [], [], "x"
    for i in range(MATMUL_LAYERS):
        for j, (k, n) in enumerate(((MATMUL_K, MATMUL_N), (MATMUL_N, MATMUL_K))):
            w = (rng.standard_normal((k, n)) / math.sqrt(k)).astype(np.float32)
            inits.append(numpy_helper.from_array(w, f"w{i}_{j}"))
            mm, out = f"mm{i}_{j}", f"y{i}_{j}"
            nodes.append(helper.make_node("MatMul", [x, f"w{i}_{j}"], [mm], name=mm))
            nodes.append(helper.make_node("Relu", [mm], [out]))
            x = out
    graph = helper.make_graph(
        nodes,
        "matmul_chain",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["m", MATMUL_K])],
        [helper.make_tensor_value_info(x, TensorProto.FLOAT, ["m", MATMUL_K])],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    return model


def _chain_rate(threads: int, repeats: int, *, int8: bool) -> dict:
    """Best and median op/s of the chain, fp32 or dynamically quantised to int8."""
    import onnx

    from engine.session import RuntimeSettings, make_session

    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory(prefix="matmul-chain-") as tmp:
        path = Path(tmp) / "chain.onnx"
        onnx.save_model(_matmul_chain(rng), str(path))
        if int8:
            from onnxruntime.quantization import QuantType, quantize_dynamic

            quantised = Path(tmp) / "chain-int8.onnx"
            logging.disable(logging.WARNING)  # ORT's pre-processing hint
            try:
                quantize_dynamic(path, quantised, weight_type=QuantType.QInt8)
            finally:
                logging.disable(logging.NOTSET)
            path = quantised
        session = make_session(path, RuntimeSettings(intra_op_threads=threads))
    feed = {"x": rng.standard_normal((MATMUL_ROWS, MATMUL_K)).astype(np.float32)}
    # Each run is ~0.1 s: many repeats, so the best one is a true peak.
    times = timed(lambda: session.run(None, feed), limit_repeats(repeats))
    ops = 2.0 * MATMUL_ROWS * MATMUL_K * MATMUL_N * 2 * MATMUL_LAYERS
    return {
        "best": ops / min(times) / 1e9,
        "median": ops / float(np.median(times)) / 1e9,
    }


def matmul_gflops(threads: int, repeats: int) -> dict:
    """Best ORT fp32 GFLOP/s of the reference MatMul chain at M = 256."""
    rate = _chain_rate(threads, repeats, int8=False)
    return {
        "matmul_gflops": rate["best"],
        "matmul_gflops_median": rate["median"],
        "shape": f"{MATMUL_LAYERS} x [{MATMUL_K}x{MATMUL_N}, {MATMUL_N}x{MATMUL_K}]",
        "rows": MATMUL_ROWS,
    }


def int8_matmul_gops(threads: int, repeats: int) -> dict:
    """Best ORT int8 GOP/s of the same chain after ``quantize_dynamic``.

    ONNX Runtime fuses each quantised MatMul into ``DynamicQuantizeMatMul``
    (``MatMulInteger`` where it does not), so this is the ceiling of dynamic
    int8 scoring on this processor (VNNI / AMX where the CPU has them).
    """
    rate = _chain_rate(threads, repeats, int8=True)
    return {"int8_matmul_gops": rate["best"], "int8_matmul_gops_median": rate["median"]}


def limit_repeats(repeats: int) -> int:
    """Repeats for a limit probe: short runs, so at least 10."""
    return max(10, 2 * repeats)


def ort_gemv_gb_s(threads: int, repeats: int, weight_bytes: int) -> float:
    """Best read bandwidth of one ORT MatMul ``[1, K] x [K, N]`` (a decode step)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from engine.session import RuntimeSettings, make_session

    k = 4096
    n = weight_bytes // (4 * k)
    weight = np.full((k, n), 0.001, dtype=np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])],
        "gemv",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, k])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, n])],
        initializer=[numpy_helper.from_array(weight, "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    with tempfile.TemporaryDirectory(prefix="gemv-") as tmp:
        path = Path(tmp) / "gemv.onnx"
        onnx.save_model(
            model, str(path), save_as_external_data=True, location="gemv.data"
        )
        session = make_session(path, RuntimeSettings(intra_op_threads=threads))
    feed = {"x": np.ones((1, k), dtype=np.float32)}
    times = timed(lambda: session.run(None, feed), limit_repeats(repeats))
    return weight.nbytes / min(times) / 1e9


def bandwidth(threads: int, repeats: int, array_bytes: int) -> dict:
    """Best read bandwidth (GB/s) over arrays of ``array_bytes`` (>> L3).

    Three probes, the best counts: NumPy sgemv (BLAS threads limited to
    ``threads``), NumPy sum (one thread), and an ONNX Runtime MatMul with one
    row (what a decode step does) over a weight of half that size.
    """
    cols = 4096
    rows = array_bytes // (4 * cols)
    matrix = np.ones((rows, cols), dtype=np.float32)
    vector = np.ones(cols, dtype=np.float32)
    try:
        from threadpoolctl import threadpool_limits

        limiter = threadpool_limits(limits=threads)
    except ImportError:  # NumPy's BLAS then uses its own thread count
        limiter = None
    try:
        gemv = timed(lambda: matrix @ vector, limit_repeats(repeats))
        total = timed(lambda: matrix.sum(dtype=np.float32), limit_repeats(repeats))
    finally:
        if limiter is not None:
            limiter.restore_original_limits()
    gemv_gb = matrix.nbytes / min(gemv) / 1e9
    sum_gb = matrix.nbytes / min(total) / 1e9
    nbytes = matrix.nbytes
    ort_gb = ort_gemv_gb_s(threads, repeats, array_bytes // 2)
    return {
        "bandwidth_gb_s": max(gemv_gb, sum_gb, ort_gb),
        "sgemv_gb_s": gemv_gb,
        "sum_gb_s": sum_gb,
        "ort_gemv_gb_s": ort_gb,
        "array_mb": round(nbytes / 1e6),
    }
