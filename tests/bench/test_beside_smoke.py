"""``bench/beside.py`` on a small generated model, under the project venv.

The project venv has neither torch nor onnxruntime-genai, so the engine runs
alone and both baselines are named as left out; with ``.venv-export`` the
eval_throughput smoke test covers the baselines themselves.
"""

from __future__ import annotations

import json

from bench import beside


def test_beside_times_the_engine_and_names_the_baselines_it_lacks(
    tiny_lm_bundle, tmp_path, capsys
):
    bundle = tiny_lm_bundle
    argv = ["--bundle", str(bundle), "--genai-bundle", str(tmp_path / "absent")]
    assert beside.main([*argv, "--repeats", "2", "--idle", "0", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert (result["engine_spinning"], result["rounds"]) == ("within", 2)
    for name in ("scoring", "generation"):
        rows = result[name]["runners"]
        assert list(rows) == ["engine"] and result[name]["ratios"] == {}
        assert rows["engine"]["tokens_per_s"] > 0
        assert rows["engine"]["cpu_ms_per_token"] > 0
        assert len(rows["engine"]["times_s"]) == 2
    assert [why.split(":")[0] for why in result["left_out"]] == ["torch", "genai"]
    table = "\n".join(beside.lines(result))
    assert "scoring     engine" in table and "left out: torch" in table
    line = beside.beside_lines(result)[0]
    assert line.startswith("uploaded graph beside its baselines, timed alternately")
    assert "scoring - (engine:" in line


def test_beside_as_a_phase_explains_a_missing_interpreter(tmp_path):
    assert beside.beside_figures(None, tmp_path, None, None) == {
        "status": "no interpreter with torch or genai"
    }
    line = beside.beside_lines({"status": "no interpreter with torch or genai"})
    assert line == [
        "uploaded graph beside its baselines, timed alternately: "
        "no interpreter with torch or genai"
    ]
