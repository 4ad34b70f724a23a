"""Request ids are random version 4 UUIDs, written as ``str(uuid.uuid4())`` writes them."""

from __future__ import annotations

import uuid

from modelhost.protocol.request_ids import RequestIds


def test_an_id_is_a_version_4_uuid_in_its_canonical_text() -> None:
    ids = RequestIds(seed=7)
    for _ in range(2_000):
        text = ids.new()
        parsed = uuid.UUID(text)
        assert parsed.version == 4
        assert parsed.variant == uuid.RFC_4122
        assert str(parsed) == text


def test_ids_do_not_repeat_and_differ_between_generators() -> None:
    first, second = RequestIds(), RequestIds()
    drawn = {first.new() for _ in range(10_000)}
    assert len(drawn) == 10_000
    assert second.new() not in drawn


def test_a_seed_gives_the_same_ids_again() -> None:
    assert [RequestIds(seed=1).new() for _ in range(3)] == [RequestIds(seed=1).new()] * 3
    one, other = RequestIds(seed=1), RequestIds(seed=1)
    assert [one.new() for _ in range(5)] == [other.new() for _ in range(5)]
