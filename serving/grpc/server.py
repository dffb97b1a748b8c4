"""Assembles the grpc.aio server: the Gateway service, health, reflection, error interceptor."""

from __future__ import annotations

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer
from grpc_reflection.v1alpha import reflection

from serving.gateway import Gateway
from serving.grpc._gen.driftgate.v1 import gateway_pb2 as pb
from serving.grpc._gen.driftgate.v1 import gateway_pb2_grpc as pb_grpc
from serving.grpc.errors import ErrorInterceptor
from serving.grpc.servicer import GatewayServicer

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["Gateway"].full_name
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


class GrpcServer:
    """The gateway's gRPC endpoint; health says SERVING only while the gateway is ready."""

    def __init__(self, gateway: Gateway, host: str, port: int) -> None:
        self.gateway = gateway
        self.server = grpc.aio.server(interceptors=[ErrorInterceptor()])
        pb_grpc.add_GatewayServicer_to_server(GatewayServicer(gateway), self.server)
        self.health = HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        services = (SERVICE_NAME, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name)
        reflection.enable_server_reflection((*services, reflection.SERVICE_NAME), self.server)
        self.port = self.server.add_insecure_port(f"{host}:{port}")
        self.address = f"{host}:{self.port}"

    async def start(self) -> None:
        await self.set_serving(False)
        await self.server.start()

    async def set_serving(self, serving: bool) -> None:
        status = SERVING if serving else NOT_SERVING
        for service in ("", SERVICE_NAME):
            await self.health.set(service, status)

    async def stop(self, grace: float) -> None:
        await self.health.enter_graceful_shutdown()
        await self.server.stop(grace)
