"""The portal's pages of the notifications app (server-rendered, docs/portal.md)."""
