"""gRPC: the Open Inference Protocol service, health checking and reflection."""
