"""Promoting a candidate under load: locust at 8 users (loadtest/locustfile.py, run headless as a
user runs it) against a real gateway on the session's real vLLM engine, `Promote` called mid-run.

The candidate serves the same checkpoint (the session's engine under a second name: request ids are
unique per call, so sharing it is sound) with weight 0, so every answer before the promotion comes
from `dense` and every one after from `cand`: locust's per-variant entries show the switch happened
under load. No request may fail, and every `ListVariants` seen by a poller running throughout shows
either the old roles or the new ones, never a mix, and never the old ones again once the new appeared.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc
import pytest

from serving.app import App, start_app
from serving.config import AuthConfig, Config, Role, ServerConfig, VariantConfig
from serving.engines.base import Engine
from serving.grpc._gen.driftgate.v1 import gateway_pb2 as pb
from serving.grpc._gen.driftgate.v1 import gateway_pb2_grpc as pb_grpc
from tests.conftest import model_dir
from tests.test_auth_admin import ADMIN_KEY, USER_KEY, write_keys
from tests.test_loadtest import run_locust

BEFORE: dict[str, int] = {"dense": pb.ROLE_PRIMARY, "cand": pb.ROLE_CANDIDATE}
AFTER: dict[str, int] = {"dense": pb.ROLE_SHADOW, "cand": pb.ROLE_PRIMARY}


def _config(tmp_path: Path) -> Config:
    model = str(model_dir())
    return Config(
        server=ServerConfig(grpc_port=0, metrics_port=-1, http_port=-1, drain_timeout_s=5.0),
        auth=AuthConfig(keys_file=str(write_keys(tmp_path))),
        variants=[
            VariantConfig(name="dense", model=model),
            VariantConfig(name="cand", model=model, role=Role.CANDIDATE, weight=0.0),
        ],
    )


def _total(app: App, sample: str) -> float:
    """The sum of a metric's samples named `sample`, over all labels."""
    return sum(s.value for m in app.registry.collect() for s in m.samples if s.name == sample)


async def _watch_roles(stub: pb_grpc.GatewayStub, seen: list[dict[str, int]], stop: asyncio.Event) -> None:
    """Records the roles `ListVariants` reports, as often as it answers, until `stop`."""
    auth = (("authorization", f"Bearer {USER_KEY}"),)
    while not stop.is_set():
        listed = await stub.ListVariants(pb.ListVariantsRequest(), metadata=auth)
        seen.append({v.name: v.role for v in listed.variants})
        await asyncio.sleep(0.005)


@pytest.mark.asyncio(loop_scope="session")
async def test_promotion_under_locust_load_loses_no_request(dense_engine: Engine, tmp_path: Path) -> None:
    app = await start_app(_config(tmp_path), engines={"dense": dense_engine, "cand": dense_engine})
    seen: list[dict[str, int]] = []
    stop = asyncio.Event()
    try:
        async with grpc.aio.insecure_channel(app.address) as channel:
            stub = pb_grpc.GatewayStub(channel)
            watcher = asyncio.create_task(_watch_roles(stub, seen, stop))
            load = asyncio.create_task(
                run_locust(
                    app.address, ("-u", "8", "-r", "8", "-t", "14s"),
                    DRIFTGATE_API_KEY=USER_KEY, DRIFTGATE_MAX_TOKENS="8",
                )
            )  # fmt: skip
            async with asyncio.timeout(30):  # users ramped up, answers flowing
                while _total(app, "driftgate_requests_total") < 16:
                    await asyncio.sleep(0.1)
            in_flight = _total(app, "driftgate_requests_in_flight")
            admin = (("authorization", f"Bearer {ADMIN_KEY}"),)
            promoted = await stub.Promote(pb.PromoteRequest(variant="cand"), metadata=admin)
            code, stats, output = await load
            stop.set()
            await watcher
    finally:
        await app.stop()

    assert {v.name: v.role for v in promoted.variants} == AFTER
    assert in_flight > 0  # the promotion happened with requests under way
    assert code == 0, output  # locust exits 1 on any failed request
    calls = {n: s for n, s in stats.items() if n.startswith("Generate") and not n.endswith(("/ttft", "/itl"))}
    assert sum(s["num_failures"] for s in calls.values()) == 0, output
    by_variant = {n.split("[")[1].rstrip("]"): 0 for n in calls}
    for name, s in calls.items():
        by_variant[name.split("[")[1].rstrip("]")] += s["num_requests"]
    assert set(by_variant) == {"dense", "cand"} and min(by_variant.values()) > 0, by_variant
    assert seen and all(roles in (BEFORE, AFTER) for roles in seen), seen
    first_after = seen.index(AFTER)
    assert first_after > 0 and all(roles == AFTER for roles in seen[first_after:])
