"""``bench/classifier.py`` on a small decoder classifier: every layout, real
ONNX Runtime, the real dynamic int8 derivation."""

from __future__ import annotations

import json

import pytest

from bench import classifier


def test_classifier_bench_times_each_layout_and_int8_layouts_agree(tmp_path, capsys):
    argv = ["--layers", "1", "--hidden", "128", "--texts", "6", "--max-length", "32",
            "--batch-size", "4", "--repeats", "1", "--threads", "2",
            "--out-dir", str(tmp_path)]  # fmt: skip
    assert classifier.main([*argv, "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert set(result["runners"]) == set(classifier.RUNNERS)
    for row in result["runners"].values():
        assert row["texts_per_s"] > 0 and row["cpu_ms_per_text"] > 0
    assert result["int8_row_session"] and result["baselines_on_one_session"]
    # the three int8 layouts run the same one-text graphs: same bits
    assert result["int8_layouts_equal"] is True
    assert 0 < result["int8_max_probability_difference"] < 0.2
    assert result["tokens_max"] <= 32 and result["texts"] == 6
    assert result["int8_vs_serial"] > 0 and result["int8_vs_shared_session"] > 0
    # the bundle is reused: a second run writes nothing
    bundle = tmp_path / next(p.name for p in tmp_path.iterdir() if "int8" not in p.name)
    stamp = (bundle / "model.onnx").stat().st_mtime_ns
    assert classifier.main(argv) == 0
    assert (bundle / "model.onnx").stat().st_mtime_ns == stamp
    assert "int8_serial" in capsys.readouterr().out


def test_classifier_bench_rejects_bad_sizes(capsys):
    with pytest.raises(SystemExit):
        classifier.main(["--hidden", "100"])
    assert "multiple of 64" in capsys.readouterr().err
