"""The gateway's route table and traffic split, without sockets."""

from __future__ import annotations

import itertools
import re
from collections import Counter

import pytest

from modelhost.control import Route
from modelhost.local.routing import CompiledRoute, RouteTable, WeightedChoice
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


def _first_match(
    routes: list[tuple[Route, str]], host: str, path: str, model: str | None
) -> str | None:
    """The rule that wins, by trying every rule in the table's order: the table's contract."""
    ordered = [r for r in routes if r[0].host is not None] + [
        r for r in routes if r[0].host is None
    ]
    for route, target in ordered:
        if route.host is not None and route.host != host:
            continue
        if route.path is not None and re.fullmatch(route.path, path) is None:
            continue
        if route.model is None or route.model == model:
            return target
    return None


def _service_routes(name: str, explainer: bool, escape: bool = False) -> list[tuple[Route, str]]:
    """A service's rules as the plan writes them (``escape``: its name through ``re.escape``,
    as the plan does: ``b\\-c``; else as written, ``b-c``)."""
    host = f"{name}.default.example.com"
    pattern = re.escape(name) if escape else name
    routes = []
    if explainer:
        routes.append(
            (Route("explainer", host=host, path=r"/v1/models/[\w-]+:explain"), f"{name}/e")
        )
        routes.append((Route("explainer", path=rf"/v1/models/{pattern}:explain"), f"{name}/e-path"))
    routes += [
        (Route("predictor", host=host), f"{name}/host"),
        (Route("predictor", path=rf"/v1/models/{pattern}(:[a-z]+)?"), f"{name}/v1"),
        (Route("predictor", path=rf"/v2/models/{pattern}(/.*)?"), f"{name}/v2"),
        (Route("predictor", path=r"/openai/.*", model=name), f"{name}/openai"),
    ]
    return routes


def test_the_table_answers_as_trying_every_rule_in_order_would() -> None:
    names = ["iris", "iris-2", "iris2", "a", "b-c", "x", "d.e", "f-g"]
    routes = [r for i, name in enumerate(names) for r in _service_routes(name, i % 2 == 0, i >= 4)]
    # An unescaped dot is any character: such a rule is bound to no one model path.
    routes.insert(12, (Route("predictor", path=r"/v2/models/d.e(/.*)?"), "any-dot"))
    # Rules no model path binds: an alternation, a pattern for any name, a catch-all.
    routes.insert(5, (Route("predictor", path=r"/v1/models/b-c:explain|/special"), "alt"))
    routes.insert(9, (Route("predictor", path=r"/openai/x|/v2/models/x/ready"), "alt-2"))
    routes.append((Route("predictor", path=r"/v2/models/[a-z]+/ready"), "any-ready"))
    routes.append((Route("predictor", path=r"/v2/models/iris:?x"), "optional-colon"))
    routes.append((Route("predictor", path=r"/v2/.*"), "v2-any"))
    table = RouteTable(routes)
    hosts = ["localhost", "iris.default.example.com", "iris2.default.example.com", "nobody"]
    paths = [
        "/",
        "/special",
        "/v1/models/iris",
        "/v1/models/iris:predict",
        "/v1/models/iris:explain",
        "/v1/models/iris-2:explain",
        "/v1/models/iris2:predict",
        "/v1/models/iris:predict/extra",
        "/v1/models/b-c:explain",
        "/v1/models/nobody:predict",
        "/v2/models/iris",
        "/v2/models/iris/infer",
        "/v2/models/iris-2/ready",
        "/v2/models/x/versions/1/infer",
        "/v2/models/x/ready",
        "/v2/models/irisx",
        "/openai/x",
        "/v2/models/unknown/ready",
        "/v2/models/unknown/infer",
        "/v2/models/",
        "/v2/models",
        "/v2/health/ready",
        "/openai/v1/completions",
        "/v2/models/d.e/infer",
        "/v2/models/dxe/infer",
        "/v1/models/f-g:predict",
        "/v2/models/f-g",
        "/v2/models/b-c/infer",
    ]
    for host, path, model in itertools.product(hosts, paths, [None, "iris", "a", "zzz"]):
        assert table.match(host, path, model) == _first_match(routes, host, path, model), (
            host,
            path,
            model,
        )
        expected_needs = any(
            r.model is not None
            and r.host is None
            and (r.path is None or re.fullmatch(r.path, path))
            for r, _ in routes
        )
        assert table.needs_model(path) == expected_needs, path


def test_a_request_tries_only_its_own_services_rules(monkeypatch: pytest.MonkeyPatch) -> None:
    """Names written as the plan writes them (``sklearn\\-iris``): a request to the last of
    many services tries its own rule, not every service's before it."""
    names = [f"sklearn-iris-{i}" for i in range(20)]
    table = RouteTable([r for name in names for r in _service_routes(name, False, True)])
    tried: list[str] = []
    matches = CompiledRoute.matches

    def counting(self: CompiledRoute[str], host: str, path: str, model: str | None) -> bool:
        tried.append(self.target)
        return matches(self, host, path, model)

    monkeypatch.setattr(CompiledRoute, "matches", counting)
    assert table.match("localhost", "/v2/models/sklearn-iris-19/infer") == "sklearn-iris-19/v2"
    assert tried == ["sklearn-iris-19/v2"]
    tried.clear()
    assert table.match("localhost", "/v1/models/sklearn-iris-7:predict") == "sklearn-iris-7/v1"
    assert tried == ["sklearn-iris-7/v1"]
