"""Measurement: energy labelling, RAPL arithmetic, foreign load, environment."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from engine import ENGINE_VERSION, perf


def burn_cpu(seconds: float = 0.05) -> None:
    """Keep one core busy for about ``seconds`` of CPU time."""
    start = perf.cpu_seconds()
    a = np.random.default_rng(0).random((64, 64))
    while perf.cpu_seconds() - start < seconds:
        a = np.tanh(a @ a.T / 64)


def test_this_machine_has_no_rapl_so_energy_is_an_estimate():
    if perf.read_rapl() is not None:
        pytest.skip("this host exposes RAPL counters")
    with perf.Recorder() as rec:
        burn_cpu()
        rec.tokens = 500
    result = rec.result()
    assert result["energy_method"] == "estimate_cpu_time"
    assert "W per busy core" in result["energy_assumption"]


def test_estimate_is_cpu_seconds_times_watts_per_core(monkeypatch, tmp_path):
    monkeypatch.setenv("CIVITAS_WATTS_PER_CORE", "7.5")
    with perf.Recorder(rapl_root=tmp_path / "absent") as rec:
        burn_cpu()
        rec.tokens = 2000
        rec.item(0.01, 3)
        rec.item(0.03)
    r = rec.result()
    assert r["cpu_s"] > 0
    assert r["watts_per_core"] == 7.5
    assert r["energy_j"] == pytest.approx(r["cpu_s"] * 7.5)
    assert r["energy_per_1k_tokens_j"] == pytest.approx(r["cpu_s"] * 7.5 / 2000 * 1000)
    assert r["cpu_s_per_1k_tokens"] == pytest.approx(r["cpu_s"] / 2000 * 1000)
    assert r["items"] == 4
    assert r["latency_p50_s"] == pytest.approx(0.01)
    assert r["latency_p95_s"] == pytest.approx(np.percentile([0.01] * 3 + [0.03], 95))
    assert r["tokens_per_s"] == pytest.approx(2000 / r["wall_s"])
    assert r["peak_rss_bytes"] >= r["rss_bytes"] > 0
    assert r["peak_rss_method"].startswith("getrusage")


def test_watts_per_core_defaults_to_four_on_bad_values(monkeypatch):
    monkeypatch.delenv("CIVITAS_WATTS_PER_CORE", raising=False)
    assert perf.watts_per_core() == 4.0
    monkeypatch.setenv("CIVITAS_WATTS_PER_CORE", "lots")
    assert perf.watts_per_core() == 4.0
    monkeypatch.setenv("CIVITAS_WATTS_PER_CORE", "-3")
    assert perf.watts_per_core() == 4.0


def write_zone(root: Path, name: str, energy: int, max_range: int = 10**9) -> None:
    zone = root / name
    zone.mkdir(parents=True, exist_ok=True)
    (zone / "energy_uj").write_text(f"{energy}\n")
    (zone / "max_energy_range_uj").write_text(f"{max_range}\n")


def test_rapl_reader_sums_packages_and_ignores_subzones(tmp_path):
    write_zone(tmp_path, "intel-rapl:0", 1_000_000)
    write_zone(tmp_path, "intel-rapl:1", 5_000_000)
    write_zone(tmp_path, "intel-rapl:0:0", 999)  # core sub-zone, inside package 0
    with perf.Recorder(rapl_root=tmp_path) as rec:
        write_zone(tmp_path, "intel-rapl:0", 3_000_000)
        write_zone(tmp_path, "intel-rapl:1", 5_500_000)
        write_zone(tmp_path, "intel-rapl:0:0", 10**8)
        rec.tokens = 100
    r = rec.result()
    assert r["energy_method"] == "rapl"
    assert r["energy_j"] == pytest.approx(2.5)
    assert r["energy_per_1k_tokens_j"] == pytest.approx(25.0)


def test_rapl_counter_wrap_is_handled(tmp_path):
    write_zone(tmp_path, "intel-rapl:0", 999_000_000, max_range=1_000_000_000)
    with perf.Recorder(rapl_root=tmp_path) as rec:
        write_zone(tmp_path, "intel-rapl:0", 500_000, max_range=1_000_000_000)
    assert rec.result()["energy_j"] == pytest.approx(1.5)
    start = {"intel-rapl:0": (999_000_000, 1_000_000_000)}
    end = {"intel-rapl:0": (500_000, 1_000_000_000)}
    assert perf.rapl_delta_joules(start, end) == pytest.approx(1.5)


def test_unreadable_rapl_falls_back_to_the_estimate(tmp_path):
    zone = tmp_path / "intel-rapl:0"
    zone.mkdir()
    (zone / "energy_uj").write_text("not a number")
    (zone / "max_energy_range_uj").write_text("1000")
    assert perf.read_rapl(tmp_path) is None
    with perf.Recorder(rapl_root=tmp_path) as rec:
        pass
    assert rec.result()["energy_method"] == "estimate_cpu_time"


def write_stat(path: Path, user: int, system: int, idle: int) -> None:
    path.write_text(f"cpu  {user} 0 {system} {idle} 0 0 0 0 0 0\ncpu0 0 0 0 0\n")


def test_foreign_load_subtracts_own_cpu_from_machine_busy_time(tmp_path):
    hz = os.sysconf("SC_CLK_TCK")
    stat = tmp_path / "stat"
    clock = iter([100.0, 110.0])
    own = iter([5.0, 9.0])
    write_stat(stat, user=0, system=0, idle=0)
    load = perf.ForeignLoad(
        stat_path=stat,
        cpu_count=2,
        clock=lambda: next(clock),
        self_cpu=lambda: next(own),
    )
    load.start()
    # 10 s wall on 2 CPUs = 20 CPU-s; machine busy 12 s, own 4 s -> foreign 8 s.
    write_stat(stat, user=10 * hz, system=2 * hz, idle=8 * hz)
    assert load.stop() == pytest.approx(8 / 20)


def test_foreign_load_on_the_real_machine_is_a_fraction():
    with perf.ForeignLoad() as load:
        burn_cpu(0.05)
    assert 0.0 <= load.fraction <= 1.0


def test_environment_describes_cpu_libraries_and_settings():
    env = perf.environment({"intra_op_threads": 2})
    assert env["engine_version"] == ENGINE_VERSION
    assert env["cores_available"] >= 1
    assert env["runtime_settings"] == {"intra_op_threads": 2}
    for key in ("onnxruntime", "onnx", "numpy", "tokenizers", "python", "platform"):
        assert env[key]
    if Path("/proc/cpuinfo").exists():
        assert env["cpu_model"]
        assert env["cpu_flags"]


def test_cpu_info_reads_model_signature_and_flags(tmp_path):
    path = tmp_path / "cpuinfo"
    path.write_text(
        "processor\t: 0\nvendor_id\t: GenuineIntel\ncpu family\t: 6\n"
        "model\t\t: 207\nmodel name\t: Intel(R) Xeon(R) Processor\n"
        "stepping\t: 2\nflags\t\t: fpu avx2 fma\n\n"
        "processor\t: 1\nvendor_id\t: Other\nmodel\t\t: 1\n"
        "model name\t: Other\nflags\t\t: fpu\n"
    )
    assert perf.cpu_info(path) == {
        "cpu_model": "Intel(R) Xeon(R) Processor",
        "cpu_signature": "GenuineIntel family 6 model 207 stepping 2",
        "cpu_flags": ["fpu", "avx2", "fma"],
    }


def test_cpu_info_reads_an_arm_signature_and_survives_no_file(tmp_path):
    path = tmp_path / "cpuinfo"
    path.write_text(
        "processor\t: 0\nFeatures\t: fp asimd sve\nCPU implementer\t: 0x41\n"
        "CPU architecture: 8\nCPU variant\t: 0x1\nCPU part\t: 0xd40\n"
        "CPU revision\t: 1\n"
    )
    info = perf.cpu_info(path)
    assert info["cpu_signature"] == "implementer 0x41 part 0xd40 variant 0x1 revision 1"
    assert info["cpu_flags"] == ["fp", "asimd", "sve"]
    missing = perf.cpu_info(tmp_path / "absent")
    assert (missing["cpu_signature"], missing["cpu_flags"]) == (None, [])


def test_processor_describes_this_machine_or_a_recorded_environment():
    recorded = {
        "cpu_model": "Intel(R) Xeon(R) Processor",
        "cpu_signature": "GenuineIntel family 6 model 207 stepping 2",
        "cpu_flags": ["fpu", "avx512_vnni", "avx2", "amx_int8"],
        "cores_available": 2,
    }
    cpu = perf.processor(recorded)
    assert cpu == {
        "model": "Intel(R) Xeon(R) Processor",
        "signature": "GenuineIntel family 6 model 207 stepping 2",
        "cores": 2,
        "flags": ["avx2", "avx512_vnni", "amx_int8"],
    }
    assert perf.describe_processor(cpu) == (
        "Intel(R) Xeon(R) Processor, GenuineIntel family 6 model 207 stepping 2 "
        "(2 cores; avx2 avx512_vnni amx_int8)"
    )
    older = perf.processor({"cpu_model": "X", "cpu_flags": [], "cores_available": 1})
    assert perf.describe_processor(older) == "X (1 cores; no listed ISA features)"
    here = perf.processor()
    assert here["cores"] >= 1
    assert here == perf.processor({**perf.cpu_info(), "cores_available": here["cores"]})
