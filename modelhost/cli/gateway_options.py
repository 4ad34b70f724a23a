"""The options of the commands that call an API on the platform's gateway, and its address.

``modelhost trust`` and ``modelhost registry`` talk to the running platform's gateway (the URL
it wrote in ``<home>/platform.json``), or to ``--url``: another modelhost, or the upstream
service whose API they speak.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from modelhost import errors

__all__ = ["add_gateway_options", "gateway_url", "home_of"]


def add_gateway_options(parser: argparse.ArgumentParser, what: str, variable: str) -> None:
    """``--url`` (else ``$variable``, else the platform), ``--token``, ``--home``, ``-o``."""
    parser.add_argument(
        "--url", default=None, help=f"the {what} (${variable}; default: the running platform)"
    )
    parser.add_argument("--token", default=None, help="bearer token ($MODELHOST_TOKEN)")
    parser.add_argument("--home", default=None, help="the platform's home, to find it")
    parser.add_argument(
        "-o", "--output", dest="format_out", choices=["text", "json"], default="text"
    )


def home_of(args: argparse.Namespace) -> Path:
    from modelhost.local.settings import default_home

    return Path(args.home) if args.home else default_home()


def gateway_url(args: argparse.Namespace, variable: str) -> str:
    """``--url``, else ``$variable``, else the gateway of the platform in ``--home``."""
    if args.url:
        return str(args.url)
    if os.environ.get(variable):
        return os.environ[variable]
    home = home_of(args)
    try:
        return str(json.loads((home / "platform.json").read_text())["url"])
    except (OSError, ValueError, KeyError):
        raise errors.ServerNotReady(
            f"no running platform in {home}: start one (modelhost up -d) or give --url"
        ) from None
