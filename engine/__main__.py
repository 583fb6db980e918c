"""Offline command line: evaluate an ONNX bundle on one task or a suite.

    python -m engine BUNDLE --task TASK --data FILE.jsonl [--json]
                             [--batch-size N] [--threads N] [--items FILE]
    python -m engine BUNDLE --suite SUITE.json [--json] [--items FILE]

The evaluation runs in a sandboxed child (``sandbox.evaluate_bundle``), the
same path the Celery worker takes. ``--json`` prints one JSON object; without
it a table goes to stdout and a progress bar to stderr. Errors print one line
``error: <code>: <message>`` on stderr and exit with status 2 (bad input) or
1 (failed run).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import NoReturn

from engine import evaluate, sandbox

OUTPUT_KEYS = ("task", "metrics", "performance", "environment")


class _Parser(argparse.ArgumentParser):
    """Argument parser whose errors follow the one-line ``error:`` contract."""

    def error(self, message: str) -> NoReturn:
        """Print ``error: usage: <message>`` and exit with status 2."""
        _fail("usage", message, 2)


def _fail(code: str, message: str, status: int) -> NoReturn:
    one_line = " ".join(str(message).split())
    print(f"error: {code}: {one_line}", file=sys.stderr)
    sys.exit(status)


def build_parser() -> argparse.ArgumentParser:
    """The CLI's argument parser."""
    parser = _Parser(
        prog="python -m engine",
        description="Evaluate an ONNX model bundle offline on CPU.",
    )
    parser.add_argument("bundle", help="bundle directory or .zip/.tar.gz archive")
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--task", choices=evaluate.TASKS, help="run one task")
    what.add_argument("--suite", help="run every task of a SUITE.json")
    parser.add_argument("--data", help="JSONL records for --task")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--batch-size", type=int, default=8, metavar="N")
    parser.add_argument(
        "--threads", type=int, default=0, metavar="N", help="ONNX Runtime threads"
    )
    parser.add_argument(
        "--items", metavar="FILE", help="write per-item results (JSONL)"
    )
    parser.add_argument("--max-new-tokens", type=int, default=48, metavar="N")
    parser.add_argument("--digest", help="expected sha256 of the bundle")
    parser.add_argument(
        "--memory-mb",
        type=int,
        default=sandbox.DEFAULT_MEMORY_BYTES // 2**20,
        metavar="MB",
        help="address-space limit of the evaluation child",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=sandbox.DEFAULT_TIMEOUT_S,
        metavar="S",
        help="wall-clock limit in seconds",
    )
    return parser


def _task_object(result: dict) -> dict:
    return {key: result[key] for key in OUTPUT_KEYS}


def _format_value(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4f}" if abs(value) < 1e6 else f"{value:.4g}"
    return str(value)


def render_table(outcome: dict) -> str:
    """Human-readable summary: metrics then the main performance figures."""
    lines = []
    for result in outcome["results"]:
        perf = result["performance"]
        lines.append(f"== {result['name']} ({result['task']}) ==")
        width = max(len(k) for k in result["metrics"]) if result["metrics"] else 0
        for key, value in result["metrics"].items():
            lines.append(f"  {key:<{width}}  {_format_value(value)}")
        rss_mb = perf["peak_rss_bytes"] / 2**20
        lines.append(
            f"  items {perf['items']}, tokens {perf['tokens']}, "
            f"wall {perf['wall_s']:.2f} s, load {_format_value(perf['model_load_s'])} s"
        )
        lines.append(
            f"  items/s {_format_value(perf['items_per_s'])}, "
            f"tokens/s {_format_value(perf['tokens_per_s'])}, "
            f"latency p50 {_format_value(perf['latency_p50_s'])} s "
            f"p95 {_format_value(perf['latency_p95_s'])} s"
        )
        lines.append(
            f"  peak RSS {rss_mb:.0f} MiB, CPU s/1k tokens "
            f"{_format_value(perf['cpu_s_per_1k_tokens'])}, energy J/1k tokens "
            f"{_format_value(perf['energy_per_1k_tokens_j'])} ({perf['energy_method']})"
        )
    return "\n".join(lines)


class _Bars:
    """One tqdm bar per task, fed by progress events from the child."""

    def __init__(self) -> None:
        self.bars: dict = {}

    def __call__(self, event: dict) -> None:
        from tqdm import tqdm

        name = str(event.get("task"))
        bar = self.bars.get(name)
        if bar is None:
            self.close()
            bar = tqdm(
                total=event.get("total"), desc=name, unit="item", file=sys.stderr
            )
            self.bars[name] = bar
        bar.update(int(event.get("done", 0)) - bar.n)

    def close(self) -> None:
        """Close every bar."""
        for bar in self.bars.values():
            bar.close()


def _write_items(path: str, outcome: dict) -> None:
    with open(path, "w", encoding="utf-8") as fh:
        for result in outcome["results"]:
            for item in result["items"]:
                row = {"task": result["task"], "name": result["name"], **item}
                fh.write(json.dumps(row, ensure_ascii=False) + "\n")


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the exit status (errors exit through ``_fail``)."""
    args = build_parser().parse_args(argv)
    if args.task and not args.data:
        _fail("usage", "--task needs --data FILE.jsonl", 2)
    if args.suite and args.data:
        _fail("usage", "--data goes with --task, not --suite", 2)
    if args.batch_size < 1 or args.threads < 0 or args.memory_mb < 64:
        _fail("usage", "--batch-size >= 1, --threads >= 0, --memory-mb >= 64", 2)
    bars = None if args.json else _Bars()
    try:
        outcome = sandbox.evaluate_bundle(
            args.bundle,
            suite=args.suite,
            task=args.task,
            data=args.data,
            expected_digest=args.digest,
            settings={"intra_op_threads": args.threads},
            memory_bytes=args.memory_mb * 2**20,
            timeout_s=args.timeout,
            batch_size=args.batch_size,
            max_new_tokens=args.max_new_tokens,
            progress=bars,
        )
    except sandbox.EvaluationFailure as exc:
        if bars:
            bars.close()
        _fail(exc.code, exc.message, exc.exit_status)
    if bars:
        bars.close()
    if args.items:
        try:
            _write_items(args.items, outcome)
        except OSError as exc:
            _fail("io_error", f"cannot write {args.items}: {exc.strerror}", 1)
    if args.json:
        if "suite" in outcome:
            doc = {
                "suite": outcome["suite"],
                "tasks": [_task_object(r) for r in outcome["results"]],
            }
        else:
            doc = _task_object(outcome["results"][0])
        print(json.dumps(doc, ensure_ascii=False))
    else:
        print(render_table(outcome))
    return 0


if __name__ == "__main__":
    sys.exit(main())
