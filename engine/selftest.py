"""The registration self-test of a language model, run in the sandboxed child.

``CausalLM.selftest`` checks logits shapes, that a right-padded batch equals
the sequences run alone and that a cached step equals a full recompute. The
bundle is untrusted until it has passed, so ``run_selftest`` runs it through
``sandbox.run_isolated`` with the caller's memory and time limits and turns
every way it can go wrong into one ``SelftestFailure``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from engine.sandbox import EvaluationFailure, run_isolated

SELFTEST_KINDS = frozenset({"causal_lm_kv", "causal_lm"})
_SHOWN_FIGURES = ("padding_max_abs_diff", "kv_max_abs_diff", "tolerance")


class SelftestFailure(Exception):
    """A model failed its self-test or the test could not run; ``figures`` if any."""

    def __init__(self, message: str, figures: dict | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.figures = figures or {}


def selftest_in_child(root: str, facts: Any = None) -> dict:
    """Load the unpacked bundle at ``root`` and return its self-test figures.

    Runs inside the child. A failed check comes back as figures with
    ``passed: false`` and ``error`` (not raised), so the parent sees the
    measurements that failed.
    """
    from engine.causal_lm import CausalLM
    from engine.runtime import load_model
    from engine.session import RuntimeCheckError

    try:
        model = load_model(Path(root), facts=facts)
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
    """Self-test the unpacked language model at ``root`` in a limited child.

    Returns the figures (``passed`` is true). Raises ``SelftestFailure`` with
    a readable message when a check fails, or when the child was refused,
    crashed, ran out of memory or time.
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
