"""Standard exports of the registry: written once, published many times.

``record`` gathers one frozen record per model version (and use case);
``model_card``, ``bom``, ``annex_iv`` and ``atrs`` render it; ``services``
produces an export for a reader and records it in the audit chain.
"""
