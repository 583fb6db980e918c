"""Personal API tokens (knox): create with a password, list, revoke.

``POST /api/v1/auth/tokens/`` with HTTP Basic credentials or a signed-in
session returns a new token once; only its SHA-512 digest is stored. It is the
only route that accepts a password: ``GET`` (the caller's live tokens by their
15-character key prefix) and ``DELETE /api/v1/auth/tokens/{token_key}/``
(revoke; the token answers 401 from then on) take a token or a session, and
answer 401 ``basic_refused`` to an HTTP Basic header, as every other route
does. Token requests are counted per client address at the anonymous rate
before authentication, and every password is checked only after an attempt
was taken from the account and the address (``config.authentication``).
"""

from __future__ import annotations

from django.http import Http404
from django.utils import timezone
from drf_spectacular.utils import OpenApiExample, OpenApiResponse, extend_schema
from knox.models import AuthToken
from rest_framework import status
from rest_framework.authentication import BasicAuthentication, SessionAuthentication
from rest_framework.permissions import IsAuthenticated
from rest_framework.response import Response
from rest_framework.throttling import SimpleRateThrottle
from rest_framework.views import APIView

from registry import services
from registry.api.catalogue import BoundedJSONParser, errors
from registry.api.examples import TOKEN, response
from registry.api.permissions import IsPasswordAuthenticated
from registry.api.serializers import (
    ApiErrorSerializer,
    TokenCreatedSerializer,
    TokenSerializer,
)
from registry.read_cache import GenerationTokenAuthentication


class PasswordAttemptThrottle(SimpleRateThrottle):
    """Token requests per client address at the anonymous rate, before any login.

    DRF authenticates before it throttles, so a wrong password would
    otherwise never be counted.
    """

    scope = "anon"
    cache_format = "throttle_password_%(ident)s"

    def get_cache_key(self, request, view) -> str:
        return self.cache_format % {"ident": self.get_ident(request)}


def _live_tokens(user):
    return AuthToken.objects.filter(user=user, expiry__gt=timezone.now()).order_by(
        "-created"
    )


class TokenListCreateView(APIView):
    """List your tokens, or create one with your password."""

    parser_classes = [BoundedJSONParser]

    def get_authenticators(self):
        # Only POST takes a password; Basic first there, so an anonymous
        # caller is told to send a username and password.
        request = getattr(self, "request", None)
        if request is not None and request.method == "POST":
            return [
                BasicAuthentication(),
                GenerationTokenAuthentication(),
                SessionAuthentication(),
            ]
        return super().get_authenticators()

    def get_permissions(self):
        request = getattr(self, "request", None)
        if request is not None and request.method == "POST":
            return [IsPasswordAuthenticated()]
        return [IsAuthenticated()]

    def initial(self, request, *args, **kwargs):
        if request.method == "POST":
            throttle = PasswordAttemptThrottle()
            if not throttle.allow_request(request, self):
                self.throttled(request, throttle.wait())
        super().initial(request, *args, **kwargs)

    @extend_schema(
        summary="List your live tokens (key prefix, created, expiry)",
        responses={200: TokenSerializer(many=True), **errors(401)},
        examples=[response("The token in use", TOKEN)],
    )
    def get(self, request):
        tokens = _live_tokens(request.user)
        context = {"request": request}
        return Response(TokenSerializer(tokens, many=True, context=context).data)

    @extend_schema(
        summary="Create a token with your password (HTTP Basic) or session",
        description=(
            "The token is in this response only; store it. It expires after "
            "`API_TOKEN_TTL_DAYS` (90 days by default). A token cannot create "
            "another token."
        ),
        request=None,
        responses={
            201: TokenCreatedSerializer,
            **errors(401, 403, 409),
            429: OpenApiResponse(
                ApiErrorSerializer,
                description=(
                    "Too many requests from this address (`throttled`), or no "
                    "password attempt left for the account (`account_locked`) "
                    "or the address (`address_locked`); see `Retry-After`"
                ),
            ),
        },
        examples=[
            OpenApiExample(
                "New token",
                value={
                    "token": "3f6c0d3b1c9a4e7f...",
                    "token_key": "3f6c0d3b1c9a4e7",
                    "created": "2026-03-02T09:30:00Z",
                    "expiry": "2026-05-31T09:30:00Z",
                },
                response_only=True,
                status_codes=["201"],
            )
        ],
    )
    def post(self, request):
        instance, secret = services.token_create(actor=request.user)
        body = {
            "token": secret,
            "token_key": instance.token_key,
            "created": instance.created,
            "expiry": instance.expiry,
        }
        return Response(
            TokenCreatedSerializer(body).data, status=status.HTTP_201_CREATED
        )


class TokenRevokeView(APIView):
    """Revoke one of your tokens by its key prefix."""

    parser_classes = [BoundedJSONParser]

    @extend_schema(
        summary="Revoke one of your tokens",
        responses={204: None, **errors(401, 404)},
    )
    def delete(self, request, token_key: str):
        if not services.token_revoke(actor=request.user, token_key=token_key):
            raise Http404
        return Response(status=status.HTTP_204_NO_CONTENT)
