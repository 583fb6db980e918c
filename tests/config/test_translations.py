"""The portal is complete in French: every catalogue translated, compiled, current.

For each ``<app>/locale/fr/LC_MESSAGES/django.po`` (and config's own):

- ``msgfmt --check`` accepts it and counts no untranslated or fuzzy message;
- the committed ``django.mo`` is exactly what ``msgfmt`` makes of it, so a
  translation edited without recompiling is caught;
- ``makemessages`` run afresh on a copy of the app finds no message the
  catalogue lacks, so a string added to a template without its French fails.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
from django.core.management import call_command

ROOT = Path(__file__).resolve().parents[2]
CATALOGUES = sorted(ROOT.glob("*/locale/fr/LC_MESSAGES/django.po"))


def _msgids(po: Path) -> set[str]:
    """The message ids of a catalogue (msgctxt folded in), header excluded."""
    text = po.read_text("utf-8")
    ids = set()
    for block in text.split("\n\n"):
        if "#~" in block:
            continue
        match = re.search(r'^msgid ((?:".*"\n?)+)', block, re.M)
        if not match:
            continue
        msgid = "".join(re.findall(r'"(.*)"', match.group(1)))
        context = re.search(r'^msgctxt "(.*)"', block, re.M)
        if msgid:
            ids.add((context.group(1) + "\x04" if context else "") + msgid)
    return ids


def test_every_app_with_portal_templates_has_a_french_catalogue():
    apps = {path.parent.parent for path in ROOT.glob("*/templates/portal")}
    apps |= {ROOT / "config"}
    missing = [
        app.name
        for app in apps
        if not (app / "locale/fr/LC_MESSAGES/django.po").exists()
    ]
    assert missing == []


@pytest.mark.parametrize("po", CATALOGUES, ids=lambda p: p.parts[-5])
def test_catalogue_is_complete_and_compiled(po, tmp_path):
    compiled = tmp_path / "django.mo"
    done = subprocess.run(
        ["msgfmt", "--check", "--statistics", "-o", str(compiled), str(po)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "untranslated" not in done.stderr and "fuzzy" not in done.stderr, done.stderr
    assert compiled.read_bytes() == po.with_suffix(".mo").read_bytes(), (
        f"{po.with_suffix('.mo')} is stale: run msgfmt -o django.mo django.po"
    )


@pytest.mark.parametrize("po", CATALOGUES, ids=lambda p: p.parts[-5])
def test_catalogue_has_every_message_of_its_app(po, tmp_path, monkeypatch, settings):
    app = po.parents[3]
    copy = tmp_path / app.name
    shutil.copytree(
        app, copy, ignore=shutil.ignore_patterns("locale", "__pycache__", "migrations")
    )
    (copy / "locale").mkdir()
    # Only the copy's own catalogue is written, never the checkout's.
    settings.LOCALE_PATHS = []
    monkeypatch.chdir(copy)
    call_command("makemessages", locale=["fr"], verbosity=0, no_obsolete=True)
    fresh = copy / "locale/fr/LC_MESSAGES/django.po"
    missing = _msgids(fresh) - _msgids(po) if fresh.exists() else set()
    assert missing == set(), f"{po} lacks: {sorted(missing)[:10]}"
