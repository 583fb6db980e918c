"""Idempotency-Key for POSTs under /api/ (draft-ietf-httpapi-idempotency-key-header)."""
