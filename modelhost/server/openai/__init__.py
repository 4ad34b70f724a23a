"""The OpenAI-compatible API and the v2 generate extension, over the server's LLMs."""
