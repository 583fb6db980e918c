"""Portal routes of the governance app, mounted at the site root by config.urls."""

from django.urls import path

from governance.portal import incidents, public

app_name = "governance_portal"

urlpatterns: list = [
    # The public register (its list is the site's home: ``public.urlpatterns``).
    path("register/<int:pk>/", public.register_entry, name="register-entry"),
    path(
        "register/<int:pk>/report/",
        public.incident_report_create,
        name="register-report",
    ),
    path("register.csv", public.register_csv, name="register-csv"),
    # Oversight: citizens' incident reports.
    path("portal/incidents/", incidents.incident_list, name="incident-list"),
    path(
        "portal/incidents/<int:pk>/",
        incidents.incident_detail,
        name="incident-detail",
    ),
]
