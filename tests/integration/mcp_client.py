"""Drives `brain mcp` over stdio with the official Python MCP SDK (a client brain did not write).

Run by tests/integration/mcp.rs: argv is the brain binary, the vault folder (watched by the
daemon the test started), and a JSON file of environment variables for `brain mcp`. Prints one
JSON object of what it saw; any failed check raises, which exits non-zero with the traceback.
"""

import asyncio
import json
import sys

from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client


def structured(result):
    assert not result.is_error, f"tool failed: {result.content}"
    if result.structured_content is not None:
        return result.structured_content
    return json.loads(result.content[0].text)


async def main(binary, vault, env_file):
    with open(env_file) as f:
        env = json.load(f)
    params = StdioServerParameters(command=binary, args=["mcp"], env=env)
    seen = {}
    async with stdio_client(params) as (read, write):
        async with ClientSession(read, write) as session:
            await session.initialize()

            tools = {t.name: t for t in (await session.list_tools()).tools}
            seen["tools"] = sorted(tools)
            for name in ["search_notes", "write_note", "upsert_node", "link_nodes",
                         "workflow_run", "workflow_resume", "get_node", "recent_changes"]:
                assert name in tools, f"no tool {name}: {sorted(tools)}"
            assert "query" in tools["search_notes"].input_schema["properties"]
            assert tools["search_notes"].annotations.read_only_hint is True
            assert tools["write_note"].annotations.read_only_hint is False
            assert tools["retire_node"].annotations.destructive_hint is True
            assert tools["upsert_node"].annotations.idempotent_hint is True
            assert set(tools["write_note"].input_schema["required"]) >= {"path", "content", "mode"}

            path = f"{vault}/Airships.md"
            note = structured(await session.call_tool("write_note", {
                "path": path, "mode": "create", "client": "python-sdk",
                "content": "# Airships\n\nA zeppelin floats over the quiet hangar.\n"}))
            seen["note_id"] = note["id"]

            hits = structured(await session.call_tool("search_notes", {"query": "zeppelin hangar"}))
            assert hits["hits"], hits
            assert hits["hits"][0]["node_id"] == note["id"], hits
            assert hits["hits"][0]["path"] == note["path"], hits
            seen["search_hits"] = len(hits["hits"])

            person = structured(await session.call_tool("upsert_node", {
                "kind": "person", "key": "hugo-eckener", "title": "Hugo Eckener",
                "client": "python-sdk"}))
            assert person["created"] is True, person
            edge = structured(await session.call_tool("link_nodes", {
                "from": person["id"], "to": note["id"], "type": "flew", "client": "python-sdk"}))
            assert edge["created"] is True, edge
            node = structured(await session.call_tool("get_node", {"id": person["id"]}))
            assert node["provenance"][0]["extractor"] == "client:python-sdk", node
            near = structured(await session.call_tool("graph_neighbors", {
                "id": person["id"], "direction": "out"}))
            assert any(e["id"] == edge["id"] for e in near["edges"]), near

            structured(await session.call_tool("upsert_node", {
                "kind": "person", "key": "hugo-eckener", "title": "Dr. Hugo Eckener",
                "client": "python-sdk"}))
            assert "node_history" in tools, sorted(tools)
            assert tools["node_history"].annotations.read_only_hint is True
            history = structured(await session.call_tool("node_history", {"id": person["id"]}))
            titles = [v["title"] for v in history["versions"]]
            assert titles == ["Hugo Eckener", "Dr. Hugo Eckener"], history
            assert history["versions"][0]["valid_to"] == history["versions"][1]["valid_from"], history
            assert any(e["id"] == edge["id"] and e["valid_to"] is None
                       for e in history["edges"]), history
            seen["history_versions"] = len(history["versions"])

            res = await session.read_resource(f"brain://node/{person['id']}")
            assert "Hugo Eckener" in res.contents[0].text, res

            # Text a client upserts is searchable, cited to that client's write.
            await session.call_tool("upsert_node", {
                "kind": "person", "key": "hugo-eckener", "client": "python-sdk",
                "content": "Commanded the Graf Zeppelin around the world: xylocopter."})
            found = structured(await session.call_tool("search_notes", {"query": "xylocopter"}))
            assert [h["node_id"] for h in found["hits"]] == [person["id"]], found
            assert found["hits"][0]["written_by"]["extractor"] == "client:python-sdk", found

            # What changed lately: the upsert, then the note, newest first, with who wrote them.
            assert tools["recent_changes"].annotations.read_only_hint is True
            recent = structured(await session.call_tool("recent_changes", {"limit": 10}))
            changes = {c["id"]: c for c in recent["changes"]}
            assert changes[person["id"]]["client"] == "python-sdk", recent
            assert changes[person["id"]]["change"] == "updated", recent
            assert changes[note["id"]]["via"] == "file", recent
            assert changes[note["id"]]["path"] == note["path"], recent
            assert recent["changes"][0]["id"] == person["id"], recent
            seen["recent"] = len(recent["changes"])

            # Notes are resources: listed newest first, read as citations and text.
            listed = await session.list_resources()
            uris = [r.uri for r in listed.resources]
            assert f"brain://node/{note['id']}" in [str(u) for u in uris], uris
            res = await session.read_resource(f"brain://node/{note['id']}")
            by_type = {c.mime_type: c.text for c in res.contents}
            assert "zeppelin floats" in by_type["text/markdown"], res
            cited = json.loads(by_type["application/json"])
            assert cited["provenance"][0]["path"] == note["path"], cited
            assert cited["provenance"][0]["content_hash"] == note["content_hash"], cited
            seen["resources"] = len(uris)

            workflow = {
                "version": "brain/1", "name": "mcp-approval",
                "registry": {"vars": ["$answer(OBJECT)", "$done(BOOL)"]},
                "steps": [
                    {"id": "Pause_ok", "reason": "go on?", "resumeResultTarget": "$answer",
                     "next": "Set_done"},
                    {"id": "Set_done", "target": "$done", "value": True, "next": "Stop_end"},
                    {"id": "Stop_end"},
                ],
            }
            run = structured(await session.call_tool("workflow_run", {"definition": workflow}))
            run_id = run["run_id"]
            state = await settle(session, run_id, {"paused"})
            wait_id = state["waits"][0]["wait_id"]
            listed = structured(await session.call_tool("workflow_list", {}))
            assert any(r["run_id"] == run_id for r in listed["runs"]), listed
            resumed = structured(await session.call_tool("workflow_resume", {
                "run_id": run_id, "wait_id": wait_id, "request_id": "mcp-1", "approved": True}))
            assert resumed["outcome"] == "approved", resumed
            state = await settle(session, run_id, {"completed", "failed"})
            assert state["status"] == "completed", state
            assert state["vars"]["$done"] is True, state
            seen["workflow"] = state["status"]

            bad = await session.call_tool("write_note", {
                "path": "relative.md", "mode": "create", "content": "x"})
            assert bad.is_error, bad
            seen["bad_write"] = bad.content[0].text
    print(json.dumps(seen))


async def settle(session, run_id, states, deadline=30.0):
    """Waits until the run reaches one of `states`, for at most `deadline` seconds."""
    loop = asyncio.get_running_loop()
    end = loop.time() + deadline
    while True:
        state = structured(await session.call_tool("workflow_get", {"run_id": run_id}))
        if state["status"] in states:
            return state
        assert loop.time() < end, f"run {run_id} stayed {state['status']}, wanted {states}"
        await asyncio.sleep(0.05)


async def without_daemon(binary, env_file):
    """With no daemon on the socket the server still answers: tools say how to start one."""
    with open(env_file) as f:
        env = json.load(f)
    params = StdioServerParameters(command=binary, args=["mcp"], env=env)
    async with stdio_client(params) as (read, write):
        async with ClientSession(read, write) as session:
            await session.initialize()
            assert (await session.list_tools()).tools
            r = await session.call_tool("search_notes", {"query": "anything"})
            assert r.is_error, r
            text = r.content[0].text
            assert "brain daemon" in text, text
            # The server is still up after the failed call.
            r = await session.call_tool("brain_status", {})
            assert r.is_error, r
            # Listing resources on connect is not an error: there are none to show.
            assert (await session.list_resources()).resources == []
            print(json.dumps({"no_daemon": text}))


if __name__ == "__main__":
    if sys.argv[1] == "--no-daemon":
        asyncio.run(without_daemon(sys.argv[2], sys.argv[3]))
    else:
        asyncio.run(main(*sys.argv[1:4]))
