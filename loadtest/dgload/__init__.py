"""Helpers of loadtest/locustfile.py: options, naming, and the gRPC and HTTP clients.

Imported as the top-level package `dgload` (locust puts the locustfile's folder on `sys.path`)."""
