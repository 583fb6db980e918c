"""Governed writes of the governance app, one module per sub-domain."""
