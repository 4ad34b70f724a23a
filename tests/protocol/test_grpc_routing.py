"""The model a gRPC call names, read from its message's bytes without decoding them."""

from __future__ import annotations

from modelhost.protocol._generated import grpc_predict_v2_pb2 as pb
from modelhost.protocol.grpc_routing import FORWARDED, string_field


def test_string_field_reads_only_the_top_level() -> None:
    hidden = pb.ModelInferRequest(raw_input_contents=[b"\x0a\x04evil"]).SerializeToString()
    named = pb.ModelInferRequest(
        model_name="\u00e9t\u00e9", model_version="1", raw_input_contents=[b"\x0a\x04evil"]
    ).SerializeToString()
    twice = pb.ModelReadyRequest(name="a").SerializeToString() + b"\x0a\x01b"

    assert string_field(hidden, 1) is None
    assert string_field(named, 1) == "\u00e9t\u00e9"
    assert string_field(named, 2) == "1"
    assert string_field(twice, 1) == "b"
    assert string_field(b"", 1) is None
    assert string_field(b"\x0a\x02\xff\xfe", 1) is None  # not UTF-8
    assert string_field(b"\x0a\x80", 1) is None  # varint cut short
    assert string_field(b"\x0b\x0c", 1) is None  # a group


def test_every_forwarded_field_is_the_model_name_field_of_its_request() -> None:
    requests = {
        b"ModelReady": (pb.ModelReadyRequest, "name"),
        b"ModelMetadata": (pb.ModelMetadataRequest, "name"),
        b"ModelInfer": (pb.ModelInferRequest, "model_name"),
        b"RepositoryModelLoad": (pb.RepositoryModelLoadRequest, "model_name"),
        b"RepositoryModelUnload": (pb.RepositoryModelUnloadRequest, "model_name"),
    }
    for method, (message, field) in requests.items():
        assert message.DESCRIPTOR.fields_by_name[field].number == FORWARDED[method]
