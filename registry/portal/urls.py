"""Portal routes of the registry app, mounted at the site root by config.urls."""

from django.urls import path

from registry.portal import account

app_name = "registry_portal"

urlpatterns: list = [
    path("portal/account/", account.AccountView.as_view(), name="account"),
]
