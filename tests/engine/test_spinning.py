"""Session thread spinning: off, within runs only, always.

``spin_within_runs`` lets ONNX Runtime's pool threads spin between the
operators of one run and stops them when it returns
(``session.force_spinning_stop``): the session's config shows it, results
equal those of a session that never spins, no CPU is burnt between runs,
and graphs quantised at run time score their one-row runs (on concurrent
caller threads) on a second session that has one thread and never spins.
Real models from ``modelgen``, real ONNX Runtime; run without Django:
``pytest tests/engine/test_spinning.py -p no:django``.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import modelgen
from engine import runtime, session
from engine.quantise import Derivation, quantise_graph

THREADS = 2
ROOT = Path(__file__).resolve().parents[2]


def _entry(made, key: str) -> str | None:
    try:
        return made.get_session_options().get_session_config_entry(key)
    except Exception:  # onnxruntime raises when the key was never set
        return None


@pytest.fixture(scope="module")
def lm(tmp_path_factory):
    texts = [t for _, t in modelgen.corpus_documents()]
    cfg = modelgen.LMConfig(
        vocab_size=320,
        hidden_size=64,
        num_layers=2,
        num_heads=4,
        num_kv_heads=2,
        intermediate_size=128,
        max_position_embeddings=64,
    )
    return modelgen.write_lm_bundle(
        tmp_path_factory.mktemp("spin") / "lm",
        cfg,
        modelgen.init_weights(cfg, 5),
        modelgen.train_tokenizer(texts, 300),
    )


@pytest.fixture(scope="module")
def int8_lm(lm, tmp_path_factory):
    dest = tmp_path_factory.mktemp("spin-int8") / "lm"
    shutil.copytree(lm, dest, ignore=shutil.ignore_patterns("model.onnx*"))
    quantise_graph(
        lm / "model.onnx", dest / "model.onnx", Derivation("dynamic-int8"), feeds=None
    )
    return dest


@pytest.mark.parametrize(
    ("mode", "intra", "stop"),
    [("off", "0", None), ("within", "1", "1"), ("always", "1", None)],
)
def test_each_mode_sets_the_session_config(lm, mode, intra, stop):
    settings = session.RuntimeSettings.spinning(THREADS, mode)
    assert settings.to_dict()["spin_within_runs"] is (mode == "within")
    made = session.make_session(lm / "model.onnx", settings)
    assert _entry(made, "session.intra_op.allow_spinning") == intra
    assert _entry(made, "session.force_spinning_stop") == stop
    assert _entry(made, "session.inter_op.allow_spinning") == (
        "1" if mode == "always" else "0"
    )


def test_an_unknown_mode_is_refused():
    with pytest.raises(ValueError, match="off, within, always"):
        session.RuntimeSettings.spinning(THREADS, "sometimes")


def test_within_runs_gives_the_results_of_no_spinning(lm):
    off = runtime.load_model(lm, settings=session.RuntimeSettings(THREADS))
    within = runtime.load_model(
        lm, settings=session.RuntimeSettings.spinning(THREADS, "within")
    )
    assert within.settings.spin_within_runs is True
    prompt = within.encode("The council collects garden waste")
    assert within.generate(prompt, max_new_tokens=12, stop_ids=()) == off.generate(
        prompt, max_new_tokens=12, stop_ids=()
    )
    requests = [([], within.encode(t)) for t in ("Apply online.", "The bins go out.")]
    a = [ll for ll, _, _ in within.loglikelihood(requests, batch_size=2)]
    b = [ll for ll, _, _ in off.loglikelihood(requests, batch_size=2)]
    np.testing.assert_allclose(a, b, rtol=1e-6)


def test_no_cpu_is_burnt_between_runs(lm):
    model = runtime.load_model(
        lm, settings=session.RuntimeSettings.spinning(THREADS, "within")
    )
    prompt = model.encode("Household waste is collected every Tuesday")
    for _ in range(3):
        model.generate(prompt, max_new_tokens=16, stop_ids=())
        cpu = time.process_time()
        time.sleep(0.3)
        # The pool threads sleep once a run returns: nothing runs while this
        # thread sleeps (measured 0.0001 s; always-spinning threads 0.013-0.027).
        assert time.process_time() - cpu < 0.005


def test_graphs_quantised_at_run_time_score_rows_on_a_session_that_never_spins(
    lm, int8_lm
):
    within = session.RuntimeSettings.spinning(THREADS, "within")
    cache = session.SessionCache()
    model = runtime.load_model(int8_lm, settings=within, cache=cache)
    assert model.dynamic_quantisation is True
    # Generation keeps the caller's settings; nothing else is opened yet.
    assert model.settings == within
    assert _entry(model.session, "session.force_spinning_stop") == "1"
    assert len(cache) == 1
    texts = ("Apply online.", "The bins go out.", "Garden waste on Tuesday.")
    requests = [([], model.encode(t)) for t in texts]
    scored = model.loglikelihood(requests, batch_size=3)
    # The one-row runs went to a second, single-threaded session from the cache.
    assert len(cache) == 2
    misses = cache.misses
    rows = cache.get(
        f"path:{(int8_lm / 'model.onnx').resolve()}",
        int8_lm / "model.onnx",
        within.for_concurrent_runs(),
        0,
    )
    assert cache.misses == misses and rows is not model.session
    assert rows.get_session_options().intra_op_num_threads == 1
    assert _entry(rows, "session.intra_op.allow_spinning") == "0"
    assert _entry(rows, "session.force_spinning_stop") is None
    # The same figures, to the bit, as one thread scoring the rows one by one.
    alone = runtime.load_model(int8_lm, settings=session.RuntimeSettings(1))
    assert scored == alone.loglikelihood(requests, batch_size=3)
    fp32 = runtime.load_model(lm, settings=within, cache=cache)
    fp32.loglikelihood(requests, batch_size=3)
    assert fp32.settings == within and len(cache) == 3


def test_without_room_for_a_second_session_the_rows_share_the_first(
    lm, int8_lm, monkeypatch
):
    within = session.RuntimeSettings.spinning(THREADS, "within")
    cache = session.SessionCache()
    model = runtime.load_model(int8_lm, settings=within, cache=cache)
    requests = [([], model.encode(t)) for t in ("Apply online.", "Bins go out.")]
    # Under an address-space limit with less room than a session is charged.
    monkeypatch.setattr(runtime, "address_space_headroom", lambda: 1024)
    scored = model.loglikelihood(requests, batch_size=2)
    assert len(cache) == 1 and model._row_session is None
    monkeypatch.undo()
    # It is not tried again; the figures are those of any other layout.
    assert model.loglikelihood(requests, batch_size=2) == scored
    assert len(cache) == 1
    roomy = runtime.load_model(int8_lm, settings=within, cache=cache)
    assert roomy.loglikelihood(requests, batch_size=2) == scored
    assert len(cache) == 2


def test_address_space_headroom_reads_the_limit_and_the_mapped_size():
    script = (
        "import resource; from engine.session import address_space_headroom as h\n"
        "assert h() is None\n"
        "resource.setrlimit(resource.RLIMIT_AS, (8 << 30, resource.RLIM_INFINITY))\n"
        "room = h(); print(room)\n"
        "assert 0 < room < 8 << 30\n"
        "import numpy; block = numpy.ones(1 << 28, numpy.uint8)\n"
        "assert h() <= room - (1 << 28)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
