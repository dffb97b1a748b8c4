"""driftgate serving: gRPC gateway, routing, mirroring and drift comparison on vLLM engines."""
