"""Tokens, the guard and the limits, without a server: the file, hashing, scopes, bad input."""

from __future__ import annotations

import time
import tracemalloc
from pathlib import Path

import pytest

from modelhost import errors
from modelhost.access import Guard, Limiter, Role, TokenStore, TokenTable, parse_duration


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def store(tmp_path: Path) -> TokenStore:
    return TokenStore(tmp_path / "tokens.db")


def test_a_token_is_shown_once_and_stored_hashed(store: TokenStore) -> None:
    token, text = store.create(Role.CALLER, name="ci", namespace="team-a")
    assert text.startswith(f"mh_{token.id}_")
    secret = text[len(f"mh_{token.id}_") :]
    raw = store.path.read_bytes()
    assert secret.encode() not in raw
    assert text.encode() not in raw
    assert store.path.stat().st_mode & 0o777 == 0o600
    [listed] = store.tokens()
    assert (listed.name, listed.role, listed.namespace, listed.service) == (
        "ci",
        Role.CALLER,
        "team-a",
        None,
    )
    assert listed.matches(secret)
    assert not listed.matches(secret[:-1] + "x")


def test_names_are_unique_and_limits_checked(store: TokenStore) -> None:
    store.create(Role.ADMIN, name="same")
    with pytest.raises(errors.InvalidInput, match="exists already"):
        store.create(Role.ADMIN, name="same")
    with pytest.raises(errors.InvalidInput, match="--rate"):
        store.create(Role.CALLER, rate=0)
    with pytest.raises(errors.InvalidInput, match="--burst needs --rate"):
        store.create(Role.CALLER, burst=3)
    with pytest.raises(errors.InvalidInput, match="--concurrency"):
        store.create(Role.CALLER, concurrency=0)


def test_revoke_by_name_or_id(store: TokenStore) -> None:
    first, _ = store.create(Role.CALLER, name="one")
    second, _ = store.create(Role.CALLER, name="two")
    assert store.revoke("one").id == first.id
    assert store.revoke(second.id).name == "two"
    assert all(t.revoked_at is not None for t in store.tokens())
    with pytest.raises(errors.InvalidInput, match="no token"):
        store.revoke("three")


def test_durations() -> None:
    assert parse_duration("90s") == 90
    assert parse_duration("30d") == 30 * 86400
    assert parse_duration("2w") == 14 * 86400
    for bad in ("", "30", "d", "-1d", "1y"):
        with pytest.raises(errors.InvalidInput, match="not a duration"):
            parse_duration(bad)


def test_the_table_sees_a_revocation_within_a_second(store: TokenStore) -> None:
    token, text = store.create(Role.CALLER)
    guard = Guard(TokenTable(store.path))
    assert guard.authenticate(f"Bearer {text}").id == token.id
    store.revoke(token.id)
    revoked = time.monotonic()
    while True:
        try:
            guard.authenticate(f"Bearer {text}")
        except errors.Unauthenticated:
            break
        assert time.monotonic() - revoked < 1.0, "the revoked token still works after 1 s"
        time.sleep(0.01)


def test_two_quick_changes_are_both_seen(store: TokenStore) -> None:
    # The table keys on SQLite's change counter, not a file time two commits can share.
    clock = FakeClock()
    table = TokenTable(store.path, clock=clock)
    token, _ = store.create(Role.CALLER)
    assert table.find(token.id) is not None
    store.revoke(token.id)
    clock.now += 0.3
    assert table.find(token.id) is None


@pytest.mark.parametrize(
    "header",
    [
        None,
        "",
        "Bearer",
        "Bearer ",
        "Basic dXNlcjpwYXNz",
        "bearer mh_nothex_x",
        "Bearer mh_0123456789ab_" + "a" * 43,
        "Bearer " + "x" * 100_000,
        "Bearer mh_0123456789ab_" + "\u00e9" * 50,
        b"Bearer \xff\xfe",
    ],
)
def test_bad_authorization_is_unauthenticated(store: TokenStore, header: str | None) -> None:
    store.create(Role.ADMIN)
    guard = Guard(TokenTable(store.path))
    with pytest.raises(errors.Unauthenticated) as caught:
        guard.admit(header, "default", "iris")
    assert caught.value.status_code == 401
    assert "x" * 100 not in str(caught.value)  # never echoes what was sent


def test_an_expired_token_is_refused(store: TokenStore) -> None:
    _, text = store.create(Role.CALLER, expires_in_s=60, now=time.time() - 120)
    guard = Guard(TokenTable(store.path))
    with pytest.raises(errors.Unauthenticated, match="expired"):
        guard.authenticate(f"Bearer {text}")


def test_scopes_and_roles(store: TokenStore) -> None:
    guard = Guard(TokenTable(store.path))
    _, for_a = store.create(Role.CALLER, namespace="ns", service="a")
    _, for_ns = store.create(Role.CALLER, namespace="ns")
    _, deployer = store.create(Role.DEPLOYER)
    assert guard.admit(f"Bearer {for_a}", "ns", "a").token is not None
    with pytest.raises(errors.PermissionDenied, match="service 'a', not service 'b'"):
        guard.admit(f"Bearer {for_a}", "ns", "b")
    with pytest.raises(errors.PermissionDenied, match="namespace 'ns'"):
        guard.admit(f"Bearer {for_ns}", "other", "a")
    with pytest.raises(errors.PermissionDenied, match="role caller"):
        guard.admit(f"Bearer {for_ns}", "ns", "a", Role.DEPLOYER)
    assert guard.admit(f"Bearer {deployer}", "any", "thing", Role.DEPLOYER).token is not None
    with pytest.raises(errors.PermissionDenied, match="needs admin"):
        guard.admit(f"Bearer {deployer}", "any", "thing", Role.ADMIN)


def test_wrong_tokens_leave_no_state(store: TokenStore) -> None:
    store.create(Role.CALLER)
    # A still clock: the table does not read the file again in the middle of a count.
    guard = Guard(TokenTable(store.path, clock=FakeClock()))

    def try_wrong(count: int) -> int:
        refused = 0
        tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0]
        for i in range(count):
            try:
                guard.authenticate(f"Bearer mh_{i:012x}_{'s' * 43}")
            except errors.Unauthenticated:
                refused += 1
        grown = tracemalloc.get_traced_memory()[0] - before
        tracemalloc.stop()
        assert refused == count
        return grown

    try_wrong(10)  # warm: the table's first read
    assert try_wrong(10_000) <= try_wrong(10) + 4096
    assert guard.limiter._states == {}


def test_rate_limit_with_burst_and_retry_after(store: TokenStore) -> None:
    clock = FakeClock()
    guard = Guard(TokenTable(store.path), Limiter(clock=clock))
    _, text = store.create(Role.CALLER, rate=2.0, burst=3)
    for _ in range(3):
        guard.admit(f"Bearer {text}", None, None).release()
    with pytest.raises(errors.RateLimited) as caught:
        guard.admit(f"Bearer {text}", None, None)
    assert caught.value.status_code == 429
    assert caught.value.retry_after == pytest.approx(0.5)
    clock.now += 0.5
    guard.admit(f"Bearer {text}", None, None)
    with pytest.raises(errors.RateLimited):
        guard.admit(f"Bearer {text}", None, None)


def test_concurrency_limit(store: TokenStore) -> None:
    guard = Guard(TokenTable(store.path))
    _, text = store.create(Role.CALLER, concurrency=2)
    first = guard.admit(f"Bearer {text}", None, None)
    guard.admit(f"Bearer {text}", None, None)
    with pytest.raises(errors.RateLimited, match="2 requests running"):
        guard.admit(f"Bearer {text}", None, None)
    first.release()
    first.release()  # idempotent: frees one place, not two
    guard.admit(f"Bearer {text}", None, None)
    with pytest.raises(errors.RateLimited):
        guard.admit(f"Bearer {text}", None, None)


def test_a_verified_token_is_remembered_until_it_expires_or_changes(store: TokenStore) -> None:
    wall = FakeClock(time.time())
    clock = FakeClock()
    guard = Guard(TokenTable(store.path, clock=clock), wall_clock=wall)
    token, text = store.create(Role.CALLER, expires_in_s=60, now=wall.now)
    header = f"Bearer {text}".encode()
    assert guard.authenticate(header).id == token.id
    assert guard.authenticate(header).id == token.id  # from memory
    wall.now += 61
    with pytest.raises(errors.Unauthenticated, match="expired"):
        guard.authenticate(header)
    other_token, other = store.create(Role.CALLER)
    clock.now += 1  # the table looks at the file again
    assert guard.authenticate(f"Bearer {other}").role is Role.CALLER
    assert guard.authenticate(f"Bearer {other}").role is Role.CALLER  # from memory
    store.revoke(other_token.id)
    clock.now += 1  # the table sees the change: the remembered value is checked again
    with pytest.raises(errors.Unauthenticated, match="not valid"):
        guard.authenticate(f"Bearer {other}")
