"""Portal routes of the governance app, mounted at the site root by config.urls."""

from django.urls import path

from governance.portal import schedules, suites

app_name = "governance_portal"

urlpatterns: list = [
    path("portal/suites/", suites.suite_list, name="suite-list"),
    path("portal/suites/new/", suites.suite_create, name="suite-create"),
    path("portal/suites/<int:pk>/", suites.suite_detail, name="suite-detail"),
    path("portal/suites/<int:pk>/edit/", suites.suite_edit, name="suite-edit"),
    path("portal/suites/<int:pk>/delete/", suites.suite_delete, name="suite-delete"),
    path(
        "portal/suites/<int:pk>/versions/new/",
        suites.suite_version_create,
        name="suite-version-create",
    ),
    path("portal/schedules/", schedules.schedule_list, name="schedule-list"),
    path("portal/schedules/new/", schedules.schedule_new, name="schedule-create"),
    path(
        "portal/schedules/<int:pk>/", schedules.schedule_detail, name="schedule-detail"
    ),
    path(
        "portal/schedules/<int:pk>/edit/", schedules.schedule_edit, name="schedule-edit"
    ),
    path(
        "portal/schedules/<int:pk>/toggle/",
        schedules.schedule_toggle,
        name="schedule-toggle",
    ),
]
