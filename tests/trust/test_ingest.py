"""Payloads to rows: TrustyAI's column names from v2 and v1 bodies, and request/response pairing."""

from __future__ import annotations

import base64

import orjson
import pytest

from modelhost import errors
from modelhost.trust.ingest import (
    REQUEST_TYPE,
    RESPONSE_TYPE,
    LoggedPayload,
    PairingBuffer,
    decode_cloudevent,
    decode_consumer_payload,
    decode_upload,
    tensor_columns,
)


def test_v2_tensors_name_columns_as_trustyai_does() -> None:
    columns, rows = tensor_columns(
        [
            {"name": "x", "shape": [2, 3], "datatype": "FP32", "data": [1, 2, 3, 4, 5, 6]},
            {"name": "tag", "shape": [2], "datatype": "BYTES", "data": ["a", "b"]},
            {"name": "flag", "shape": [2, 1], "datatype": "BOOL", "data": [[True], [False]]},
        ],
        "inputs",
    )
    assert rows == 2
    assert columns == {
        "x-0": [1, 4],
        "x-1": [2, 5],
        "x-2": [3, 6],
        "tag": ["a", "b"],
        "flag": [True, False],
    }


@pytest.mark.parametrize(
    ("tensors", "words"),
    [
        ([], "non-empty"),
        ([{"name": "x", "shape": [2], "data": [1]}], "has 1 values for shape"),
        ([{"name": "x", "shape": "2", "data": [1, 2]}], "shape"),
        ([{"shape": [1], "data": [1]}], "name"),
        ([{"name": "x", "shape": [1], "data": [{"a": 1}]}], "holds a dict"),
        ([{"name": "x", "shape": [1], "data": 1}], "data must be a list, not int"),
        ([{"name": "x", "shape": [1, 2], "data": [[1, {"a": 1}]]}], "holds a dict"),
        (
            [{"name": "x", "shape": [1], "data": [1]}, {"name": "y", "shape": [2], "data": [1, 2]}],
            "2 rows",
        ),
    ],
)
def test_bad_tensors_are_refused_naming_why(tensors: object, words: str) -> None:
    with pytest.raises(errors.InvalidInput, match=words):
        tensor_columns(tensors, "inputs")


def test_v1_bodies_give_inputs_and_outputs_columns() -> None:
    request = decode_cloudevent(
        {"type": REQUEST_TYPE, "id": "1", "inferenceservicename": "iris"},
        {"instances": [[1.0, 2.0], [3.0, 4.0]]},
    )
    response = decode_cloudevent(
        {"type": RESPONSE_TYPE, "id": "1", "source": "io.kserve.inference.iris"},
        {"predictions": [0, 1]},
    )
    assert request.columns == {"inputs-0": [1.0, 3.0], "inputs-1": [2.0, 4.0]}
    assert response.columns == {"outputs": [0, 1]}
    assert response.model_id == "iris"


def test_events_without_type_id_or_model_are_refused() -> None:
    body = {"inputs": [{"name": "x", "shape": [1], "data": [1]}]}
    with pytest.raises(errors.InvalidInput, match="neither"):
        decode_cloudevent({"type": "x", "id": "1", "inferenceservicename": "m"}, body)
    with pytest.raises(errors.InvalidInput, match="no id"):
        decode_cloudevent({"type": REQUEST_TYPE, "inferenceservicename": "m"}, body)
    with pytest.raises(errors.InvalidInput, match="names no model"):
        decode_cloudevent({"type": REQUEST_TYPE, "id": "1"}, body)


def _half(payload_id: str, is_request: bool, rows: int = 1) -> LoggedPayload:
    return LoggedPayload(payload_id, "m", is_request, {"c": [1] * rows}, rows)


def test_pairing_matches_by_id_in_either_order_and_drops_the_oldest_past_capacity() -> None:
    buffer = PairingBuffer(capacity=2)
    assert buffer.offer(_half("a", False)) is None  # a response before its request waits
    batch = buffer.offer(_half("a", True))
    assert batch is not None
    assert batch.request_ids == ["a"]
    assert len(buffer) == 0
    for payload_id in ("b", "c", "d"):
        buffer.offer(_half(payload_id, True))
    assert buffer.dropped == 1
    assert buffer.offer(_half("b", False)) is None  # "b" was dropped: this waits in turn
    assert buffer.dropped == 2  # and pushes "c" out
    with pytest.raises(errors.InvalidInput, match="1 request rows and 2 response rows"):
        buffer.offer(_half("d", False, rows=2))


def test_the_consumer_payload_takes_json_or_base64_json() -> None:
    v2 = {"outputs": [{"name": "y", "shape": [1], "data": [0.5]}]}
    plain = decode_consumer_payload({"modelid": "m", "kind": "response", "id": "7", "data": v2})
    encoded = base64.b64encode(orjson.dumps(v2)).decode()
    coded = decode_consumer_payload(
        {"modelid": "m", "kind": "response", "id": "7", "data": encoded}
    )
    assert plain == coded
    with pytest.raises(errors.InvalidInput, match="base64"):
        decode_consumer_payload({"modelid": "m", "kind": "request", "id": "7", "data": "%%"})


def test_uploads_take_a_tag_and_refuse_reserved_ones() -> None:
    body = {
        "model_name": "m",
        "data_tag": "TRAINING",
        "request": {"inputs": [{"name": "x", "shape": [2], "data": [1, 2]}]},
        "response": {"outputs": [{"name": "y", "shape": [2], "data": [0, 1]}]},
    }
    batch = decode_upload(body)
    assert (batch.tag, len(batch)) == ("TRAINING", 2)
    with pytest.raises(errors.InvalidInput, match="reserved"):
        decode_upload({**body, "data_tag": "_trustyai_synthetic"})
