"""Civitas evaluation engine: ONNX bundles scored on CPU, pure Python, no Django.

Modules: ``bundle`` (validation), ``runtime`` (sessions and model adapters),
``modelgen`` (tiny fixture models), ``metrics`` (formulas), ``evaluate`` (task
runners), ``perf`` (time, memory, energy), ``sandbox`` (child process and limits)
and ``__main__`` (the offline command line).
"""

ENGINE_VERSION = "1.0.0"
