"""The data-plane process: REST and gRPC servers over one protocol-neutral data plane."""
