"""CloudEvents on the v1 protocol, in binary (``ce-*`` headers) and structured mode.

Decoding and encoding go through the ``cloudevents`` SDK; the response event's type and
source follow KServe (``io.kserve.inference.response``, ``io.kserve.inference.<model>``).
The SDK is imported by the first event: a server that never sees one (most) starts without it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import orjson

from modelhost import errors

if TYPE_CHECKING:
    from cloudevents.core.base import BaseCloudEvent

__all__ = ["RESPONSE_TYPE", "STRUCTURED_TYPE", "decode", "encode_response", "is_cloudevent"]

RESPONSE_TYPE = "io.kserve.inference.response"
STRUCTURED_TYPE = "application/cloudevents+json"


def is_cloudevent(headers: Mapping[str, str]) -> bool:
    """True for a structured-mode body or a binary-mode request (``ce-specversion``)."""
    content_type = headers.get("content-type", "")
    return content_type.startswith(STRUCTURED_TYPE) or "ce-specversion" in headers


def decode(headers: Mapping[str, str], body: bytes) -> tuple[BaseCloudEvent, Any]:
    """The event, and its data decoded from JSON where it is JSON."""
    from cloudevents.core.bindings import http
    from cloudevents.core.exceptions import BaseCloudEventException

    try:
        event = http.from_http_event(http.HTTPMessage(dict(headers), body))
    except (BaseCloudEventException, ValueError, TypeError, KeyError, AttributeError) as exc:
        # AttributeError: the SDK reads a structured body that is not an object (a list).
        raise errors.InvalidInput(f"Invalid CloudEvent: {exc}") from None
    data = event.get_data()
    # The SDK has parsed JSON data already (structured mode, or a JSON content type) and
    # left anything else as bytes.
    decoded = not isinstance(data, (bytes, bytearray))
    if isinstance(data, (bytes, bytearray)):
        with contextlib.suppress(orjson.JSONDecodeError):
            data, decoded = orjson.loads(data), True
    if decoded and not isinstance(data, dict):
        # Bytes that are not JSON reach the model as they came (as in KServe); JSON that
        # is not an object is no v1 request at all.
        raise errors.InvalidInput(
            'CloudEvent data must be a JSON object with "instances" or "inputs", '
            f"not a JSON {type(data).__name__}."
        )
    return event, data


def encode_response(
    request_event: BaseCloudEvent, model_name: str, data: Any, structured: bool
) -> tuple[dict[str, str], bytes]:
    """Headers and body of the response event, in the mode the request used."""
    from cloudevents.core.bindings import http
    from cloudevents.core.v1.event import CloudEvent

    plain = orjson.loads(orjson.dumps(data, option=orjson.OPT_SERIALIZE_NUMPY))
    attributes = {
        "type": RESPONSE_TYPE,
        "source": f"io.kserve.inference.{model_name}",
        "datacontenttype": "application/json",
        "requestid": request_event.get_id(),
    }
    event = CloudEvent(attributes=attributes, data=plain)
    message = http.to_structured_event(event) if structured else http.to_binary_event(event)
    return {k.lower(): str(v) for k, v in message.headers.items()}, message.body
