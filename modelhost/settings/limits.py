"""The written limits of the listeners: what one HTTP/1.1 or HTTP/2 client may ask.

Kept apart from the settings that choose ports and models: each field is one row of the
"Limits" table (docs/limits.md), with the reason for its default beside it.
"""

from __future__ import annotations

import dataclasses

__all__ = ["Http1Limits", "Http2Limits"]


@dataclasses.dataclass(frozen=True)
class Http2Limits:
    """What one HTTP/2 connection may ask of a gRPC port (the server's and the gateway's).

    Past a frame budget the connection ends with GOAWAY ENHANCE_YOUR_CALM (RFC 9113,
    section 10.5); budgets count frames per second of one connection. The defaults are far
    above what gRPC clients send (they PING a few times a second at most, SETTINGS once)
    and far below what a flood sends (hundreds of thousands a second).
    """

    # Streams one connection may have open at once (SETTINGS_MAX_CONCURRENT_STREAMS);
    # past it a new stream is refused with RST_STREAM REFUSED_STREAM.
    max_concurrent_streams: int = 256
    # A request's header block, compressed and decoded (SETTINGS_MAX_HEADER_LIST_SIZE).
    max_header_list_bytes: int = 64 * 1024
    pings_per_s: int = 100
    settings_per_s: int = 100
    # Streams the client resets (the "rapid reset" attack, CVE-2023-44487).
    resets_per_s: int = 1000
    # Frames that carry nothing: empty DATA without END_STREAM, PRIORITY, unknown types.
    empty_frames_per_s: int = 1000
    # (A peer that sends without reading what we answer, PING acks included, is not read
    # either once 4 MiB wait for it: memory stays bounded without a limit of its own.)
    # Seconds to send the connection preface and SETTINGS, to finish a header block once
    # begun, and with no stream open before the connection is closed (GOAWAY NO_ERROR).
    handshake_timeout_s: float = 10.0
    header_timeout_s: float = 10.0
    idle_timeout_s: float = 300.0
    # Connections one listener keeps open; past it a new one is closed at once.
    max_connections: int = 4096


@dataclasses.dataclass(frozen=True)
class Http1Limits:
    """What one HTTP/1.1 client may ask of a REST port (the server's and the gateway's).

    Timeouts bound how long a connection may hold a file descriptor and a parser without
    making progress (slowloris, a body shorter than its Content-Length); the sizes bound
    what one request may make the process hold. The defaults are far above what a client
    on a working link needs, and the benchmarks (wrk, 64 keep-alive connections, 3 MB
    bodies) never reach them. Each is a row of docs/limits.md.
    """

    # Seconds from a connection's start, or a request's first byte, to its last header
    # byte; past it: 408 and close (a connection that sent nothing is closed silently).
    header_timeout_s: float = 10.0
    # Seconds a request body may go without a byte arriving (a progress deadline, so
    # that large bodies on slow links pass); past it: 408 and close.
    body_timeout_s: float = 30.0
    # Seconds an idle keep-alive connection is kept between requests.
    idle_timeout_s: float = 65.0
    # Connections one listener keeps open; past it a new one is answered 503 and closed.
    max_connections: int = 4096
    # Header lines, and bytes of request line and headers, in one request (431 past them).
    max_header_count: int = 128
    max_header_bytes: int = 64 * 1024
    # Largest request body (413 past it).
    max_body_bytes: int = 64 * 1024 * 1024
    # Unsent bytes to a client past which the gateway stops reading the replica's answer
    # (and to a replica past which it stops reading the client); reading resumes below a
    # quarter of it.
    write_buffer_bytes: int = 1024 * 1024
