"""One error hierarchy for the whole server, mapped here, once, to HTTP and gRPC.

Every failure a client can see is one of these classes; the transports never pick
status codes themselves, they ask :func:`http_status` and :func:`grpc_status_name`.

    ModelhostError                      500  INTERNAL
    ├── InvalidInput                    400  INVALID_ARGUMENT
    │   ├── PayloadTooLarge             413  RESOURCE_EXHAUSTED
    │   ├── HeadersTooLarge             431  RESOURCE_EXHAUSTED  (too many or too long headers)
    │   └── UnsupportedMediaType        415  INVALID_ARGUMENT    (a content encoding we lack)
    ├── ModelNotFound                   404  NOT_FOUND
    ├── ModelNotReady                   503  UNAVAILABLE
    ├── ServerNotReady                  503  UNAVAILABLE
    ├── Overloaded                      429  RESOURCE_EXHAUSTED  (a queue is full: retry later)
    │   ├── RateLimited                 429  RESOURCE_EXHAUSTED  (a token's limit: Retry-After)
    │   └── ServerBusy                  503  UNAVAILABLE         (its own capacity: Retry-After)
    ├── RequestTimeout                  408  DEADLINE_EXCEEDED   (the client sent too slowly)
    ├── Unauthenticated                 401  UNAUTHENTICATED     (no token, or not a valid one)
    ├── PermissionDenied                403  PERMISSION_DENIED   (a valid token, not for this)
    ├── Unsupported                     501  UNIMPLEMENTED
    ├── InferenceError                  500  INTERNAL
    └── ModelLoadError                  500  INTERNAL
        └── StorageError                500  INTERNAL   (a model's files could not be fetched)
            ├── StorageNotFound         404  NOT_FOUND
            ├── StorageAccessDenied     403  PERMISSION_DENIED
            └── StorageUnreachable      503  UNAVAILABLE

Python's own ``NotImplementedError`` maps to 501 / UNIMPLEMENTED (a model without an
explainer raises it), and any other exception to 500 / INTERNAL.
"""

from __future__ import annotations

__all__ = [
    "HeadersTooLarge",
    "InferenceError",
    "InvalidInput",
    "ModelLoadError",
    "ModelNotFound",
    "ModelNotReady",
    "ModelhostError",
    "Overloaded",
    "PayloadTooLarge",
    "PermissionDenied",
    "RateLimited",
    "RequestTimeout",
    "ServerBusy",
    "ServerNotReady",
    "StorageAccessDenied",
    "StorageError",
    "StorageNotFound",
    "StorageUnreachable",
    "Unauthenticated",
    "Unsupported",
    "UnsupportedMediaType",
    "error_message",
    "grpc_status_name",
    "http_status",
]


class ModelhostError(Exception):
    """Base of every error modelhost reports to a client."""

    status_code: int = 500
    grpc_status: str = "INTERNAL"

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason

    def __str__(self) -> str:
        return self.reason


class InvalidInput(ModelhostError):
    """The request is malformed or does not fit the model: the client must change it."""

    status_code = 400
    grpc_status = "INVALID_ARGUMENT"


class PayloadTooLarge(InvalidInput):
    """The request body is larger than the server's configured limit."""

    status_code = 413
    grpc_status = "RESOURCE_EXHAUSTED"


class HeadersTooLarge(InvalidInput):
    """The request line and headers are longer, or more numerous, than the server takes."""

    status_code = 431
    grpc_status = "RESOURCE_EXHAUSTED"


class UnsupportedMediaType(InvalidInput):
    """The body comes in an encoding (or type) the server does not read."""

    status_code = 415


class ModelNotFound(ModelhostError):
    """No model of that name is registered."""

    status_code = 404
    grpc_status = "NOT_FOUND"

    def __init__(self, name: str) -> None:
        super().__init__(f"Model with name {name} does not exist.")
        self.name = name


class ModelNotReady(ModelhostError):
    """The model exists but is not loaded (yet, or any more)."""

    status_code = 503
    grpc_status = "UNAVAILABLE"

    def __init__(self, name: str, detail: str = "") -> None:
        message = f"Model with name {name} is not ready."
        super().__init__(f"{message} {detail}".strip())
        self.name = name


class ServerNotReady(ModelhostError):
    """The server is starting or draining and takes no new work."""

    status_code = 503
    grpc_status = "UNAVAILABLE"


class Overloaded(ModelhostError):
    """Too much work is waiting already (a generation queue is full): retry later."""

    status_code = 429
    grpc_status = "RESOURCE_EXHAUSTED"


class RateLimited(Overloaded):
    """A token's rate or concurrency limit is spent; ``retry_after`` says when to try again."""

    def __init__(self, reason: str, retry_after: float) -> None:
        super().__init__(reason)
        self.retry_after = retry_after


class ServerBusy(Overloaded):
    """The server's own capacity (connections, request bytes in flight) is spent for now.

    503 rather than 429: no client did anything wrong; ``retry_after`` says when to retry.
    """

    status_code = 503
    grpc_status = "UNAVAILABLE"

    def __init__(self, reason: str, retry_after: float = 1.0) -> None:
        super().__init__(reason)
        self.retry_after = retry_after


class RequestTimeout(ModelhostError):
    """The client did not send its request's headers or body in time."""

    status_code = 408
    grpc_status = "DEADLINE_EXCEEDED"


class Unauthenticated(ModelhostError):
    """The request carries no credentials, or ones that are not valid (unknown, expired)."""

    status_code = 401
    grpc_status = "UNAUTHENTICATED"


class PermissionDenied(ModelhostError):
    """The credentials are valid but do not allow this request."""

    status_code = 403
    grpc_status = "PERMISSION_DENIED"


class Unsupported(ModelhostError):
    """The request asks for something this server or model does not implement."""

    status_code = 501
    grpc_status = "UNIMPLEMENTED"


class InferenceError(ModelhostError):
    """The model failed while running a request."""


class ModelLoadError(ModelhostError):
    """A model could not be loaded."""


class StorageError(ModelLoadError):
    """A model's files could not be fetched from its ``storageUri``."""


class StorageNotFound(StorageError):
    """The object, bucket, repository or tag named by the URI does not exist."""

    status_code = 404
    grpc_status = "NOT_FOUND"


class StorageAccessDenied(StorageError):
    """The store refused the credentials (or their absence)."""

    status_code = 403
    grpc_status = "PERMISSION_DENIED"


class StorageUnreachable(StorageError):
    """The store's endpoint did not answer (DNS, refused connection, time-out)."""

    status_code = 503
    grpc_status = "UNAVAILABLE"


def http_status(exc: BaseException) -> int:
    """The HTTP status code a client sees for ``exc``."""
    if isinstance(exc, ModelhostError):
        return exc.status_code
    if isinstance(exc, NotImplementedError):
        return 501
    return 500


def grpc_status_name(exc: BaseException) -> str:
    """The name of the ``grpc.StatusCode`` a client sees for ``exc``."""
    if isinstance(exc, ModelhostError):
        return exc.grpc_status
    if isinstance(exc, NotImplementedError):
        return "UNIMPLEMENTED"
    return "INTERNAL"


def error_message(exc: BaseException) -> str:
    """The message put in ``{"error": ...}``: never empty, never a traceback."""
    text = str(exc)
    if isinstance(exc, ModelhostError):
        return text
    if isinstance(exc, NotImplementedError):
        return text or "Not implemented."
    name = type(exc).__name__
    return f"{name}: {text}" if text else name
