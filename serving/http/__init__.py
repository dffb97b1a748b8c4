"""The OpenAI-compatible HTTP door: the same `Gateway` core as gRPC, OpenAI's request/response shapes."""
