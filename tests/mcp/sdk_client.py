"""The official MCP Python SDK (mcp 2.x) as the client of a kind: mcp route,
for tests/mcp.rs. Prints `ok <scenario>` per passed scenario; any failure
raises (non-zero exit).

Env: TG_URL (the gateway's MCP endpoint), TG_KEY (bob, an agent).
"""

import asyncio
import os

import httpx2
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError

URL = os.environ["TG_URL"]
KEY = os.environ["TG_KEY"]


def ok(scenario):
    print(f"ok {scenario}", flush=True)


async def expect_refusal(coro, code, scenario):
    try:
        await coro
    except MCPError as e:
        assert e.error.code == -32003, e.error
        assert e.error.data["code"] == code, e.error.data
        assert e.error.data["request_id"], e.error.data
        ok(scenario)
        return
    raise AssertionError(f"{scenario}: no error raised")


async def main():
    http = httpx2.AsyncClient(headers={"X-API-Key": KEY}, timeout=15)
    async with http:
        transport = streamable_http_client(URL, http_client=http)
        async with Client(transport, mode="legacy") as client:
            ok("initialize")
            listed = await client.list_tools()
            names = sorted(t.name for t in listed.tools)
            assert names == ["get_ticket", "headers", "list_agent_tickets"], names
            ok("tools/list filtered")
            result = await client.call_tool("get_ticket", {"ticket_id": "T-1"})
            assert not result.is_error, result
            assert "Broken chair" in str(result.content), result
            ok("allowed call")
            await expect_refusal(
                client.call_tool("refund_ticket", {"ticket_id": "T-1", "amount_usd": 5}),
                "forbidden",
                "denied tool raises",
            )
            await expect_refusal(
                client.call_tool("list_agent_tickets", {"agent": "alice"}),
                "forbidden",
                "owner rule raises",
            )
            mine = await client.call_tool("list_agent_tickets", {"agent": "bob"})
            assert "Broken chair" in str(mine.content), mine
            ok("session continues")


asyncio.run(main())
