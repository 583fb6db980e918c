"""API pagination: cursors, stable under concurrent inserts, no COUNT(*) scans."""

from rest_framework.pagination import CursorPagination as _DRFCursorPagination


class CursorPagination(_DRFCursorPagination):
    """Cursor pagination ordered by ``-id`` unless the view names an ordering."""

    ordering = "-id"
    page_size_query_param = "page_size"
    max_page_size = 200
