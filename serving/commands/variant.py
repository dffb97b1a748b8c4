"""`driftgate variant serve NAME --config X`: one variant's own vLLM OpenAI server, from the YAML.

Execs `python -m vllm.entrypoints.openai.api_server` (the `vllm` console script of the CPU build
fails) with the variant's checkpoint, served name, dtype, context length, `--max-logprobs`, batch
size, seed and KV cache, and its cores in `VLLM_CPU_OMP_THREADS_BIND`. The port defaults to the
one in the variant's `engine.url` (8000 when it has none), so the gateway's remote config and the
servers it points at come from the same file.

The server compiles into driftgate's compile cache (`engine.aot_compile`, as the in-process
engines): started again, it loads its compiled model instead of compiling it once more, which a
bare `vllm serve` on CPU does at every start. `--dry-run` prints the environment it sets and the
command line.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from urllib.parse import urlparse

from serving.config import VariantConfig, load_config
from serving.engines.factory import check_checkpoints
from serving.errors import ConfigError

DEFAULT_PORT = 8000


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    variant = sub.add_parser("variant", help="run one variant's own vLLM server (remote mode)")
    variant_sub = variant.add_subparsers(dest="variant_command", required=True)
    serve = variant_sub.add_parser("serve", help="exec vLLM's OpenAI server for variant NAME of --config")
    serve.add_argument("name", help="the variant's name in the config")
    serve.add_argument("--config", required=True, help="YAML config file")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0 in a pod)")
    serve.add_argument("--port", type=int, help="port (default: engine.url's port, else 8000)")
    serve.add_argument("--dry-run", action="store_true", help="print the command and exit")
    serve.set_defaults(func=run_variant_serve)


def port_of(variant: VariantConfig) -> int:
    return (urlparse(variant.engine.url).port if variant.engine.url else None) or DEFAULT_PORT


def run_variant_serve(args: argparse.Namespace) -> int:
    from serving.engines.cpu import cpu_flags, dtype_advice
    from serving.engines.vllm_server import variant_command, variant_env

    config = load_config(args.config)
    variant = config.variant(args.name)
    if variant is None:
        raise ConfigError(
            f"no variant {args.name!r} in {args.config}; known: {[v.name for v in config.variants]}"
        )
    check_checkpoints([variant], remote_too=True)  # the server loads it here
    command = variant_command(variant, args.port or port_of(variant), host=args.host)
    env = variant_env(variant)
    unset = [f"-u {k}" for k in sorted(set(os.environ) - set(env))]
    changed = [f"{k}={shlex.quote(v)}" for k, v in sorted(env.items()) if os.environ.get(k) != v]
    print(" ".join(["env", *unset, *changed, *map(shlex.quote, command)]), flush=True)
    if advice := dtype_advice(variant.engine.dtype, cpu_flags()):
        print(f"driftgate: warning: {advice}", file=sys.stderr, flush=True)
    if args.dry_run:
        return 0
    os.execvpe(command[0], command, env)
    return 0  # not reached
