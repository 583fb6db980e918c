"""REST API of the registry, mounted under /api/v1/ by ``registry.api.urls``."""
