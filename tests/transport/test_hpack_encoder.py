"""The relay's header blocks, read back by the hpack library's decoder."""

from __future__ import annotations

import hpack

from modelhost.transport.hpack_encoder import encode_headers


def test_encoded_headers_decode_to_themselves_and_leave_the_table_alone() -> None:
    never = hpack.NeverIndexedHeaderTuple(b"authorization", b"secret")
    headers = [
        (b":status", b"200"),  # a static entry
        (b"content-type", b"application/grpc"),  # a static name
        (b"x-custom", b"v" * 300),  # a new name, a value longer than one prefix byte
        never,
    ]
    decoder = hpack.Decoder()

    decoded = decoder.decode(encode_headers(headers), raw=True)

    assert decoded == headers
    assert isinstance(decoded[3], hpack.NeverIndexedHeaderTuple)
    assert len(decoder.header_table.dynamic_entries) == 0
