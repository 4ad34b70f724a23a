"""The wire code both processes share: HTTP/2 framing, HPACK, the gRPC relay, the HTTP/1.1 proxy.

A model server's gRPC port and the platform's gRPC gateway are the same relay: it reads
HTTP/2 itself (``http2``, with the rules of RFC 9113 and the ``Http2Limits`` of
``modelhost.settings`` kept in ``http2_checks``), encodes headers (``hpack_encoder``),
and passes each call (``grpc_call``) to the target a resolver names, or to a local handler
(``grpc_relay``). The platform's HTTP gateway is a proxy on httptools (``http1_proxy``)
that relays each request to the target its owner names (``http1_upstream``), held to the
``Http1Limits`` (``http1_limits``, shared with the model server's uvicorn protocol). Both
relays meet their owner at one seam (``target``): resolve → :class:`Target` → release(ok),
with an ``admit`` callback before. Who the caller is and where a model runs are not this
layer's business. Calls the platform itself makes on the hot path (a graph's steps, from
the gateway to replicas) go through a pooled HTTP/1.1 client on httptools (``http1_client``).

Where to look: ``grpc_relay`` (listening, connections, pools), ``grpc_call`` (one call),
``http2`` (frames, windows, stream states), ``http2_checks`` (header lists, frame budgets),
``hpack_encoder``, ``http1_proxy`` (listening, client connections, pipelining, answers),
``http1_upstream`` (one request's attempts, connections to targets, their pool),
``http1_limits`` (deadlines, the connection cap), ``target`` (the seam), ``http1_client``
(requests out, their connections and pool).
"""
