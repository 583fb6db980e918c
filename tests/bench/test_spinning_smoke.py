"""``bench/spinning.py`` on a small generated model: every policy, every workload.

Real graphs (fused, dynamic int8, int4 derivations) and real ONNX Runtime;
genai joins only where this interpreter has it (not the project venv).
"""

from __future__ import annotations

import json

from bench import spinning


def test_spinning_bench_reports_each_policy_and_no_idle_cpu_without_always(
    tiny_lm_bundle, capsys
):
    bundle = tiny_lm_bundle
    argv = ["--bundle", str(bundle), "--repeats", "1", "--threads", "2"]
    assert spinning.main([*argv, "--idle", "0.1", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["threads"] == 2
    for name in ("fp32_generation", "int4_generation", "int8_generation"):
        rows = result[name]
        assert set(rows) == {"off", "within", "always"}
        assert rows["off"]["vs_off"] == 1.0
        for row in rows.values():
            assert row["tokens_per_s"] > 0 and row["cpu_ms_per_token"] > 0
        # the pools of "off" and "within" sleep once a call returns
        assert rows["off"]["idle_cores"] < 0.02
        assert rows["within"]["idle_cores"] < 0.02
    assert "int8_generation" in "\n".join(spinning.lines(result))
