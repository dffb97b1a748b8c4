"""gRPC adapters: protobuf <-> domain translation, error mapping, server assembly (no vllm)."""
