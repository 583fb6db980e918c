"""The portal's pages of the audit app (server-rendered, docs/portal.md)."""
