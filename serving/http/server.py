"""Placeholder until the HTTP door lands: `start_http` serves nothing yet (see serving/http/)."""

from __future__ import annotations

from serving.gateway import Gateway


class HttpServer:
    def __init__(self, port: int) -> None:
        self.port = port

    async def stop(self) -> None:
        return None


async def start_http(gateway: Gateway, host: str, port: int) -> HttpServer:
    return HttpServer(port)
