"""The rules' JSON Schema and the validation of a policy's rules.

A policy's ``rules`` is a list validated against
``schemas/policy.schema.json`` (JSON Schema Draft 2020-12) and then by
``validate_rules`` for what a schema cannot say (unique rule ids, SPDX
spelling, known suites, ``min`` <= ``max``). See docs/governance.md, "Policies".
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError as SchemaError

from config.exceptions import DomainError
from governance.models import (
    EvaluationSuite,
)
from registry import licences

SCHEMA_PATH = Path(__file__).resolve().parent.parent / "schemas" / "policy.schema.json"


# --- the schema and rule validation --------------------------------------------


@functools.cache
def schema() -> dict[str, Any]:
    """The published JSON Schema of policy rules (read once per process)."""
    return json.loads(SCHEMA_PATH.read_text("utf-8"))


@functools.cache
def _validator() -> Draft202012Validator:
    Draft202012Validator.check_schema(schema())
    return Draft202012Validator(schema())


def _path(error: SchemaError) -> str:
    """The JSON path of an error below the ``rules`` field: ``rules[0].min``."""
    return "rules" + error.json_path.removeprefix("$")


def _schema_message(error: SchemaError) -> str:
    """A readable message; the combinators' defaults repeat the whole instance."""
    if error.validator == "anyOf" and all(
        "required" in branch for branch in error.validator_value
    ):
        names = ", ".join(
            f"'{branch['required'][0]}'" for branch in error.validator_value
        )
        return f"needs at least one of {names}"
    if error.validator == "not" and "required" in error.validator_value:
        names = " and ".join(f"'{n}'" for n in error.validator_value["required"])
        return f"must not give both {names}"
    return error.message


def _schema_errors(rules: Any) -> list[dict[str, str]]:
    errors = sorted(
        _validator().iter_errors(rules),
        key=lambda e: (list(map(str, e.path)), e.message),
    )
    return [
        {
            "code": f"schema_{e.validator}",
            "message": f"{_path(e)}: {_schema_message(e)}",
        }
        for e in errors
    ]


def _spdx_errors(index: int, rule: dict[str, Any]) -> list[dict[str, str]]:
    errors = []
    for key in ("allow", "deny"):
        for position, identifier in enumerate(rule.get(key, [])):
            where = f"rules[{index}].{key}[{position}]"
            try:
                spelled = licences.normalise(identifier)
            except licences.LicenceExpressionError as exc:
                errors.append({"code": "invalid_licence", "message": f"{where}: {exc}"})
                continue
            if spelled != identifier or " " in spelled:
                errors.append(
                    {
                        "code": "invalid_licence",
                        "message": f"{where}: give one SPDX identifier as SPDX "
                        f"spells it ({spelled!r}), not {identifier!r}",
                    }
                )
    return errors


def _suite_exists(reference: str) -> bool:
    name, _, version = reference.partition("@")
    suites = EvaluationSuite.objects.filter(name=name)
    if version:
        suites = suites.filter(version=version)
    return suites.exists()


def validate_rules(rules: Any) -> None:
    """Check policy rules against the schema, then what the schema cannot say.

    Raises ``DomainError`` (400, code ``invalid_rules``) whose
    ``fields.rules`` lists ``{code, message}`` items; each message starts with
    the JSON path of the offending value, e.g. ``rules[1].min: 'high' is not
    of type 'number'``. Beyond the schema: rule ids are unique within the
    policy, licence identifiers are SPDX identifiers spelled as SPDX does,
    ``min`` does not exceed ``max`` and every suite named exists.
    """
    errors = _schema_errors(rules)
    if not errors:
        seen: dict[str, int] = {}
        for index, rule in enumerate(rules):
            if rule["id"] in seen:
                errors.append(
                    {
                        "code": "duplicate_rule_id",
                        "message": f"rules[{index}].id: '{rule['id']}' is already "
                        f"the id of rules[{seen[rule['id']]}]",
                    }
                )
            seen.setdefault(rule["id"], index)
            if rule["kind"] == "licence":
                errors.extend(_spdx_errors(index, rule))
            if "min" in rule and "max" in rule and rule["min"] > rule["max"]:
                errors.append(
                    {
                        "code": "invalid_bounds",
                        "message": f"rules[{index}].min: {rule['min']} is greater "
                        f"than max {rule['max']}",
                    }
                )
            suite = rule.get("suite")
            if suite and not _suite_exists(suite):
                errors.append(
                    {
                        "code": "unknown_suite",
                        "message": f"rules[{index}].suite: no evaluation suite "
                        f"'{suite}' exists",
                    }
                )
    if errors:
        raise DomainError(
            "The policy rules are not valid; each message starts with the path "
            "of the value at fault.",
            code="invalid_rules",
            fields={"rules": errors},
        )


# --- facts about one use case ----------------------------------------------------
