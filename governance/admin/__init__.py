"""Admin of the governance app (the audit chain's admin lives in audit.admin).

Split by sub-domain: ``evaluations`` (suites and runs), ``review`` (use
cases, policies, the review queue and the decision records) and
``schedules`` (evaluation schedules and the MLflow outbox) and
``modifications`` (modification assessments, read only) and ``federation``
(trusted peers, imports); importing this
package registers every admin.
"""

from governance.admin import evaluations, federation, modifications, review, schedules

__all__ = ["evaluations", "federation", "modifications", "review", "schedules"]
