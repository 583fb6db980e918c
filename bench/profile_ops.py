"""Where scoring time goes: ONNX Runtime's per-operator totals for a bundle.

Runs the benchmark's scoring shape (``--rows`` x 128 random tokens; the
engine runs a dynamically quantised graph one row at a time, so profile it
with ``--rows 1``) with ``SessionOptions.enable_profiling`` and the engine's
session settings, and prints each operator type's share of kernel time and
its milliseconds per run, then the heaviest nodes. Shares survive other load
on the machine better than absolute times do.

    .venv/bin/python bench/profile_ops.py bench/out/eval_throughput/BUNDLE --rows 8
    .venv/bin/python bench/profile_ops.py bench/out/eval_throughput/BUNDLE-int8 --rows 1
"""

from __future__ import annotations

import argparse
import collections
import json
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SEQ_LEN = 128


def profile(bundle: Path, rows: int, runs: int, threads: int) -> dict:
    """Per-op-type and per-node kernel microseconds over ``runs`` timed runs."""
    import onnxruntime as ort

    from engine import bundle as bundles
    from engine.session import RuntimeSettings

    settings = RuntimeSettings(intra_op_threads=threads)
    facts = bundles.inspect_bundle(bundle)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = settings.resolved_intra_op_threads()
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    opts.enable_profiling = True
    opts.profile_file_prefix = str(Path(tempfile.mkdtemp()) / "ops")
    session = ort.InferenceSession(
        str(bundle / facts.model_file), opts, providers=["CPUExecutionProvider"]
    )
    names = {i.name: i for i in session.get_inputs()}
    vocab = json.loads((bundle / "config.json").read_text()).get("vocab_size", 500)
    ids = np.random.default_rng(0).integers(4, min(500, vocab), (rows, SEQ_LEN))
    feed = {"input_ids": ids, "attention_mask": np.ones_like(ids)}
    if "position_ids" in names:
        feed["position_ids"] = np.tile(np.arange(SEQ_LEN), (rows, 1))
    for name, port in names.items():
        if name.startswith("past"):
            heads, dim = port.shape[1], port.shape[3]
            feed[name] = np.zeros((rows, heads, 0, dim), np.float32)
    wanted = [session.get_outputs()[0].name]
    for _ in range(runs + 1):  # the first run is the warm-up, left out below
        session.run(wanted, feed)
    trace = Path(session.end_profiling())
    events = json.loads(trace.read_text())
    shutil.rmtree(trace.parent, ignore_errors=True)
    kernels = [
        e
        for e in events
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time")
    ]
    per_run = len(kernels) // (runs + 1)
    by_op, by_node = collections.Counter(), collections.Counter()
    for event in kernels[per_run:]:
        by_op[event["args"]["op_name"]] += event["dur"]
        by_node[event["name"].removesuffix("_kernel_time")] += event["dur"]
    return {"by_op": by_op, "by_node": by_node, "runs": runs}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bundle", type=Path)
    parser.add_argument("--rows", type=int, default=8)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0, help="0 = every core")
    parser.add_argument("--top", type=int, default=8, help="heaviest nodes shown")
    args = parser.parse_args()
    result = profile(args.bundle, args.rows, args.runs, args.threads)
    total = sum(result["by_op"].values())
    print(f"{args.bundle.name}: {args.rows} x {SEQ_LEN} tokens per run")
    for op, micro in result["by_op"].most_common():
        ms = micro / 1000 / result["runs"]
        print(f"  {op:28s} {micro / total:6.1%} {ms:9.2f} ms/run")
    print("heaviest nodes:")
    for node, micro in result["by_node"].most_common(args.top):
        print(f"  {node[:60]:60s} {micro / total:6.1%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
