"""Operational endpoints of the platform (not part of any app's domain)."""

from __future__ import annotations

from celery.result import AsyncResult
from drf_spectacular.utils import OpenApiExample, extend_schema, inline_serializer
from rest_framework import serializers, status
from rest_framework.permissions import IsAdminUser
from rest_framework.response import Response
from rest_framework.views import APIView

from config.celery import app

# By name: config imports no app, and the task lives in ``workers.tasks``.
PING_TASK = "civitas.ping"

_PING_RESULT = inline_serializer(
    "WorkerPing",
    {
        "task_id": serializers.CharField(),
        "state": serializers.CharField(),
        "result": serializers.JSONField(allow_null=True),
    },
)


_TASK_ID = "d9b2d63d-a233-4123-847a-2c3b6f4e8a1e"


class WorkerPingView(APIView):
    """Queue a no-op task whose answer proves a worker is consuming."""

    permission_classes = [IsAdminUser]

    @extend_schema(
        request=None,
        responses={202: _PING_RESULT},
        examples=[
            OpenApiExample(
                "Queued",
                value={"task_id": _TASK_ID, "state": "PENDING", "result": None},
                response_only=True,
                status_codes=["202"],
            )
        ],
    )
    def post(self, request):
        # A diagnostic with no database write: nothing to wait for on commit.
        result = app.send_task(PING_TASK)
        return Response(
            {"task_id": result.id, "state": result.state, "result": None},
            status=status.HTTP_202_ACCEPTED,
        )


class WorkerPingResultView(APIView):
    """Read the answer of a queued worker ping."""

    permission_classes = [IsAdminUser]

    @extend_schema(
        responses={200: _PING_RESULT},
        examples=[
            OpenApiExample(
                "Answered",
                value={
                    "task_id": _TASK_ID,
                    "state": "SUCCESS",
                    "result": {
                        "hostname": "civitas-worker-1",
                        "pid": 4182,
                        "request_id": "8c1e6f0a2b7d4e39",
                    },
                },
                response_only=True,
            )
        ],
    )
    def get(self, request, task_id: str):
        result = AsyncResult(task_id, app=app)
        ready = result.ready()
        return Response(
            {
                "task_id": task_id,
                "state": result.state,
                "result": result.result if ready and result.successful() else None,
            }
        )
