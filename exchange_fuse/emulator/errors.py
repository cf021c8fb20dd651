"""Graph's error responses: ``{"error": {"code", "message", "innerError"}}``."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime


class GraphError(Exception):
    """An error response; raised anywhere below a route handler, rendered in one place."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        retry_after: int | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.headers = dict(headers or {})
        if retry_after is not None:
            self.headers["Retry-After"] = str(retry_after)

    def body(self, request_id: str, client_request_id: str | None = None) -> dict[str, object]:
        inner: dict[str, object] = {
            "date": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S"),
            "request-id": request_id,
        }
        inner["client-request-id"] = client_request_id or request_id
        return {"error": {"code": self.code, "message": self.message, "innerError": inner}}


def new_request_id() -> str:
    return str(uuid.uuid4())


def item_not_found() -> GraphError:
    return GraphError(
        404,
        "ErrorItemNotFound",
        "The specified object was not found in the store., "
        "The process failed to get the correct properties.",
    )


def folder_not_found() -> GraphError:
    return GraphError(404, "ErrorItemNotFound", "The specified object was not found in the store.")


def invalid_user(address: str) -> GraphError:
    return GraphError(404, "ErrorInvalidUser", f"The requested user '{address}' is invalid.")


def bad_request(message: str, code: str = "BadRequest") -> GraphError:
    return GraphError(400, code, message)


def unknown_property(name: str, type_name: str) -> GraphError:
    return GraphError(
        400,
        "RequestBroker--ParseUri",
        f"Could not find a property named '{name}' on type 'microsoft.graph.{type_name}'.",
    )
