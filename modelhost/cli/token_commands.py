"""``modelhost token create|list|revoke``: the bearer tokens the gateways and the control API take.

They work on the token file in the platform's home directly (whoever may write there owns
the platform); running servers see a change within a second, with no restart.
"""

from __future__ import annotations

import argparse
import datetime
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from modelhost import errors

__all__ = ["add_command", "run"]


def add_command(commands: Any, home: Callable[[argparse.ArgumentParser], None]) -> None:
    token = commands.add_parser(
        "token",
        help="make, list and revoke bearer tokens",
        description=(
            "Tokens for the gateways, `modelhost serve --auth tokens` and the control API "
            "over TCP. Roles: admin (anything), deployer (services on the built-in "
            "runtimes), caller (inference only); --namespace/--service narrow a token."
        ),
    )
    verbs = token.add_subparsers(dest="token_command", required=True, metavar="VERB")
    create = verbs.add_parser("create", help="make a token; it is shown this once")
    home(create)
    create.add_argument("--role", required=True, choices=["admin", "deployer", "caller"])
    create.add_argument("--name", default=None, help="a name for lists and the audit log")
    create.add_argument("--namespace", "-n", default=None, help="only this namespace")
    create.add_argument("--service", default=None, help="only this InferenceService (or model)")
    create.add_argument("--expires", default=None, help="lifetime: 90s, 15m, 12h, 30d, 2w")
    create.add_argument("--rate", type=float, default=None, help="requests per second")
    create.add_argument("--burst", type=int, default=None, help="requests above --rate at once")
    create.add_argument("--concurrency", type=int, default=None, help="requests running at once")
    listing = verbs.add_parser("list", help="the tokens (never their secrets)")
    home(listing)
    listing.add_argument("--all", action="store_true", help="revoked tokens too")
    revoke = verbs.add_parser("revoke", help="revoke a token by id or name")
    home(revoke)
    revoke.add_argument("token", help="the token's id or name")


def run(args: argparse.Namespace, home: Path) -> int:
    from modelhost.access import AuditLog, Role, TokenStore, parse_duration
    from modelhost.local.settings import PlatformSettings

    platform = PlatformSettings(home=home)  # where the platform reads tokens, writes audits
    store = TokenStore(platform.token_path)
    audit = AuditLog(platform.audit_path)
    if args.token_command == "create":
        expires = parse_duration(args.expires) if args.expires else None
        token, text = store.create(
            Role(args.role),
            name=args.name,
            namespace=args.namespace,
            service=args.service,
            expires_in_s=expires,
            rate=args.rate,
            burst=args.burst,
            concurrency=args.concurrency,
        )
        audit.record("owner", "token create", [f"token/{token.name}"], 200, via="cli")
        print(text)
        print(
            f"token {token.name} ({token.role.value}, {token.scope()}): keep it now, it is "
            "not shown again",
            file=sys.stderr,
        )
        return 0
    if args.token_command == "list":
        rows = [
            [
                t.id,
                t.name,
                t.role.value,
                t.scope(),
                _when(t.expires_at) or "never",
                _limits(t),
                "revoked" if t.revoked_at is not None else "",
            ]
            for t in store.tokens()
            if args.all or t.revoked_at is None
        ]
        header = ["ID", "NAME", "ROLE", "SCOPE", "EXPIRES", "LIMITS", "STATE"]
        widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
        for row in [header, *rows]:
            print("   ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
        return 0
    if args.token_command == "revoke":
        try:
            revoked = store.revoke(args.token)
        except errors.ModelhostError:
            audit.record("owner", "token revoke", [f"token/{args.token}"], 404, via="cli")
            raise
        audit.record("owner", "token revoke", [f"token/{revoked.name}"], 200, via="cli")
        print(f"token {revoked.name} ({revoked.id}) revoked")
        return 0
    return 2


def _when(stamp: float | None) -> str:
    if stamp is None:
        return ""
    moment = datetime.datetime.fromtimestamp(stamp, datetime.timezone.utc)
    return f"{moment:%Y-%m-%dT%H:%M:%SZ}"


def _limits(token: Any) -> str:
    parts = []
    if token.rate is not None:
        parts.append(f"{token.rate:g}/s burst {token.burst}")
    if token.concurrency is not None:
        parts.append(f"{token.concurrency} at once")
    return ", ".join(parts) or "-"
