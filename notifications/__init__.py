"""Notifications: per-agency webhooks (Standard Webhooks) and e-mail.

Driven by the audit chain: ``audit.signals.event_recorded`` tells this app
about every committed event; the events in ``notifications.events`` become
signed webhook deliveries for the event's agency and e-mails to the people
concerned. Imports ``audit``, ``registry`` and ``config``; only
``config.urls`` (by string) and ``workers.tasks`` refer to it.
"""
