"""Admin of the governance app (the audit chain's admin lives in audit.admin)."""

from __future__ import annotations

import governance.decision_admin  # registers its models
import governance.evaluation_admin  # registers its models
import governance.usecase_admin  # noqa: F401  (registers its models)
