"""kopf's API requests are counted through the session the login handler gives it."""

from __future__ import annotations

import asyncio

import kopf
from aiohttp import web
from devservices import free_port
from prometheus_client import REGISTRY

from schedgen.operator.kube import counted_session


def kopf_requests(method: str) -> float:
    return REGISTRY.get_sample_value("schedgen_operator_api_requests_total",
                                     {"client": "kopf", "method": method}) or 0.0


def test_the_login_session_counts_every_request_and_keeps_the_credentials():
    seen: list[tuple[str, str | None]] = []

    async def answer(request: web.Request) -> web.Response:
        seen.append((request.method, request.headers.get("Authorization")))
        return web.json_response({"kind": "Status"})

    async def go() -> None:
        app = web.Application()
        app.router.add_route("*", "/{path:.*}", answer)
        runner = web.AppRunner(app)
        await runner.setup()
        port = free_port()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        try:
            info = kopf.ConnectionInfo(server=f"http://127.0.0.1:{port}", token="secret-token",
                                       default_namespace="ns")
            login = counted_session(info)
            assert (login.server, login.default_namespace) == (info.server, "ns")
            async with login.aiohttp_session as session:
                for method in ("GET", "GET", "PATCH", "POST"):
                    async with session.request(method, f"{info.server}/apis/schedgen.io/v1alpha1") as response:
                        assert response.status == 200
        finally:
            await runner.cleanup()

    before = {m: kopf_requests(m) for m in ("GET", "PATCH", "POST")}
    asyncio.run(go())
    assert {m: kopf_requests(m) - before[m] for m in before} == {"GET": 2, "PATCH": 1, "POST": 1}
    assert seen == [(m, "Bearer secret-token") for m in ("GET", "GET", "PATCH", "POST")]
