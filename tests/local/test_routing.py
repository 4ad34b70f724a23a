"""The gateway's route table and traffic split, without sockets."""

from __future__ import annotations

import itertools
from collections import Counter

from modelhost.control import Route
from modelhost.local.routing import RouteTable, WeightedChoice
from modelhost.transport.http1_upstream import strip_port


def test_weighted_choice_deals_exact_shares_evenly() -> None:
    choice = WeightedChoice([("canary", 10), ("stable", 90)])
    picks = [choice.next() for _ in range(100)]
    assert Counter(picks) == {"canary": 10, "stable": 90}
    # Evenly: the canary never comes twice within a window of 10.
    positions = [i for i, pick in enumerate(picks) if pick == "canary"]
    assert all(b - a == 10 for a, b in itertools.pairwise(positions))


def test_weighted_choice_skips_zero_shares_and_may_be_empty() -> None:
    assert WeightedChoice([("rolled-back", 0), ("stable", 100)]).items == [("stable", 100)]
    assert {WeightedChoice([("a", 0), ("b", 100)]).next() for _ in range(5)} == {"b"}
    assert WeightedChoice([]).next() is None


def test_host_routes_win_over_path_routes_and_paths_match_whole() -> None:
    table = RouteTable(
        [
            (
                Route(
                    "explainer", host="iris.default.example.com", path=r"/v1/models/[\w-]+:explain"
                ),
                "explainer",
            ),
            (Route("transformer", host="iris.default.example.com"), "transformer"),
            (Route("predictor", host="iris-predictor.default.example.com"), "predictor"),
            (Route("transformer", path=r"/v1/models/iris(:[a-z]+)?"), "by-path"),
            (Route("transformer", path=r"/openai/.*", model="iris"), "openai"),
        ]
    )
    assert table.match("iris.default.example.com", "/v1/models/iris:explain") == "explainer"
    assert table.match("iris.default.example.com", "/v1/models/iris:predict") == "transformer"
    assert table.match("iris.default.example.com", "/anything") == "transformer"
    assert table.match("iris-predictor.default.example.com", "/v2/health/ready") == "predictor"
    assert table.match("localhost", "/v1/models/iris:predict") == "by-path"
    assert table.match("localhost", "/v1/models/iris") == "by-path"
    assert table.match("localhost", "/v1/models/iris2:predict") is None
    assert table.needs_model("/openai/v1/completions")
    assert not table.needs_model("/v1/models/iris:predict")
    assert table.match("localhost", "/openai/v1/completions", model="iris") == "openai"
    assert table.match("localhost", "/openai/v1/completions", model="other") is None


def test_strip_port() -> None:
    assert strip_port("iris.default.example.com:8080") == "iris.default.example.com"
    assert strip_port("iris.default.example.com") == "iris.default.example.com"
    assert strip_port("[::1]:8080") == "[::1]"
