"""Bench tests run without Django (``-p no:django``).

The root conftest's autouse fixture needs pytest-django's ``settings``; the
benches serve no static files, so the fixture is overridden with a no-op.
"""

import pytest


@pytest.fixture(autouse=True)
def _django_test_settings():
    """Nothing to configure: the benches never touch Django settings."""


@pytest.fixture
def tiny_lm_bundle(tmp_path):
    """A small generated Llama-shaped bundle (vocabulary 320, width 64)."""
    import modelgen

    texts = ["The council collects garden waste every second week from April."] * 4
    cfg = modelgen.LMConfig(vocab_size=320, hidden_size=64, intermediate_size=128)
    return modelgen.write_lm_bundle(
        tmp_path / "m",
        cfg,
        modelgen.init_weights(cfg, 0),
        modelgen.train_tokenizer(texts, 300),
    )
