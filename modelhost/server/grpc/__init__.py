"""gRPC: the Open Inference Protocol service, health checking and reflection.

Where to look: ``server`` (the gRPC port: the relay of ``modelhost.transport`` in front of
an internal grpc.aio server), ``native_infer`` (ModelInfer answered on the relay's own
connection), ``servicer`` (every method on grpc.aio).
"""
