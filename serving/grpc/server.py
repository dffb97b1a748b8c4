"""Assembles the grpc.aio server: the Gateway service, health, reflection, the auth and error
interceptors, and TLS (mutual when a client CA is configured)."""

from __future__ import annotations

from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer
from grpc_reflection.v1alpha import reflection

from serving.auth import Authenticator
from serving.config import AuthConfig, TlsConfig
from serving.errors import ConfigError
from serving.gateway import Gateway
from serving.grpc._gen.driftgate.v1 import gateway_pb2 as pb
from serving.grpc._gen.driftgate.v1 import gateway_pb2_grpc as pb_grpc
from serving.grpc.auth import AuthInterceptor
from serving.grpc.errors import ErrorInterceptor
from serving.grpc.servicer import GatewayServicer

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["Gateway"].full_name
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def server_credentials(tls: TlsConfig) -> grpc.ServerCredentials | None:
    """TLS credentials from the configured PEM files (None: plaintext)."""
    if not tls.cert_file:
        return None
    try:
        key, cert = Path(tls.key_file).read_bytes(), Path(tls.cert_file).read_bytes()
        ca = Path(tls.client_ca_file).read_bytes() if tls.client_ca_file else None
    except OSError as exc:
        raise ConfigError(f"tls: cannot read {exc.filename}: {exc.strerror}") from None
    return grpc.ssl_server_credentials(
        [(key, cert)], root_certificates=ca, require_client_auth=ca is not None
    )


class GrpcServer:
    """The gateway's gRPC endpoint; health says SERVING only while the gateway is ready."""

    def __init__(
        self,
        gateway: Gateway,
        host: str,
        port: int,
        auth: Authenticator | None = None,
        auth_config: AuthConfig | None = None,
        tls: TlsConfig | None = None,
        max_request_bytes: int = 4 << 20,
    ) -> None:
        self.gateway = gateway
        a = auth_config or AuthConfig()
        interceptors = [
            AuthInterceptor(auth or Authenticator(), a.open_health, a.open_reflection),
            ErrorInterceptor(),
        ]
        options = [("grpc.max_receive_message_length", max_request_bytes)]
        self.server = grpc.aio.server(interceptors=interceptors, options=options)
        pb_grpc.add_GatewayServicer_to_server(GatewayServicer(gateway), self.server)
        self.health = HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        services = (SERVICE_NAME, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name)
        reflection.enable_server_reflection((*services, reflection.SERVICE_NAME), self.server)
        credentials = server_credentials(tls or TlsConfig())
        if credentials is None:
            self.port = self.server.add_insecure_port(f"{host}:{port}")
        else:
            self.port = self.server.add_secure_port(f"{host}:{port}", credentials)
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
