"""Offline compress stage: turn a dense HF checkpoint into compressed variants that vLLM serves.

Two sides, kept apart on purpose:

* the serving side (``compress.cli``, ``compress.api``, ``compress.recipes``, ``compress.manifest``,
  ``compress.checkpoint``, ``compress.paths``) runs in the serving venv and never imports torch or
  llm-compressor at import time;
* the worker side (``compress.worker``, ``compress.methods``, ``compress.patches``,
  ``compress.stats``) runs in ``.venv-compress`` as a subprocess started by ``compress.api``.
"""
