"""The `driftgate` command line, on top of the core: serve, probe, demo, model pull, compress, bench.

Commands import the core (`serving.*`, `compress.*`); the core never imports a command
(`tests/test_layout.py` checks it).
"""
