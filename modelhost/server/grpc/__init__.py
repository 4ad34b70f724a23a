"""gRPC: the Open Inference Protocol service, health checking and reflection.

Where to look: ``server`` (the gRPC port: a relay in front of an internal grpc.aio
server), ``native_infer`` (ModelInfer answered on the relay's own connection),
``servicer`` (every method on grpc.aio), ``relay`` and ``relay_call`` (the relay, also the
platform's gateway), ``http2`` and ``header_block`` (its HTTP/2).
"""
