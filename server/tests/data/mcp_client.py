"""A real MCP client (the official Python SDK, `mcp` on PyPI) driving every
tool and resource of twinflow's MCP server, for `server/tests/it/mcp.rs`.

  mcp_client.py http URL KEY        streamable HTTP, the key as a bearer token
  mcp_client.py stdio TWINFLOW URL KEY
                                    `TWINFLOW mcp --server URL --key KEY` spawned over stdio

Prints one JSON object: the tools and resources listed, and what each call
answered (its text, and whether the server called it an error).
"""

import asyncio
import json
import sys

from mcp import ClientSession
from mcp.client.stdio import StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client

CALLS = [
    ("status", {}),
    ("search", {"query": "rivers and boats", "k": 3}),
    ("search", {"k": 3}),
    ("sql", {"sql": "SELECT d.doc_id, s.rank FROM hybrid('taxes and budgets', 5) s JOIN documents d USING (doc_id) ORDER BY s.rank"}),
    ("sql", {"sql": "DELETE FROM documents"}),
    ("ingest", {"changes": [{"op": "upsert", "doc_id": "canals", "title": "Canals",
                             "content": "Canals and locks carry barges between the rivers. " * 8}]}),
    ("search", {"query": "canals locks barges", "k": 1, "mode": "bm25"}),
    ("datasets", {}),
    ("models", {}),
    ("rag", {"question": "What carries barges?", "answer": "extractive", "k": 2}),
    ("subscribe", {"question": "canals locks barges", "k": 2, "mode": "bm25"}),
    ("subscriptions", {}),
    ("unsubscribe", {"id": "$subscription"}),
    ("subscriptions", {}),
]


async def drive(read, write):
    out = {"calls": []}
    async with ClientSession(read, write) as session:
        info = await session.initialize()
        out["server"] = info.server_info.name
        out["tools"] = sorted(t.name for t in (await session.list_tools()).tools)
        out["resources"] = sorted(r.uri for r in (await session.list_resources()).resources)
        for name, args in CALLS:
            # The id the last `subscribe` answered with.
            args = {k: out.get("subscription", v) if v == "$subscription" else v for k, v in args.items()}
            result = await session.call_tool(name, args)
            text = "".join(c.text for c in result.content if c.type == "text")
            if name == "subscribe" and not result.is_error:
                out["subscription"] = json.loads(text)["subscription"]["id"]
            out["calls"].append({"tool": name, "args": args, "error": bool(result.is_error), "text": text})
        read_back = await session.read_resource("twinflow://tables/documents")
        out["documents_resource"] = read_back.contents[0].text
    return out


async def main():
    mode = sys.argv[1]
    if mode == "http":
        url, key = sys.argv[2], sys.argv[3]
        async with create_mcp_http_client(headers={"Authorization": f"Bearer {key}"}) as http:
            async with streamable_http_client(url, http_client=http) as (read, write):
                print(json.dumps(await drive(read, write)))
    else:
        binary, url, key = sys.argv[2], sys.argv[3], sys.argv[4]
        params = StdioServerParameters(command=binary, args=["mcp", "--server", url, "--key", key])
        async with stdio_client(params) as (read, write):
            print(json.dumps(await drive(read, write)))


asyncio.run(main())
