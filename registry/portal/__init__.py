"""The portal's pages of the registry app (server-rendered, docs/portal.md)."""
