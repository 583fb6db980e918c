"""The registration self-test of every kind of model, run in the sandboxed child.

Language models: ``CausalLM.selftest`` checks logits shapes, that a
right-padded batch equals the sequences run alone and that a cached step
equals a full recompute. Text classifiers: one forward pass over two short
texts must give one probability row per text, finite and summing to one.
Any other (tensor) model: one forward pass on zero-filled inputs (symbolic
dimensions set to 1) must finish and give tensors.

The bundle is untrusted until it has passed, so ``run_selftest`` runs the
test through ``sandbox.run_isolated`` with the caller's memory and time
limits (a graph that never ends is killed with its process group at the
time limit) and turns every way it can go wrong into one ``SelftestFailure``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from engine.sandbox import EvaluationFailure, run_isolated

SELFTEST_KINDS = frozenset({"causal_lm_kv", "causal_lm", "seq_classifier", "generic"})
_TOKENIZED_KINDS = frozenset({"causal_lm_kv", "causal_lm", "seq_classifier"})
_SHOWN_FIGURES = ("padding_max_abs_diff", "kv_max_abs_diff", "tolerance")
_CLASSIFIER_TEXTS = ("The council meets on Monday.", "Bins are collected weekly.")
_ROW_SUM_TOLERANCE = 1e-3


class SelftestFailure(Exception):
    """A model failed its self-test or the test could not run; ``figures`` if any."""

    def __init__(self, message: str, figures: dict | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.figures = figures or {}


def _classifier_selftest(model: Any) -> dict:
    """One bounded forward pass of a text classifier over two short texts."""
    import numpy as np

    from engine.session import RuntimeCheckError

    probabilities = np.asarray(
        model.predict_proba(list(_CLASSIFIER_TEXTS), batch_size=2), dtype=np.float64
    )
    figures: dict[str, Any] = {
        "kind": "seq_classifier",
        "probabilities_shape": list(probabilities.shape),
    }
    if probabilities.shape != (len(_CLASSIFIER_TEXTS), model.num_labels):
        raise RuntimeCheckError(
            f"expected probabilities of shape [2, {model.num_labels}], got "
            f"{list(probabilities.shape)}",
            figures,
        )
    if not np.isfinite(probabilities).all():
        raise RuntimeCheckError("the probabilities are not finite", figures)
    row_error = float(np.abs(probabilities.sum(axis=1) - 1.0).max())
    figures["row_sum_max_abs_diff"] = row_error
    if row_error > _ROW_SUM_TOLERANCE:
        raise RuntimeCheckError("the probabilities do not sum to one", figures)
    return {**figures, "passed": True}


def _zeros_for(node: Any) -> Any:
    """A zero tensor for one session input, symbolic dimensions set to 1."""
    import numpy as np

    from engine.session import RuntimeCheckError, ports

    port = ports([node])[node.name]
    if port.dtype is None:
        raise RuntimeCheckError(
            f"input '{node.name}' is not a plain tensor ({node.type})"
        )
    shape = [dim if isinstance(dim, int) and dim >= 0 else 1 for dim in port.shape]
    return np.zeros(shape, dtype=port.dtype)


def _tensor_selftest(root: Path, facts: Any) -> dict:
    """One bounded forward pass of any other model on zero-filled inputs."""
    import numpy as np

    from engine.runtime import _fact
    from engine.session import RuntimeSettings, make_session

    model_file = Path(_fact(facts, "model_file", "model.onnx"))
    path = model_file if model_file.is_absolute() else root / model_file
    session = make_session(path, RuntimeSettings())
    feed = {node.name: _zeros_for(node) for node in session.get_inputs()}
    outputs = session.run(None, feed)
    shapes = [list(np.shape(out)) for out in outputs]
    return {"kind": "generic", "passed": True, "output_shapes": shapes}


def selftest_in_child(root: str, facts: Any = None) -> dict:
    """Load the unpacked bundle at ``root`` and return its self-test figures.

    Runs inside the child. A failed check comes back as figures with
    ``passed: false`` and ``error`` (not raised), so the parent sees the
    measurements that failed.
    """
    from engine.causal_lm import CausalLM
    from engine.runtime import SequenceClassifier, _fact, load_model
    from engine.session import RuntimeCheckError

    try:
        if facts is None:
            from engine.bundle import inspect_bundle

            facts = inspect_bundle(Path(root))
        if _fact(facts, "kind", None) not in _TOKENIZED_KINDS:
            return _tensor_selftest(Path(root), facts)
        model = load_model(Path(root), facts=facts)
        if isinstance(model, SequenceClassifier):
            return _classifier_selftest(model)
        if not isinstance(model, CausalLM):
            raise RuntimeCheckError("the bundle is not a causal language model")
        return model.selftest()
    except RuntimeCheckError as exc:
        return {**exc.figures, "passed": False, "error": str(exc)}


def run_selftest(
    root: str | Path,
    *,
    facts: Any = None,
    memory_bytes: int,
    timeout_s: float,
) -> dict:
    """Self-test the unpacked model at ``root`` in a limited child.

    Returns the figures (``passed`` is true). Raises ``SelftestFailure`` with
    a readable message when a check fails, or when the child was refused,
    crashed, ran out of memory or time (a graph that never ends: the child's
    process group is killed at ``timeout_s``).
    """
    try:
        figures = run_isolated(
            selftest_in_child,
            (str(Path(root).resolve()), facts),
            memory_bytes=memory_bytes,
            timeout_s=timeout_s,
            inputs=(root,),
        )
    except EvaluationFailure as exc:
        raise SelftestFailure(
            f"The model's self-test could not complete ({exc.code}): {exc.message}"
        ) from None
    if not isinstance(figures, dict) or figures.get("passed") is not True:
        figures = figures if isinstance(figures, dict) else {}
        shown = ", ".join(
            f"{name}={figures[name]:.3g}"
            for name in _SHOWN_FIGURES
            if isinstance(figures.get(name), int | float)
        )
        error = figures.get("error") or "self-test failed"
        detail = f" ({shown})" if shown else ""
        raise SelftestFailure(
            f"The model failed its self-test: {error}{detail}", figures
        )
    return figures
