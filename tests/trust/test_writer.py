"""The group-commit writer of logged exchanges: merging, refusals, its bound."""

from __future__ import annotations

import orjson
from trust_support import label_response, row_request

from modelhost.trust.store import InferenceBatch, TrustStore
from modelhost.trust.writer import BatchWriter


async def test_exchanges_are_decoded_merged_and_stored_in_order() -> None:
    store = TrustStore(":memory:")
    written: list[set[str]] = []
    writer = BatchWriter(store, written.append)
    for i in range(50):
        writer.add_exchange("m", f"r{i}", row_request([float(i), 1.0]), label_response(i % 2))
    writer.add(InferenceBatch("other", {"a": [1]}, {"b": [2]}, ["o1"]))
    await writer.settled()
    assert writer.written == 51
    assert store.count("m") == 50
    assert store.read("m", ["x-0"])["x-0"].tolist() == [float(i) for i in range(50)]
    assert set().union(*written) == {"m", "other"}


async def test_a_bad_exchange_is_refused_and_the_others_kept() -> None:
    store = TrustStore(":memory:")
    writer = BatchWriter(store, lambda models: None)
    writer.add_exchange("m", "good-1", row_request([1.0]), label_response(1))
    writer.add_exchange("m", "not-json", b"{", label_response(1))
    writer.add_exchange("m", "rows-differ", row_request([1.0]), orjson.dumps({"outputs": []}))
    writer.add_exchange("m", "good-2", row_request([2.0]), label_response(0))
    await writer.settled()
    assert store.count("m") == 2
    assert writer.refused == 2


async def test_a_batch_that_does_not_fit_the_schema_costs_only_its_own_rows() -> None:
    store = TrustStore(":memory:")
    writer = BatchWriter(store, lambda models: None)
    writer.add(InferenceBatch("m", {"a": [1.0]}, {"b": [1]}, ["1"]))
    await writer.settled()
    writer.add(InferenceBatch("m", {"a": ["text"]}, {"b": [1]}, ["2"]))  # a number column
    writer.add(InferenceBatch("m", {"a": [3.0]}, {"b": [0]}, ["3"]))
    await writer.settled()
    assert store.count("m") == 2
    assert writer.refused == 1


async def test_past_max_pending_rows_are_dropped_and_counted() -> None:
    store = TrustStore(":memory:")
    writer = BatchWriter(store, lambda models: None, max_pending=3)
    for i in range(5):  # queued before the first round runs: the loop has not turned yet
        writer.add_exchange("m", f"r{i}", row_request([1.0]), label_response(1))
    await writer.settled()
    assert writer.dropped == 2
    assert store.count("m") == 3


def test_storing_a_round_pauses_after_each_slice_of_exchanges() -> None:
    """The writer process gives up the CPU between slices of a round (``os.sched_yield``)."""
    store = TrustStore(":memory:")
    writer = BatchWriter(store, lambda models: None)
    exchanges = [("m", f"r{i}", row_request([float(i)]), label_response(1)) for i in range(70)]
    stored_at_pause: list[int] = []

    def pause() -> None:
        stored_at_pause.append(len(store.models()))

    assert writer.store_exchanges(exchanges, pause=pause, every=32) == {"m"}
    # After the 32nd and the 64th exchange decoded, before anything is written.
    assert stored_at_pause == [0, 0]
    assert store.count("m") == 70
