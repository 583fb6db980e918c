"""SPDX parsing, normalisation, terms and compatibility (registry.licences)."""

from __future__ import annotations

import pytest

from registry import licences
from registry.models import Licence


def licence(expression: str) -> Licence:
    """An unsaved Licence carrying the computed terms of ``expression``."""
    parsed = licences.parse(expression)
    return Licence(
        expression=parsed.expression,
        spdx_ids=parsed.spdx_ids,
        is_osi_approved=parsed.is_osi_approved,
        allows_commercial_use=parsed.allows_commercial_use,
        allows_derivatives=parsed.allows_derivatives,
        requires_share_alike=parsed.requires_share_alike,
    )


@pytest.mark.parametrize(
    ("given", "normalised"),
    [
        ("apache-2.0 or mit", "Apache-2.0 OR MIT"),
        ("  MIT  ", "MIT"),
        ("(mit)", "MIT"),
        ("GPL-2.0", "GPL-2.0-only"),
        ("gpl-2.0+", "GPL-2.0-or-later"),
        ("mit and mit", "MIT"),
        ("MIT AND Apache-2.0 OR BSD-3-Clause", "(MIT AND Apache-2.0) OR BSD-3-Clause"),
        (
            "gpl-2.0-or-later with classpath-exception-2.0",
            "GPL-2.0-or-later WITH Classpath-exception-2.0",
        ),
        ("licenseref-city-licence", "LicenseRef-city-licence"),
    ],
)
def test_normalise_gives_the_canonical_spelling(given, normalised):
    assert licences.normalise(given) == normalised


def test_unknown_identifiers_are_named_in_the_error():
    with pytest.raises(licences.LicenceExpressionError) as caught:
        licences.parse("MIT OR not-a-licence AND Apache-2.0 OR bogus-1.0")
    assert caught.value.unknown == ["not-a-licence", "bogus-1.0"]
    assert "not-a-licence" in caught.value.message
    assert "bogus-1.0" in caught.value.message
    assert caught.value.status_code == 400
    assert caught.value.fields["expression"][0]["code"] == "invalid_licence"


@pytest.mark.parametrize(
    "bad", ["", "   ", "MIT AND", "MIT WITH Apache-2.0", "MIT/Apache-2.0", "x" * 501]
)
def test_malformed_expressions_are_refused(bad):
    with pytest.raises(licences.LicenceExpressionError):
        licences.parse(bad)


def test_permissive_osi_licence_grants_everything():
    parsed = licences.parse("Apache-2.0")
    assert parsed.spdx_ids == ["Apache-2.0"]
    assert parsed.name == "Apache License 2.0"
    assert parsed.is_osi_approved
    assert parsed.allows_commercial_use and parsed.allows_derivatives
    assert not parsed.requires_share_alike


@pytest.mark.parametrize(
    ("expression", "osi", "commercial", "derivatives", "share_alike"),
    [
        ("CC0-1.0", False, True, True, False),
        ("CC-BY-4.0", False, True, True, False),
        ("CC-BY-SA-4.0", False, True, True, True),
        ("CC-BY-NC-4.0", False, False, True, False),
        ("CC-BY-NC-SA-4.0", False, False, True, True),
        ("CC-BY-ND-4.0", False, True, False, False),
        ("GPL-3.0-only", True, True, True, True),
        ("LGPL-2.1-only", True, True, True, True),
        ("AGPL-3.0-or-later", True, True, True, True),
        ("MPL-2.0", True, True, True, True),
        ("EUPL-1.2", True, True, True, True),
        ("ODbL-1.0", False, True, True, True),
        ("BSD-2-Clause", True, True, True, False),
        ("LicenseRef-scancode-bigscience-open-rail-m", False, True, True, True),
    ],
)
def test_table_terms(expression, osi, commercial, derivatives, share_alike):
    parsed = licences.parse(expression)
    assert (
        parsed.is_osi_approved,
        parsed.allows_commercial_use,
        parsed.allows_derivatives,
        parsed.requires_share_alike,
    ) == (osi, commercial, derivatives, share_alike)


def test_identifier_outside_the_table_follows_its_index_category():
    # OGL-UK-3.0 is in the table; Zlib too. W3C is permissive but not listed.
    permissive = licences.parse("W3C")
    assert not permissive.is_osi_approved  # the bundled index has no OSI flag
    assert permissive.allows_commercial_use and permissive.allows_derivatives
    copyleft = licences.parse("OSL-3.0")
    assert copyleft.requires_share_alike
    source_available = licences.parse("LicenseRef-scancode-llama-3.1-license-2024")
    assert not source_available.allows_commercial_use
    assert not source_available.allows_derivatives


def test_user_defined_licence_ref_grants_nothing_until_reviewed():
    parsed = licences.parse("LicenseRef-city-internal-use")
    assert parsed.spdx_ids == ["LicenseRef-city-internal-use"]
    assert not parsed.is_osi_approved
    assert not parsed.allows_commercial_use
    assert not parsed.allows_derivatives


def test_and_needs_every_permission_and_carries_every_obligation():
    parsed = licences.parse("MIT AND CC-BY-NC-SA-4.0")
    assert not parsed.allows_commercial_use
    assert parsed.requires_share_alike
    assert not parsed.is_osi_approved


def test_or_lets_the_licensee_choose():
    parsed = licences.parse("MIT OR CC-BY-NC-SA-4.0")
    assert parsed.allows_commercial_use
    assert not parsed.requires_share_alike
    assert parsed.is_osi_approved
    both_share_alike = licences.parse("GPL-3.0-only OR CC-BY-SA-4.0")
    assert both_share_alike.requires_share_alike


def test_with_exception_reads_as_the_bare_licence():
    parsed = licences.parse("GPL-2.0-or-later WITH Classpath-exception-2.0")
    assert parsed.spdx_ids == ["GPL-2.0-or-later", "Classpath-exception-2.0"]
    assert parsed.requires_share_alike


@pytest.mark.parametrize(
    ("outbound", "inbound", "ok", "reason"),
    [
        ("Apache-2.0", "MIT", True, "may be built from"),
        ("MIT", "CC-BY-4.0", True, "may be built from"),
        ("MIT", "CC-BY-ND-4.0", False, "does not allow derivative works"),
        ("CC-BY-NC-4.0", "CC-BY-NC-ND-4.0", False, "does not allow derivative"),
        ("MIT", "CC-BY-SA-4.0", False, "same share-alike licence"),
        ("CC-BY-SA-4.0", "CC-BY-SA-4.0", True, "may be built from"),
        ("CC-BY-SA-4.0 AND MIT", "CC-BY-SA-4.0", True, "may be built from"),
        # Share-alike would be escaped by picking MIT.
        ("CC-BY-SA-4.0 OR MIT", "CC-BY-SA-4.0", False, "same share-alike"),
        ("GPL-3.0-only", "CC-BY-SA-4.0", True, "may be built from"),
        ("GPL-3.0-only", "GPL-2.0-or-later", True, "may be built from"),
        ("GPL-2.0-only", "GPL-3.0-only", False, "same share-alike"),
        ("GPL-2.0-or-later", "GPL-2.0-or-later", True, "may be built from"),
        ("GPL-3.0-only", "EUPL-1.2", True, "may be built from"),
        ("EUPL-1.2", "GPL-3.0-only", False, "same share-alike"),
        ("MIT", "CC-BY-NC-4.0", False, "forbids commercial use"),
        ("CC-BY-NC-4.0", "CC-BY-NC-4.0", True, "may be built from"),
        ("CC-BY-NC-SA-4.0", "CC-BY-NC-SA-4.0", True, "may be built from"),
        ("CC-BY-SA-4.0", "CC-BY-NC-SA-4.0", False, "same share-alike"),
        ("Apache-2.0", "MIT OR CC-BY-NC-4.0", True, "may be built from"),
        ("Apache-2.0", "LicenseRef-city-internal-use", False, "derivative"),
    ],
)
def test_compatible(outbound, inbound, ok, reason):
    verdict, sentence = licences.compatible(licence(outbound), licence(inbound))
    assert verdict is ok
    assert reason in sentence
    assert sentence.endswith(".")
