"""``modelhost operator``'s command line: flags → settings, and a clear error without kopf."""

from __future__ import annotations

import sys

import pytest

from modelhost.cli import build_parser, main
from modelhost.cli.operator_command import operator_settings
from modelhost.kube.operator_settings import OperatorSettings


def settings_for(*argv: str) -> OperatorSettings:
    return operator_settings(build_parser().parse_args(["operator", *argv]))


def test_defaults_watch_every_namespace_with_optional_peering() -> None:
    settings = settings_for()
    assert settings.namespaces == ()
    assert settings.peering is None
    assert not settings.standalone
    assert settings.builtin_runtimes
    assert (settings.kube.gateway_namespace, settings.kube.gateway_name) == (
        "kserve",
        "kserve-ingress-gateway",
    )


def test_flags_become_the_settings() -> None:
    settings = settings_for(
        "-n",
        "team-a",
        "--namespace",
        "team-b",
        "-n",
        "team-a",
        "--peering",
        "modelhost",
        "--priority",
        "5",
        "--gateway",
        "infra/public",
        "--domain",
        "models.example.org",
        "--image",
        "modelhost/modelhost-tabular:1=registry.local/tabular@sha256:abc",
        "--no-builtin-runtimes",
        "--api-server",
        "http://127.0.0.1:8001",
    )
    assert settings.namespaces == ("team-a", "team-b")
    assert (settings.peering, settings.priority) == ("modelhost", 5)
    assert (settings.kube.gateway_namespace, settings.kube.gateway_name) == ("infra", "public")
    assert settings.kube.planner.ingress_domain == "models.example.org"
    assert settings.kube.image("modelhost/modelhost-tabular:1") == (
        "registry.local/tabular@sha256:abc"
    )
    assert not settings.builtin_runtimes
    assert settings.api_server == "http://127.0.0.1:8001"


@pytest.mark.parametrize(
    "argv",
    [
        ["--namespace", "a", "--all-namespaces"],
        ["--peering", "modelhost", "--standalone"],
    ],
)
def test_exclusive_flags_are_refused(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        build_parser().parse_args(["operator", *argv])
    assert exited.value.code == 2
    assert "not allowed with" in capsys.readouterr().err


def test_a_bad_gateway_is_refused_before_anything_starts(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["operator", "--gateway", "no-namespace"]) == 2
    assert "--gateway takes NAMESPACE/NAME" in capsys.readouterr().err


def test_without_kopf_the_command_says_which_extra_to_install(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # As if kopf were not installed: importing it fails, and the operator module is not loaded.
    monkeypatch.setitem(sys.modules, "kopf", None)
    monkeypatch.delitem(sys.modules, "modelhost.kube.operator", raising=False)
    assert main(["operator", "--standalone"]) == 1
    err = capsys.readouterr().err
    assert "kopf is not installed" in err
    assert "modelhost[kube]" in err
