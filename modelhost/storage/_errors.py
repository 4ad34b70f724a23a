"""One reading of what the storage clients raise: not found, access denied, or unreachable.

boto, aiohttp, gcsfs and the Azure SDK each spell the same three failures differently (a
``ClientError`` code, a ``status``, a ``status_code``, an ``OSError`` subclass, a cause hidden
behind a ``FileNotFoundError``). The sources hand whatever they caught to
:func:`storage_error`, which walks the exception and its causes and returns the typed
``StorageError`` a user can act on, naming the URI, the endpoint and the credentials used.
Only class names and attributes are read, so no client library is imported here.
"""

from __future__ import annotations

import dataclasses
import socket
from collections.abc import Iterator

from modelhost import errors

__all__ = ["ArchiveTooLarge", "StoreContext", "missing_extra", "storage_error"]

# Exception class names (anywhere in the MRO) that mean the endpoint did not answer.
_UNREACHABLE_NAMES = frozenset(
    {
        "EndpointConnectionError",  # botocore
        "ConnectTimeoutError",  # botocore
        "ReadTimeoutError",  # botocore
        "ClientConnectorError",  # aiohttp (refused, DNS, TLS handshake)
        "ServerDisconnectedError",  # aiohttp
        "ServerTimeoutError",  # aiohttp
        "ServiceRequestError",  # azure-core: the request could not be sent
        "ServiceResponseError",  # azure-core: no response came back
    }
)
# Exception class names that mean no usable credentials were found or accepted.
_DENIED_NAMES = frozenset(
    {
        "NoCredentialsError",  # botocore: nothing in the credential chain
        "PartialCredentialsError",  # botocore
        "CredentialRetrievalError",  # botocore
        "ClientAuthenticationError",  # azure-core / azure-identity
        "DefaultCredentialsError",  # google-auth
        "RefreshError",  # google-auth: a token could not be obtained
    }
)
# Error codes (S3 XML, Azure x-ms-error-code) that mean the credentials were refused.
_DENIED_CODES = frozenset(
    {
        "AccessDenied",
        "AllAccessDisabled",
        "AccountIsDisabled",
        "AuthenticationFailed",
        "AuthorizationFailure",
        "AuthorizationPermissionMismatch",
        "ExpiredToken",
        "InvalidAccessKeyId",
        "InvalidToken",
        "NoAuthenticationInformation",
        "SignatureDoesNotMatch",
    }
)
_NOT_FOUND_CODES = frozenset(
    {"BlobNotFound", "ContainerNotFound", "NoSuchBucket", "NoSuchKey", "NotFound", "404"}
)


class ArchiveTooLarge(errors.StorageError):
    """A fetched archive unpacks past ``StorageSettings``' limits: a decompression bomb, or a
    model larger than this machine was configured to take (500 / INTERNAL, as any
    ``StorageError``; the message names the limit and the variable that raises it)."""


@dataclasses.dataclass(frozen=True)
class StoreContext:
    """What an error message names besides the URI: the store, its endpoint, the credentials.

    ``credentials`` names environment variables, never their values.
    """

    store: str
    endpoint: str
    credentials: str


def storage_error(exc: BaseException, uri: str, context: StoreContext) -> errors.StorageError:
    """The typed ``StorageError`` for ``exc``, raised while reading ``uri``."""
    if isinstance(exc, errors.StorageError):
        return exc
    chain = list(_causes(exc))
    detail = _detail(chain)
    if any(_unreachable(e) for e in chain):
        return errors.StorageUnreachable(
            f"{uri}: cannot reach {context.store} at {context.endpoint} ({detail})."
        )
    if any(_denied(e) for e in chain):
        return errors.StorageAccessDenied(
            f"{uri}: {context.store} refused access ({detail}). "
            f"Credentials used: {context.credentials}; endpoint: {context.endpoint}."
        )
    if any(_not_found(e) for e in chain):
        return errors.StorageNotFound(
            f"{uri}: not found on {context.store} at {context.endpoint} ({detail})."
        )
    return errors.StorageError(f"{uri}: {context.store} failed: {detail}.")


def missing_extra(uri: str, module: str, extra: str) -> errors.StorageError:
    """The error for a scheme whose client library is not installed."""
    return errors.StorageError(
        f"{uri}: fetching it needs the {module!r} package: pip install 'modelhost[{extra}]'."
    )


def _causes(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        # aiohttp keeps the socket error in an attribute, not in the cause chain.
        os_error = getattr(current, "os_error", None)
        if isinstance(os_error, BaseException) and id(os_error) not in seen:
            seen.add(id(os_error))
            yield os_error
        # Follow what a traceback shows: the explicit cause, else the implicit context.
        if current.__cause__ is not None or current.__suppress_context__:
            current = current.__cause__
        else:
            current = current.__context__


def _names(exc: BaseException) -> set[str]:
    return {cls.__name__ for cls in type(exc).__mro__}


def _status(exc: BaseException) -> int | None:
    for attribute in ("status", "status_code", "code"):
        value = getattr(exc, attribute, None)
        if isinstance(value, int) and not isinstance(value, bool) and 100 <= value < 600:
            return value
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if isinstance(status, int):
            return status
    return None


def _code(exc: BaseException) -> str | None:
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        code = response.get("Error", {}).get("Code")
        if isinstance(code, str):
            return code
    code = getattr(exc, "error_code", None)
    return str(code) if code else None


def _unreachable(exc: BaseException) -> bool:
    if isinstance(exc, (ConnectionError, TimeoutError, socket.gaierror)):
        return True
    return bool(_names(exc) & _UNREACHABLE_NAMES)


def _denied(exc: BaseException) -> bool:
    if isinstance(exc, PermissionError) or _names(exc) & _DENIED_NAMES:
        return True
    return _status(exc) in (401, 403) or _code(exc) in _DENIED_CODES


def _not_found(exc: BaseException) -> bool:
    if isinstance(exc, FileNotFoundError):
        return True
    return _status(exc) == 404 or _code(exc) in _NOT_FOUND_CODES


def _detail(chain: list[BaseException]) -> str:
    """The most specific message in the chain: the innermost one that says something."""
    for exc in reversed(chain):
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        if text:
            return f"{type(exc).__name__}: {text[:300]}"
    return type(chain[0]).__name__
