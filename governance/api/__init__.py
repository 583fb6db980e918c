"""The governance REST API: views by sub-domain, mounted by ``urls.py``."""
