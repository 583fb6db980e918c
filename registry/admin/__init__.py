"""The catalogue in the Django admin, with the tenancy and the rules of the API.

Staff see what ``visible_to`` lets them see (superusers: everything) and may
change only what their agency owns and their role allows. Every write calls
the registry service that the API calls, so the admin leaves the same audit
events and obeys the same rules; a refusal comes back as a form error.
Released model versions and every dataset version are read-only (their
content is immutable) and nothing in the catalogue can be deleted: records
are retired, never removed. A membership is removed through its service.

The admin is split by sub-domain (``agencies``, ``catalogue``) over the
shared base (``base``); importing this package registers every admin.
"""

from registry.admin import agencies, catalogue, identity

__all__ = ["agencies", "catalogue", "identity"]
