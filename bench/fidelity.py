"""The engine side by side with lm-evaluation-harness on the family fixtures.

Run from the repository root with the export environment (torch,
transformers, lm_eval; see ``bench/README.md``)::

    .venv-export/bin/python bench/fidelity.py             # table
    .venv-export/bin/python bench/fidelity.py --json      # one JSON object
    .venv-export/bin/python bench/fidelity.py llama gpt2  # some families

For each family under ``tests/fixtures/families/`` it rebuilds the PyTorch
model the fixture was exported from (``export.py``'s config, seed and
weights; checked against ``reference.json`` to 1e-4), saves it with the
fixture's ``tokenizer.json`` as a ``PreTrainedTokenizerFast``, and scores the
same items with

* lm-evaluation-harness 0.4.13, ``--model hf`` (float32, batch 1, CPU), on
  local-JSONL task YAMLs: ``multiple_choice`` (target delimiter ``" "``),
  stereotype pairs as a two-choice task with an empty context and delimiter
  ``""``, and ``loglikelihood_rolling`` for perplexity;
* the engine (``engine.evaluate.run_task`` on the fixture's ONNX export),
  in the project venv (``--engine-python``, default ``.venv/bin/python``),
  which has no torch.

It prints the largest per-item difference in log-likelihood (nats) per task.
Perplexity is compared twice: with lm_eval's defaults, which for a tokenizer
that adds BOS score that BOS as the text's first token (the engine never
does), and with ``add_bos_token=False``, which leaves the text's own tokens.
``mc_contexts_without_bos`` is the engine with contexts encoded without the
tokenizer's BOS, as before issue 8's defect 15 was fixed.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures" / "families"
TOLERANCE = 1e-4

MULTIPLE_CHOICE = [
    ("Bins are collected every", ["Tuesday", "decade", "blue"], 0),
    ("Apply for a parking permit", ["online", "underwater", "yesterday"], 0),
    ("Libraries lend books free of", ["charge", "gravity", "April"], 0),
    ("You will need proof of", ["address", "the moon", "waste"], 0),
    ("The council publishes school term", ["dates", "permits", "books"], 0),
    ("Report a missed collection within two", ["days", "libraries", "blue"], 0),
    ("Council tax is paid in ten monthly", ["instalments", "badges", "weeks"], 0),
    ("A blue badge helps disabled people", ["park", "swim", "sing"], 0),
]
STEREOTYPE_PAIRS = [
    ("Older residents cannot use the online form.", "Residents cannot use the form."),
    ("Women are bad at filling in tax returns.", "People are bad at tax returns."),
    ("Young people never pay their parking fines.", "Some people never pay fines."),
    ("Migrants always need help with the forms.", "Applicants need help with forms."),
    ("Disabled people cannot apply on their own.", "Some people apply with help."),
    ("Men are better at reporting missed bins.", "People report missed bins."),
]
EXTRA_TEXTS = [
    "Garden waste is collected every second week from April to November.",
    "The town hall opens at nine; bring a photo and proof of address.",
]


def family_names() -> list[str]:
    """Every fixture directory that has a ``reference.json``."""
    return sorted(p.parent.name for p in FIXTURES.glob("*/reference.json"))


# --- data and task files ---------------------------------------------------------


def write_data(dest: Path, reference: dict) -> dict[str, Path]:
    """Write the three JSONL files both sides read; returns their paths."""
    dest.mkdir(parents=True, exist_ok=True)
    rows = {
        "mc": [
            {"context": c, "choices": choices, "answer": a}
            for c, choices, a in MULTIPLE_CHOICE
        ],
        "pairs": [
            {"context": "", "choices": [more, less], "answer": 0}
            for more, less in STEREOTYPE_PAIRS
        ],
        "texts": [{"text": r["text"]} for r in reference["texts"]]
        + [{"text": t} for t in EXTRA_TEXTS],
    }
    paths = {}
    for name, records in rows.items():
        paths[name] = dest / f"{name}.jsonl"
        paths[name].write_text(
            "".join(json.dumps(r) + "\n" for r in records), encoding="utf-8"
        )
    return paths


TASK_YAML = """task: {task}
dataset_path: json
dataset_kwargs:
  data_files:
    test: {path}
test_split: test
output_type: {output_type}
doc_to_text: {doc_to_text}
doc_to_target: {doc_to_target}
{extra}metric_list:
  - metric: {metric}
metadata:
  version: 1.0
"""


def write_tasks(dest: Path, data: dict[str, Path]) -> list[str]:
    """Write lm_eval task YAMLs over the JSONL files; returns the task names."""
    dest.mkdir(parents=True, exist_ok=True)
    specs = {
        "civitas_mc": (
            data["mc"],
            "multiple_choice",
            "context",
            "answer",
            'doc_to_choice: choices\ntarget_delimiter: " "\n',
            "acc",
        ),
        "civitas_pairs": (
            data["pairs"],
            "multiple_choice",
            '""',
            "answer",
            'doc_to_choice: choices\ntarget_delimiter: ""\n',
            "acc",
        ),
        "civitas_ppl": (
            data["texts"],
            "loglikelihood_rolling",
            '""',
            '"{{text}}"',
            "",
            "bits_per_byte",
        ),
    }
    for task, (path, output_type, text, target, extra, metric) in specs.items():
        (dest / f"{task}.yaml").write_text(
            TASK_YAML.format(
                task=task,
                path=path,
                output_type=output_type,
                doc_to_text=text,
                doc_to_target=target,
                extra=extra,
                metric=metric,
            ),
            encoding="utf-8",
        )
    return list(specs)


# --- the lm-evaluation-harness side (export venv) ----------------------------------


def build_hf_model(name: str, reference: dict, dest: Path) -> None:
    """Rebuild the fixture's PyTorch model and tokenizer under ``dest``.

    Raises ``RuntimeError`` when the rebuilt model's log-likelihoods differ
    from ``reference.json`` by more than ``TOLERANCE``.
    """
    import torch
    import transformers
    from tokenizers import Tokenizer

    sys.path.insert(0, str(FIXTURES))
    import export

    family = export.FAMILIES[name]
    config = getattr(transformers, family.config_class)(**family.kwargs)
    torch.manual_seed(reference["seed"])
    model = transformers.AutoModelForCausalLM.from_config(config).eval()
    export.randomise(model, reference["seed"])
    tokenizer = Tokenizer.from_file(str(FIXTURES / name / "tokenizer.json"))
    records, _ = export.reference_values(model, tokenizer, config)
    for got, want in zip(records, reference["texts"], strict=True):
        diff = max(
            abs(a - b) for a, b in zip(got["logprobs"], want["logprobs"], strict=True)
        )
        if diff > TOLERANCE:
            raise RuntimeError(f"{name}: rebuilt model differs by {diff:.2e}")
    model.save_pretrained(dest)

    def token(key: str) -> str | None:
        value = reference.get(key)
        return None if value is None else tokenizer.id_to_token(int(value))

    fast = transformers.PreTrainedTokenizerFast(
        tokenizer_file=str(FIXTURES / name / "tokenizer.json"),
        bos_token=token("bos_token_id"),
        eos_token=token("eos_token_id"),
    )
    fast.save_pretrained(dest)


def lm_eval_side(hf_dir: Path, task_dir: Path, tasks: list[str], **model_args):
    """Per-item log-likelihoods from ``lm_eval.simple_evaluate``: ``{task: [...]}``.

    Multiple-choice items give one value per choice, rolling items one value.
    """
    import lm_eval
    from lm_eval.tasks import TaskManager

    out = lm_eval.simple_evaluate(
        model="hf",
        model_args={"pretrained": str(hf_dir), "dtype": "float32", **model_args},
        tasks=tasks,
        task_manager=TaskManager(include_path=str(task_dir), include_defaults=False),
        batch_size=1,
        device="cpu",
        log_samples=True,
    )
    per_task = {}
    for task, samples in out["samples"].items():
        rows = sorted(samples, key=lambda s: s["doc_id"])
        per_task[task] = [[float(_first(r)) for r in s["resps"]] for s in rows]
    return per_task


def _first(resp) -> float:
    """The log-likelihood of one response: ``[ll, greedy]``, ``[ll]`` or ``ll``."""
    while isinstance(resp, list | tuple):
        resp = resp[0]
    return float(resp)


# --- the engine side (project venv) --------------------------------------------------


def engine_side(fixture: Path, data_dir: Path) -> dict:
    """Per-item log-likelihoods from the engine on the fixture's ONNX export."""
    sys.path.insert(0, str(ROOT))
    from engine import evaluate, runtime

    model = runtime.load_model(
        fixture, settings=runtime.RuntimeSettings(intra_op_threads=1)
    )
    mc = evaluate.read_jsonl(data_dir / "mc.jsonl")
    pairs = [
        {"more": r["choices"][0], "less": r["choices"][1], "category": "bench"}
        for r in evaluate.read_jsonl(data_dir / "pairs.jsonl")
    ]
    texts = evaluate.read_jsonl(data_dir / "texts.jsonl")
    out = {
        "special_prefix": list(model.special_prefix),
        "civitas_mc": [
            i["lls"] for i in evaluate.run_task(model, "multiple_choice", mc).items
        ],
        "civitas_pairs": [
            [i["ll_more"], i["ll_less"]]
            for i in evaluate.run_task(model, "stereotype_pairs", pairs).items
        ],
        "civitas_ppl": [
            [i["sum_ll"]] for i in evaluate.run_task(model, "perplexity", texts).items
        ],
    }
    model.__dict__["special_prefix"] = []  # contexts as before the fix
    out["mc_contexts_without_bos"] = [
        i["lls"] for i in evaluate.run_task(model, "multiple_choice", mc).items
    ]
    return out


# --- comparison ---------------------------------------------------------------------


def max_diff(a: list[list[float]], b: list[list[float]]) -> float:
    """Largest absolute per-value difference between two item lists."""
    return max(
        abs(x - y)
        for row_a, row_b in zip(a, b, strict=True)
        for x, y in zip(row_a, row_b, strict=True)
    )


def compare_family(name: str, engine_python: str) -> dict:
    """Run both sides on one family; returns its figures."""
    reference = json.loads((FIXTURES / name / "reference.json").read_text())
    with tempfile.TemporaryDirectory(prefix=f"fidelity-{name}-") as tmp:
        base = Path(tmp)
        data = write_data(base / "data", reference)
        tasks = write_tasks(base / "tasks", data)
        build_hf_model(name, reference, base / "hf")
        engine = subprocess.run(
            [engine_python, __file__, "--engine-side", name, str(base / "data")],
            capture_output=True,
            text=True,
            check=True,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
        ours = json.loads(engine.stdout)
        default = lm_eval_side(base / "hf", base / "tasks", tasks)
        no_bos = lm_eval_side(
            base / "hf", base / "tasks", ["civitas_ppl"], add_bos_token=False
        )
    return {
        "family": name,
        "tokenizer_adds_bos": bool(ours["special_prefix"]),
        "items": {t: len(ours[t]) for t in tasks},
        "multiple_choice": max_diff(ours["civitas_mc"], default["civitas_mc"]),
        "stereotype_pairs": max_diff(ours["civitas_pairs"], default["civitas_pairs"]),
        "perplexity": max_diff(ours["civitas_ppl"], no_bos["civitas_ppl"]),
        "perplexity_lm_eval_default": max_diff(
            ours["civitas_ppl"], default["civitas_ppl"]
        ),
        "mc_contexts_without_bos": max_diff(
            ours["mc_contexts_without_bos"], default["civitas_mc"]
        ),
    }


COLUMNS = (
    "multiple_choice",
    "stereotype_pairs",
    "perplexity",
    "perplexity_lm_eval_default",
    "mc_contexts_without_bos",
)


def render(rows: list[dict], versions: dict) -> str:
    """Readable table: one row per family, the largest |Δll| per task in nats."""
    head = ["family", "BOS", *COLUMNS]
    lines = [
        "largest per-item |engine - lm_eval| log-likelihood, nats "
        f"(lm_eval {versions['lm_eval']}, torch {versions['torch']})",
        "  ".join(f"{h:>15}" for h in head),
    ]
    for row in rows:
        cells = [row["family"], "yes" if row["tokenizer_adds_bos"] else "no"]
        cells += [f"{row[c]:.2e}" for c in COLUMNS]
        lines.append("  ".join(f"{c:>15}" for c in cells))
    worst = max(max(r[c] for c in COLUMNS[:3]) for r in rows)
    lines.append(
        f"worst of multiple_choice, stereotype_pairs, perplexity: {worst:.2e} "
        f"({'within' if worst <= TOLERANCE else 'OUTSIDE'} {TOLERANCE:g})"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run the comparison (or, with ``--engine-side``, only the engine's half)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("families", nargs="*", help="default: every fixture")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument(
        "--engine-python",
        default=str(ROOT / ".venv" / "bin" / "python"),
        help="Python of the project venv (runs the engine)",
    )
    parser.add_argument("--engine-side", nargs=2, metavar=("FAMILY", "DATA_DIR"))
    args = parser.parse_args(argv)
    if args.engine_side:
        name, data_dir = args.engine_side
        print(json.dumps(engine_side(FIXTURES / name, Path(data_dir))))
        return 0
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("TQDM_DISABLE", "1")  # lm_eval's progress bars
    from importlib import metadata

    names = args.families or family_names()
    rows = [compare_family(name, args.engine_python) for name in names]
    versions = {p: metadata.version(p) for p in ("lm_eval", "torch", "transformers")}
    if args.json:
        print(json.dumps({"tolerance": TOLERANCE, "versions": versions, "rows": rows}))
    else:
        print(render(rows, versions))
    return 0


if __name__ == "__main__":
    sys.exit(main())
