"""REST: the ASGI app, its router, and the v1 and v2 handlers."""
