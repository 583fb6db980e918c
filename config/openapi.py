"""The OpenAPI schema class of the API: every operation documents its errors.

Every error the server can send is in the one JSON shape of
``config.exceptions``; this schema class adds, to each operation, the error
status codes any view can answer (authentication, permission, content
negotiation, throttling, validation of query and body, an unknown object or
cursor), so a view's ``extend_schema`` lists only its own success responses
and the errors particular to it (409, a 413 of its own...). An operation's own
entry for a status code always wins. The ``ordering`` parameter is documented
with the fields the list can be ordered by, which is what the server accepts.
"""

from __future__ import annotations

import re

from drf_spectacular.openapi import AutoSchema as _SpectacularAutoSchema
from rest_framework.filters import OrderingFilter

from config.exceptions import ApiErrorSerializer

BODY_METHODS = {"POST", "PUT", "PATCH"}

ERRORS = {
    400: "Invalid query parameters or body, or a broken business rule; "
    "`fields` names the fields",
    401: "No valid token or session",
    403: "Authenticated, but not allowed to do this",
    404: "No such object among those the caller may read, or an unknown cursor",
    406: "None of the media types in Accept can be served",
    413: "The request body is larger than the operation accepts",
    415: "The body's media type is not one the operation accepts",
    429: "Too many requests; retry after the number of seconds in Retry-After",
}


class AutoSchema(_SpectacularAutoSchema):
    """drf-spectacular's AutoSchema with the API's common error responses."""

    def _error_codes(self) -> list[int]:
        codes = [400, 401, 403, 404, 406, 429]
        if self.method in BODY_METHODS:
            codes += [413, 415]
        return codes

    def _error_media_types(self) -> list[str]:
        """JSON, and each media type the view renders: DRF renders an error
        with the renderer the request negotiated (``?format=jsonl``)."""
        types = ["application/json"]
        for media_type in self.map_renderers("media_type"):
            if media_type not in types:
                types.append(media_type)
        return types

    def _get_response_bodies(self, direction="response"):
        responses = super()._get_response_bodies(direction=direction)
        if direction != "response":
            return responses
        for code in self._error_codes():
            if str(code) in responses:
                continue
            response = self._get_response_for_code(
                ApiErrorSerializer,
                str(code),
                media_types=self._error_media_types(),
                direction=direction,
            )
            response["description"] = ERRORS[code]
            responses[str(code)] = response
        return dict(sorted(responses.items()))

    def _ordering_fields(self) -> list[str]:
        fields = getattr(self.view, "ordering_fields", None)
        if isinstance(fields, (list, tuple)):
            return list(fields)
        # DRF's default: the serializer's readable fields backed by the model.
        serializer_class = self.view.get_serializer_class()
        model = serializer_class.Meta.model
        valid = OrderingFilter().get_default_valid_fields(
            model._default_manager.none(), self.view, {"request": None}
        )
        return [name for name, _label in valid]

    def _get_format_parameters(self):
        parameters = super()._get_format_parameters()
        for parameter in parameters:
            # An empty ``?format=`` is the default negotiation, as in DRF.
            parameter["schema"]["enum"] = ["", *parameter["schema"]["enum"]]
        return parameters

    def _get_filter_parameters(self):
        parameters = super()._get_filter_parameters()
        for parameter in parameters:
            if parameter.get("name") != "ordering" or parameter.get("in") != "query":
                continue
            fields = self._ordering_fields()
            term = "-?(?:" + "|".join(re.escape(field) for field in fields) + ")"
            parameter["schema"] = {
                "type": "string",
                "pattern": f"^(?:{term}(?:,{term})*)?$",
            }
            parameter["description"] = (
                "Comma-separated fields to order by, - for descending: "
                + ", ".join(fields)
            )
        return parameters
