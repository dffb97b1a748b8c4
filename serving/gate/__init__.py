"""Promotion gate: may a compressed variant replace the dense primary?

`serving.gate.sequential` holds the statistics (anytime-valid confidence sequences and exact
tests, pure functions on sufficient statistics); `serving.gate.verdict` turns a variant's
evidence and a `GateConfig` into a PASS / FAIL / UNDECIDED verdict with the checks behind it.
Both modules are pure: no I/O and no imports of vLLM, gRPC or Prometheus.
"""
