"""SPDX licence expressions: parsing, normalisation, terms and compatibility.

Expressions are parsed with ``license-expression`` against the SPDX licence
index bundled with it (ScanCode LicenseDB), so ``apache-2.0 or mit`` becomes
``Apache-2.0 OR MIT`` and deprecated identifiers take their current spelling
(``GPL-2.0`` becomes ``GPL-2.0-only``). Identifiers the index does not know
are refused, naming them; user-defined ``LicenseRef-<idstring>`` identifiers,
which SPDX allows for licences outside its list, are accepted.

What each identifier permits comes from ``TERMS`` below, a short table for
the licences public bodies meet most often. For any other identifier the
bundled index carries no OSI flag, so ``is_osi_approved`` is False, and the
permissions follow the index's category: permissive and public-domain
licences grant commercial use and derivatives; copyleft licences grant both
and require the derivative to carry the same licence; every other category
(source-available, proprietary, unstated, user-defined ``LicenseRef-*``)
grants nothing until a person reviews it.

A ``WITH`` exception only ever adds permissions, so an identifier with an
exception is read as the bare licence. Expressions combine as the ``Licence``
model says: under ``A AND B`` a permission holds only if both grant it and an
obligation (share-alike) applies if either imposes it; under ``A OR B`` the
licensee may choose, so a permission holds if either grants it and an
obligation applies only if both impose it.

The answers screen a catalogue for reviewers; they are not legal advice.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from itertools import product
from typing import TYPE_CHECKING

import license_expression
from boolean.boolean import ParseError

from config.exceptions import DomainError

if TYPE_CHECKING:
    from registry.models import Licence

USER_REF = re.compile(r"^LicenseRef-[A-Za-z0-9.\-]+$")
_REF_PREFIX = re.compile(r"\bLicenseRef-", re.IGNORECASE)

# Share-alike families that EUPL-1.2's appendix and MPL-2.0's "secondary
# licences" let a derivative carry instead of the original licence.
_GNU_FAMILIES = ("GPL-2.0", "GPL-3.0", "AGPL-3.0", "LGPL-2.1", "LGPL-3.0")


@dataclass(frozen=True)
class Terms:
    """What one licence identifier permits and requires.

    ``family`` lists the share-alike families the licence itself offers (two
    for an "or later" GPL, one otherwise; empty for licences without
    share-alike). ``relicensable_as`` lists further families a derivative may
    carry instead, as EUPL-1.2's compatibility appendix allows.
    """

    name: str
    is_osi_approved: bool
    allows_commercial_use: bool
    allows_derivatives: bool
    family: tuple[str, ...] = ()
    relicensable_as: tuple[str, ...] = ()

    @property
    def requires_share_alike(self) -> bool:
        """A licence with a share-alike family binds derivatives to that family."""
        return bool(self.family)


def _permissive(name: str, osi: bool = True) -> Terms:
    return Terms(name, osi, allows_commercial_use=True, allows_derivatives=True)


# The licences met most often in public-sector data and models. Sources: the
# OSI list (opensource.org/licenses), Creative Commons licence deeds, the
# EUPL-1.2 appendix, MPL-2.0 section 3.3, CC's 2015 one-way compatibility of
# CC-BY-SA-4.0 with GPL-3.0, and the OpenRAIL-M use-restriction clause, which
# every derivative must carry.
TERMS: dict[str, Terms] = {
    "Apache-2.0": _permissive("Apache License 2.0"),
    "MIT": _permissive("MIT License"),
    "BSD-2-Clause": _permissive('BSD 2-Clause "Simplified" License'),
    "BSD-3-Clause": _permissive('BSD 3-Clause "New" or "Revised" License'),
    "0BSD": _permissive("BSD Zero Clause License"),
    "ISC": _permissive("ISC License"),
    "Zlib": _permissive("zlib License"),
    "BSL-1.0": _permissive("Boost Software License 1.0"),
    "Unlicense": _permissive("The Unlicense"),
    "CC0-1.0": _permissive("Creative Commons Zero v1.0 Universal", osi=False),
    "PDDL-1.0": _permissive("Open Data Commons Public Domain Dedication", osi=False),
    "CC-BY-4.0": _permissive("Creative Commons Attribution 4.0", osi=False),
    "ODC-By-1.0": _permissive("Open Data Commons Attribution License", osi=False),
    "CDLA-Permissive-2.0": _permissive(
        "Community Data License Agreement Permissive 2.0", osi=False
    ),
    "OGL-UK-3.0": _permissive("Open Government Licence v3.0", osi=False),
    "etalab-2.0": _permissive("Etalab Open License 2.0", osi=False),
    "CC-BY-SA-4.0": Terms(
        "Creative Commons Attribution Share Alike 4.0",
        False,
        True,
        True,
        family=("CC-BY-SA",),
        relicensable_as=("GPL-3.0",),
    ),
    "CC-BY-NC-4.0": Terms(
        "Creative Commons Attribution Non Commercial 4.0",
        False,
        allows_commercial_use=False,
        allows_derivatives=True,
    ),
    "CC-BY-NC-SA-4.0": Terms(
        "Creative Commons Attribution Non Commercial Share Alike 4.0",
        False,
        allows_commercial_use=False,
        allows_derivatives=True,
        family=("CC-BY-NC-SA",),
    ),
    "CC-BY-ND-4.0": Terms(
        "Creative Commons Attribution No Derivatives 4.0",
        False,
        allows_commercial_use=True,
        allows_derivatives=False,
    ),
    "CC-BY-NC-ND-4.0": Terms(
        "Creative Commons Attribution Non Commercial No Derivatives 4.0",
        False,
        allows_commercial_use=False,
        allows_derivatives=False,
    ),
    "GPL-2.0-only": Terms(
        "GNU General Public License v2.0 only", True, True, True, family=("GPL-2.0",)
    ),
    "GPL-2.0-or-later": Terms(
        "GNU General Public License v2.0 or later",
        True,
        True,
        True,
        family=("GPL-2.0", "GPL-3.0"),
    ),
    "GPL-3.0-only": Terms(
        "GNU General Public License v3.0 only", True, True, True, family=("GPL-3.0",)
    ),
    "GPL-3.0-or-later": Terms(
        "GNU General Public License v3.0 or later",
        True,
        True,
        True,
        family=("GPL-3.0",),
    ),
    "LGPL-2.1-only": Terms(
        "GNU Lesser General Public License v2.1 only",
        True,
        True,
        True,
        family=("LGPL-2.1",),
        relicensable_as=("GPL-2.0", "GPL-3.0"),
    ),
    "LGPL-2.1-or-later": Terms(
        "GNU Lesser General Public License v2.1 or later",
        True,
        True,
        True,
        family=("LGPL-2.1", "LGPL-3.0"),
        relicensable_as=("GPL-2.0", "GPL-3.0"),
    ),
    "LGPL-3.0-only": Terms(
        "GNU Lesser General Public License v3.0 only",
        True,
        True,
        True,
        family=("LGPL-3.0",),
        relicensable_as=("GPL-3.0",),
    ),
    "LGPL-3.0-or-later": Terms(
        "GNU Lesser General Public License v3.0 or later",
        True,
        True,
        True,
        family=("LGPL-3.0",),
        relicensable_as=("GPL-3.0",),
    ),
    "AGPL-3.0-only": Terms(
        "GNU Affero General Public License v3.0 only",
        True,
        True,
        True,
        family=("AGPL-3.0",),
    ),
    "AGPL-3.0-or-later": Terms(
        "GNU Affero General Public License v3.0 or later",
        True,
        True,
        True,
        family=("AGPL-3.0",),
    ),
    "MPL-2.0": Terms(
        "Mozilla Public License 2.0",
        True,
        True,
        True,
        family=("MPL-2.0",),
        relicensable_as=_GNU_FAMILIES,
    ),
    "EUPL-1.2": Terms(
        "European Union Public License 1.2",
        True,
        True,
        True,
        family=("EUPL-1.2",),
        relicensable_as=(*_GNU_FAMILIES, "MPL-2.0"),
    ),
    "ODbL-1.0": Terms(
        "Open Data Commons Open Database License v1.0",
        False,
        True,
        True,
        family=("ODbL",),
    ),
    "CDLA-Sharing-1.0": Terms(
        "Community Data License Agreement Sharing 1.0",
        False,
        True,
        True,
        family=("CDLA-Sharing",),
    ),
    "LicenseRef-scancode-bigscience-open-rail-m": Terms(
        "BigScience OpenRAIL-M", False, True, True, family=("OpenRAIL-M",)
    ),
    "LicenseRef-scancode-bigscience-open-rail-m2": Terms(
        "BigScience OpenRAIL-M v2", False, True, True, family=("OpenRAIL-M",)
    ),
    "LicenseRef-scancode-bigcode-open-rail-m-v1": Terms(
        "BigCode OpenRAIL-M v1", False, True, True, family=("OpenRAIL-M",)
    ),
}

_PERMISSIVE_CATEGORIES = {"Permissive", "Public Domain"}
_COPYLEFT_CATEGORIES = {"Copyleft", "Copyleft Limited"}


class LicenceExpressionError(DomainError):
    """An expression that does not parse or names identifiers SPDX does not know."""

    default_code = "invalid_licence"

    def __init__(self, message: str, *, unknown: list[str] | None = None) -> None:
        self.unknown = unknown or []
        super().__init__(
            message,
            fields={"expression": [{"code": self.default_code, "message": message}]},
        )


@dataclass(frozen=True)
class ParsedLicence:
    """A normalised expression with its identifiers and combined terms."""

    expression: str
    spdx_ids: list[str]
    name: str
    is_osi_approved: bool
    allows_commercial_use: bool
    allows_derivatives: bool
    requires_share_alike: bool


@functools.cache
def _licensing() -> license_expression.Licensing:
    """The SPDX licensing of the bundled index (built once per process)."""
    return license_expression.get_spdx_licensing()


@functools.cache
def _categories() -> dict[str, str]:
    """Map each SPDX key of the bundled index, lower-cased, to its category."""
    categories = {}
    for entry in license_expression.get_license_index():
        key = entry.get("spdx_license_key")
        if key:
            categories[key.lower()] = entry.get("category", "")
    return categories


def terms_for(identifier: str) -> Terms:
    """The terms of one identifier: the table, else the index category, else none."""
    if identifier in TERMS:
        return TERMS[identifier]
    category = _categories().get(identifier.lower(), "")
    if category in _PERMISSIVE_CATEGORIES:
        return Terms(identifier, False, True, True)
    if category in _COPYLEFT_CATEGORIES:
        # Without a table entry only the same licence is known to satisfy it.
        return Terms(identifier, False, True, True, family=(identifier,))
    return Terms(identifier, False, False, False)


def _parse(expression: str):
    """Parse to a license-expression tree; raise LicenceExpressionError."""
    text = (expression or "").strip()
    if not text:
        raise LicenceExpressionError("Give an SPDX licence expression, e.g. MIT.")
    if len(text) > 500:
        raise LicenceExpressionError("A licence expression has at most 500 characters.")
    licensing = _licensing()
    try:
        parsed = licensing.parse(text, validate=False, strict=True)
    except (license_expression.ExpressionError, ParseError) as exc:
        raise LicenceExpressionError(
            f"Not a valid SPDX licence expression: {exc}"
        ) from exc
    unknown = [
        key
        for key in licensing.unknown_license_keys(parsed)
        if not USER_REF.match(_REF_PREFIX.sub("LicenseRef-", key))
    ]
    if unknown:
        raise LicenceExpressionError(
            "Unknown SPDX licence identifier(s): "
            + ", ".join(unknown)
            + ". Use identifiers from https://spdx.org/licenses/ or a "
            "LicenseRef-<name> for a licence outside the list.",
            unknown=unknown,
        )
    return licensing.dedup(parsed)


def _base_key(symbol) -> str:
    """The licence identifier of a symbol, without any WITH exception."""
    base = getattr(symbol, "license_symbol", symbol)
    return _REF_PREFIX.sub("LicenseRef-", base.key)


def _combine(node, leaf, *, and_, or_):
    """Fold the expression tree bottom-up with one function per operator."""
    licensing = _licensing()
    if isinstance(node, licensing.AND):
        return and_([_combine(a, leaf, and_=and_, or_=or_) for a in node.args])
    if isinstance(node, licensing.OR):
        return or_([_combine(a, leaf, and_=and_, or_=or_) for a in node.args])
    return leaf(_base_key(node))


def _name(node) -> str:
    """The expression spelled with licence names where the table knows them."""
    return (
        _combine(
            node,
            lambda key: terms_for(key).name,
            and_=lambda parts: "(" + " AND ".join(parts) + ")",
            or_=lambda parts: "(" + " OR ".join(parts) + ")",
        )
        .removeprefix("(")
        .removesuffix(")")
    )


def parse(expression: str) -> ParsedLicence:
    """Normalise an SPDX expression and compute what it permits.

    Raises ``LicenceExpressionError`` (400, ``fields.expression``) when the
    expression does not parse or names identifiers unknown to SPDX.
    """
    tree = _parse(expression)
    normalised = _REF_PREFIX.sub("LicenseRef-", str(tree))
    ids = []
    for symbol in _licensing().license_symbols(tree, unique=True, decompose=True):
        key = _REF_PREFIX.sub("LicenseRef-", symbol.key)
        if key not in ids:
            ids.append(key)

    def flag(attribute: str, *, obligation: bool = False) -> bool:
        # Permissions need every AND branch and any OR branch; obligations the
        # reverse, because the licensee picks the lighter OR branch.
        return _combine(
            tree,
            lambda key: getattr(terms_for(key), attribute),
            and_=any if obligation else all,
            or_=all if obligation else any,
        )

    name = _name(tree)
    return ParsedLicence(
        expression=normalised,
        spdx_ids=ids,
        name="" if name == normalised else name[:300],
        is_osi_approved=flag("is_osi_approved"),
        allows_commercial_use=flag("allows_commercial_use"),
        allows_derivatives=flag("allows_derivatives"),
        requires_share_alike=flag("requires_share_alike", obligation=True),
    )


def normalise(expression: str) -> str:
    """The canonical spelling of an expression; raises ``LicenceExpressionError``."""
    return _REF_PREFIX.sub("LicenseRef-", str(_parse(expression)))


def _alternatives(tree, families_of) -> list[frozenset[str]]:
    """The expression as a choice of family sets (disjunctive normal form)."""

    def leaf(key: str) -> list[frozenset[str]]:
        families = families_of(terms_for(key))
        return [frozenset({f}) for f in families] or [frozenset()]

    def and_(parts):
        return [frozenset().union(*combo) for combo in product(*parts)]

    def or_(parts):
        return [alt for part in parts for alt in part]

    return _combine(tree, leaf, and_=and_, or_=or_)


def compatible(outbound: Licence, inbound: Licence) -> tuple[bool, str]:
    """Whether a work under ``inbound`` may be used to build one under ``outbound``.

    Rules, in order: an inbound licence that forbids derivatives is
    incompatible; an inbound share-alike licence requires the outbound licence
    to carry the same family (or one the inbound licence allows relicensing
    to) whichever way the outbound licensee chooses; a non-commercial inbound
    licence requires a non-commercial outbound licence; otherwise compatible.
    Returns the verdict and one sentence that explains it. Both licences
    must hold normalised expressions (``licence_register`` stores them so).
    """
    if not inbound.allows_derivatives:
        return False, f"{inbound.expression} does not allow derivative works."
    if inbound.requires_share_alike:
        inbound_tree = _parse(inbound.expression)
        outbound_tree = _parse(outbound.expression)
        required = _alternatives(
            inbound_tree, lambda t: (*t.family, *t.relicensable_as)
        )
        offered = _alternatives(outbound_tree, lambda t: t.family)
        # Every licence a downstream user may pick must satisfy one of the
        # inbound choices, or share-alike could be escaped through an OR.
        if not all(any(need <= carried for need in required) for carried in offered):
            return False, (
                f"{inbound.expression} requires derivatives to carry the same "
                f"share-alike licence; {outbound.expression} does not."
            )
    if not inbound.allows_commercial_use and outbound.allows_commercial_use:
        return False, (
            f"{inbound.expression} forbids commercial use; a derivative must not "
            f"be licensed for it, as {outbound.expression} is."
        )
    return True, (
        f"A work under {outbound.expression} may be built from {inbound.expression}."
    )
