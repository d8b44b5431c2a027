"""The support tools as an MCP server: the official SDK's MCPServer (mcp 2.x,
formerly FastMCP) over Streamable HTTP, for tests/mcp.rs and benches/mcp.sh.

    python tools_server.py PORT NAME [json]

NAME is returned by every tool (`served_by`), so a test sees which peer
served a session; `json` answers POSTs as JSON instead of SSE streams.
`headers` returns the request headers the server received.
"""

import sys

from mcp.server.mcpserver import Context, MCPServer

port, name = int(sys.argv[1]), sys.argv[2]
json_response = len(sys.argv) > 3 and sys.argv[3] == "json"

server = MCPServer("support-tools")

TICKETS = {
    "T-1": {"id": "T-1", "agent": "bob", "subject": "Broken chair", "customer_email": "jane.doe@example.com"},
    "T-2": {"id": "T-2", "agent": "alice", "subject": "Late delivery", "customer_email": "max@example.org"},
}


@server.tool()
def get_ticket(ticket_id: str) -> dict:
    """One ticket by id."""
    ticket = TICKETS.get(ticket_id, {"id": ticket_id, "missing": True})
    return {"served_by": name, "ticket": ticket}


@server.tool()
def list_agent_tickets(agent: str) -> dict:
    """The tickets assigned to an agent."""
    return {"served_by": name, "agent": agent, "tickets": [t for t in TICKETS.values() if t["agent"] == agent]}


@server.tool()
def refund_ticket(ticket_id: str, amount_usd: float) -> dict:
    """Refunds a ticket's order."""
    return {"served_by": name, "refunded": ticket_id, "amount_usd": amount_usd}


@server.tool()
def search_kb(query: str) -> dict:
    """Searches the knowledge base."""
    return {"served_by": name, "query": query, "articles": ["How to reset a password"]}


@server.tool()
def leak_secret() -> str:
    """Answers with a credential-shaped string (output guard tests)."""
    return "the key is AKIAIOSFODNN7EXAMPLE"


@server.tool()
def headers(ctx: Context) -> dict:
    """The HTTP request headers this call arrived with."""
    request = ctx.request_context.request
    return {"served_by": name, "headers": dict(request.headers) if request is not None else {}}


server.run(
    "streamable-http",
    host="127.0.0.1",
    port=port,
    json_response=json_response,
)
