"""The portal's pages of the governance app (server-rendered, docs/portal.md)."""
