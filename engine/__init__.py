"""Civitas evaluation engine: ONNX bundles scored on CPU, pure Python, no Django.

Modules: ``archive`` (safe extraction of uploads), ``bundle`` (static ONNX
inspection), ``session`` (ONNX Runtime sessions and their cache), ``causal_lm``
(the language-model adapter), ``runtime`` (the other adapters and
``load_model``), ``metrics`` (formulas), ``evaluate`` (task runners),
``suites`` (suite files and running a suite), ``perf`` (time, memory,
energy), ``sandbox`` (child process and limits), ``selftest`` (the
registration self-test) and ``__main__`` (the offline command line). The
engine imports nothing of the project (not even ``modelgen``).
"""

ENGINE_VERSION = "1.0.0"
