"""API pagination: cursors, stable under concurrent inserts, no COUNT(*) scans."""

from rest_framework.exceptions import ErrorDetail, ValidationError
from rest_framework.pagination import CursorPagination as _DRFCursorPagination


class CursorPagination(_DRFCursorPagination):
    """Cursor pagination ordered by ``-id`` unless the view names an ordering.

    ``page_size`` is a whole number from 1; a larger one than ``max_page_size``
    is served as ``max_page_size``. Anything else answers 400, as the schema
    says, instead of being silently replaced by the default.
    """

    ordering = "-id"
    page_size_query_param = "page_size"
    max_page_size = 200

    def get_page_size(self, request):
        raw = request.query_params.getlist(self.page_size_query_param)
        if not raw:
            return self.page_size
        if len(raw) > 1 or not raw[0].isascii() or not raw[0].isdigit():
            raise ValidationError({self.page_size_query_param: _invalid()})
        value = int(raw[0])
        if value < 1:
            raise ValidationError({self.page_size_query_param: _invalid()})
        return min(value, self.max_page_size)

    def get_schema_operation_parameters(self, view):
        parameters = super().get_schema_operation_parameters(view)
        for parameter in parameters:
            if parameter["name"] == self.page_size_query_param:
                parameter["schema"] = {"type": "integer", "minimum": 1}
                parameter["description"] = (
                    f"Rows per page, from 1; more than {self.max_page_size} "
                    f"is served as {self.max_page_size}."
                )
        return parameters


def _invalid():
    return [ErrorDetail("A whole number from 1 is required.", code="invalid")]
