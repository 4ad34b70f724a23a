"""Which gRPC method of the inference service is about which model, read from the wire.

A relay routes a call by the model it names before anything decodes it: the method's path
says which field of its first message holds the model's name, and that field is read from
the serialized bytes (tensors are skipped by their lengths, not parsed). This module is
the protocol's half of that (the methods, the fields, the wire format); the relay in
``modelhost.transport`` does the routing.
"""

from __future__ import annotations

__all__ = ["FORWARDED", "SERVICE", "STREAM", "STREAM_MODEL_FIELD", "string_field"]

SERVICE = b"/inference.GRPCInferenceService/"

# Unary methods sent on to a replica, with the number of the string field naming the model
# (0: the method is about the server, not one model).
FORWARDED: dict[bytes, int] = {
    b"ModelReady": 1,
    b"ModelMetadata": 1,
    b"ModelInfer": 1,
    b"ServerMetadata": 0,
    b"RepositoryIndex": 0,
    b"RepositoryModelLoad": 2,
    b"RepositoryModelUnload": 2,
}
# ModelStreamInfer: the whole stream goes to the replica its first message names.
STREAM = b"ModelStreamInfer"
STREAM_MODEL_FIELD = 1


def string_field(data: bytes, field: int) -> str | None:
    """The string in top-level ``field`` of a serialized message, read without decoding it.

    Only the message's top-level tags are walked: other fields, tensors included, are
    skipped by their length. The last occurrence wins, as in protobuf. Malformed bytes,
    an empty string or invalid UTF-8 give None: the replica reports the malformed message.
    """
    found: bytes | None = None
    position, end = 0, len(data)
    try:
        while position < end:
            tag, position = _varint(data, position)
            number, wire_type = tag >> 3, tag & 7
            if wire_type == 0:
                _, position = _varint(data, position)
            elif wire_type == 1:
                position += 8
            elif wire_type == 5:
                position += 4
            elif wire_type == 2:
                length, position = _varint(data, position)
                if position + length > end:
                    return None
                if number == field:
                    found = data[position : position + length]
                position += length
            else:
                return None  # groups: not in this protocol's messages
        if position > end or not found:
            return None
        return found.decode("utf-8")
    except (IndexError, UnicodeDecodeError):
        return None


def _varint(data: bytes, position: int) -> tuple[int, int]:
    """The varint at ``position`` and the position after it; IndexError when cut short."""
    value = shift = 0
    while True:
        byte = data[position]
        position += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, position
        shift += 7
        if shift > 63:
            raise IndexError("varint longer than 10 bytes")
