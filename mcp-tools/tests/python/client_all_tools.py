"""Drives the real `mcp-tools` binary with the official MCP Python SDK (`mcp`, PyPI).

Run by mcp-tools/tests/suite/python_sdk.rs, which prepares a session and passes it in:
MCP_TOOLS_BIN, CLAWBOX_MAILBOX_DIR, CLAWBOX_WORKSPACE, CLAWBOX_AGENT_DIR, CLAWBOX_SKILLS_DIR,
and USER_MESSAGE_ID (the seq of an inbound chat message). Lists the tools, calls each one
(and a few refusals), checks every answer, and prints one JSON line with the ids the Rust side
checks in the session databases. Any failed check raises, so the exit status is non-zero.
"""

import asyncio
import json
import os
import re

from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client

EXPECTED_TOOLS = {
    "add_reaction",
    "edit_file",
    "edit_message",
    "grep",
    "list_files",
    "load_skill",
    "read_file",
    "run_bash",
    "send_file",
    "send_message",
    "write_file",
    # Scheduled tasks: requests to the host, which this test does not run.
    "schedule_task",
    "list_tasks",
    "update_task",
    "pause_task",
    "resume_task",
    "cancel_task",
    # Questions for the user: a request answered later by the host.
    "ask_user_question",
}


def text_of(result) -> str:
    return "\n".join(block.text for block in result.content if block.type == "text")


async def call(session: ClientSession, name: str, arguments: dict, *, error: bool = False) -> str:
    result = await session.call_tool(name, arguments)
    text = text_of(result)
    if result.is_error != error:
        raise AssertionError(f"{name}({arguments}): is_error={result.is_error}, expected {error}: {text!r}")
    return text


def expect(got: str, pattern: str) -> re.Match:
    match = re.fullmatch(pattern, got, re.DOTALL)
    if match is None:
        raise AssertionError(f"expected /{pattern}/, got {got!r}")
    return match


async def main() -> None:
    env_names = ["CLAWBOX_MAILBOX_DIR", "CLAWBOX_WORKSPACE", "CLAWBOX_AGENT_DIR", "CLAWBOX_SKILLS_DIR"]
    server = StdioServerParameters(
        command=os.environ["MCP_TOOLS_BIN"],
        env={name: os.environ[name] for name in env_names} | {"RUST_LOG": "mcp_tools=debug"},
    )
    user_message = int(os.environ["USER_MESSAGE_ID"])
    async with stdio_client(server) as (read, write):
        async with ClientSession(read, write) as session:
            init = await session.initialize()
            assert init.server_info.name == "mcp-tools", init.server_info
            assert init.capabilities.tools is not None, init.capabilities

            tools = (await session.list_tools()).tools
            names = {tool.name for tool in tools}
            assert names == EXPECTED_TOOLS, sorted(names ^ EXPECTED_TOOLS)
            for tool in tools:
                assert tool.description and len(tool.description) > 40, tool.name
                assert tool.input_schema.get("type") == "object", (tool.name, tool.input_schema)
                for prop, schema in tool.input_schema.get("properties", {}).items():
                    assert schema.get("description"), f"{tool.name}.{prop} has no description"

            sent = await call(session, "send_message", {"text": "hello from python"})
            sent_id = int(expect(sent, r"sent \(id (\d+)\)").group(1))

            expect(
                await call(session, "write_file", {"path": "py/hello.txt", "content": "hello\nworld\n"}),
                r"wrote 12 bytes to py/hello\.txt",
            )
            expect(
                await call(session, "read_file", {"path": "py/hello.txt"}),
                r"     1\thello\n     2\tworld\n",
            )
            expect(
                await call(
                    session, "edit_file", {"path": "py/hello.txt", "old_string": "world", "new_string": "python"}
                ),
                r"edited py/hello\.txt \(at line 2\)",
            )
            expect(await call(session, "list_files", {"path": "py"}), r"file  py/hello\.txt \(13 bytes\)")
            expect(await call(session, "grep", {"pattern": "pyth", "path": "py"}), r"py/hello\.txt:2: python")
            expect(await call(session, "run_bash", {"command": "wc -l < py/hello.txt", "timeout_ms": 10000}), r"2\n")

            file_reply = await call(session, "send_file", {"path": "py/hello.txt", "text": "a file", "to": "work"})
            file_id = int(expect(file_reply, r"sent hello\.txt to work \(id (\d+)\)").group(1))

            edit_reply = await call(session, "edit_message", {"message_id": sent_id, "text": "edited from python"})
            edit_id = int(expect(edit_reply, rf"edited message {sent_id} \(id (\d+)\)").group(1))

            reaction_reply = await call(session, "add_reaction", {"message_id": user_message, "emoji": "👍"})
            reaction_id = int(expect(reaction_reply, rf"reacted 👍 to message {user_message} \(id (\d+)\)").group(1))

            expect(await call(session, "load_skill", {"name": "welcome"}), r"---\nname: welcome\n---\nSay hello\.\n")

            # Refusals arrive as tool errors (is_error), with text the model can act on.
            expect(
                await call(session, "read_file", {"path": "../inbound/inbound.db"}, error=True),
                r"path escapes the workspace: \.\./inbound/inbound\.db \(`\.\.` is not allowed in paths\)",
            )
            expect(
                await call(session, "edit_message", {"message_id": user_message, "text": "x"}, error=True),
                rf"message {user_message} is a user message; you can only edit your own messages",
            )
            expect(
                await call(session, "load_skill", {"name": "nope"}, error=True),
                r'unknown skill "nope"; available skills: welcome',
            )
            expect(await call(session, "run_bash", {"command": "exit 3"}, error=True), r"\[exit 3\]\n\[no output\]")
            expect(
                await call(session, "ask_user_question", {"title": "T", "question": "Q?", "options": []}, error=True),
                r"options is empty: give at least one choice",
            )

    print(
        json.dumps(
            {"sent": sent_id, "file": file_id, "edit": edit_id, "reaction": reaction_id, "user_message": user_message}
        )
    )


if __name__ == "__main__":
    asyncio.run(main())
