"""A fake Bedrock runtime (`POST /model/{modelId}/converse`) for the real boto3 client.

Point boto3 at `fake.url` (`AWS_ENDPOINT_URL_BEDROCK_RUNTIME` or `endpoint_url`); SigV4
signing, error parsing and retry configuration then run for real. Script answers with
`reply_text`, `reply_tool_use`, `reply_tool_uses` or `reply_error`; an empty queue
answers `default_text`.
"""

from __future__ import annotations

import itertools
import json
import struct
import zlib
from typing import Any
from urllib.parse import unquote

from fakes.http import Reply, Request, ScriptedServer

__all__ = ["FakeBedrock", "model_id"]

_ids = itertools.count(1)


def model_id(request: Request) -> str | None:
    """The model id of a Converse request (URL-decoded), or None for any other path."""
    parts = request.path.split("?")[0].split("/")
    if len(parts) == 4 and parts[1] == "model" and parts[3] in ("converse", "converse-stream"):
        return unquote(parts[2])
    return None


class FakeBedrock(ScriptedServer):
    """Scriptable Bedrock Converse server; see the module docstring."""

    def __init__(self, default_text: str = "ok") -> None:
        super().__init__()
        self.default_text = default_text

    @staticmethod
    def converse(
        content: list[dict[str, Any]],
        *,
        stop_reason: str = "end_turn",
        input_tokens: int = 13,
        output_tokens: int = 5,
        cache_read: int = 0,
        delay: float = 0.0,
    ) -> Reply:
        """A 200 Converse response with the given content blocks."""
        usage = {
            "inputTokens": input_tokens,
            "outputTokens": output_tokens,
            "totalTokens": input_tokens + output_tokens + cache_read,
        }
        if cache_read:
            usage["cacheReadInputTokens"] = cache_read
        body = {
            "output": {"message": {"role": "assistant", "content": content}},
            "stopReason": stop_reason,
            "usage": usage,
            "metrics": {"latencyMs": 1},
        }
        return Reply(200, body, delay=delay)

    @classmethod
    def text(cls, text: str, **kw: Any) -> Reply:
        """A plain text answer; keywords as in `converse`."""
        return cls.converse([{"text": text}], **kw)

    @classmethod
    def tool_use(
        cls,
        name: str,
        tool_input: dict[str, Any],
        tool_use_id: str = "tooluse_1",
        text: str | None = None,
        **kw: Any,
    ) -> Reply:
        """An answer asking for one tool call (stopReason tool_use)."""
        content: list[dict[str, Any]] = [{"text": text}] if text else []
        content.append({"toolUse": {"toolUseId": tool_use_id, "name": name, "input": tool_input}})
        kw.setdefault("stop_reason", "tool_use")
        return cls.converse(content, **kw)

    @classmethod
    def tool_uses(
        cls, calls: list[tuple[str, dict[str, Any]]], text: str | None = None, **kw: Any
    ) -> Reply:
        """An answer asking for several tool calls, each with a fresh `toolUseId`."""
        content: list[dict[str, Any]] = [{"text": text}] if text else []
        for name, tool_input in calls:
            use = {"toolUseId": f"tooluse_{next(_ids)}", "name": name, "input": tool_input}
            content.append({"toolUse": use})
        kw.setdefault("stop_reason", "tool_use")
        return cls.converse(content, **kw)

    @staticmethod
    def error(status: int, error_type: str, message: str, delay: float = 0.0) -> Reply:
        """An AWS JSON error: status, `x-amzn-ErrorType` and `{"message": ...}`."""
        return Reply(
            status,
            {"message": message},
            headers={"x-amzn-ErrorType": error_type, "Content-Type": "application/json"},
            delay=delay,
        )

    def reply_text(self, text: str, **kw: Any) -> None:
        """Queues a text answer."""
        self.push(self.text(text, **kw))

    def reply_tool_use(self, name: str, tool_input: dict[str, Any], **kw: Any) -> None:
        """Queues a tool-use answer."""
        self.push(self.tool_use(name, tool_input, **kw))

    def reply_tool_uses(self, calls: list[tuple[str, dict[str, Any]]], **kw: Any) -> None:
        """Queues an answer asking for several tool calls."""
        self.push(self.tool_uses(calls, **kw))

    def reply_error(self, status: int, error_type: str, message: str, **kw: Any) -> None:
        """Queues an error answer."""
        self.push(self.error(status, error_type, message, **kw))

    def route(self, request: Request) -> Reply | None:
        if request.method != "POST" or model_id(request) is None:
            return self.error(404, "UnknownOperationException", f"no route {request.path}")
        return None

    def default_reply(self, request: Request) -> Reply:
        return self.text(self.default_text)

    def _next(self, request: Request) -> Reply:
        reply = super()._next(request)
        if request.path.split("?")[0].endswith("/converse-stream") and reply.status == 200:
            return _streamed(reply)
        return reply

    def model_ids(self) -> list[str]:
        """The model id of every Converse request received, in order."""
        return [m for m in (model_id(r) for r in self.requests) if m]

    def bodies(self) -> list[dict[str, Any]]:
        """The JSON bodies of the Converse requests received."""
        return [r.json() for r in self.requests if model_id(r)]


def _event(event_type: str, payload: dict[str, Any]) -> bytes:
    """One AWS event-stream message (what ConverseStream sends), with its CRCs."""
    headers = b""
    for name, value in (
        (":message-type", "event"),
        (":event-type", event_type),
        (":content-type", "application/json"),
    ):
        raw = value.encode()
        headers += bytes([len(name)]) + name.encode() + b"\x07" + struct.pack(">H", len(raw)) + raw
    body = json.dumps(payload).encode()
    total = 12 + len(headers) + len(body) + 4
    prelude = struct.pack(">II", total, len(headers))
    prelude += struct.pack(">I", zlib.crc32(prelude))
    message = prelude + headers + body
    return message + struct.pack(">I", zlib.crc32(message))


def stream_events(converse_body: dict[str, Any]) -> bytes:
    """A Converse response body re-sent as the ConverseStream events that carry it."""
    out = [_event("messageStart", {"role": "assistant"})]
    blocks = converse_body["output"]["message"]["content"]
    for index, block in enumerate(blocks):
        if "toolUse" in block:
            use = block["toolUse"]
            start = {"toolUse": {"toolUseId": use["toolUseId"], "name": use["name"]}}
            out.append(_event("contentBlockStart", {"start": start, "contentBlockIndex": index}))
            delta: dict[str, Any] = {"toolUse": {"input": json.dumps(use["input"])}}
        else:
            delta = {"text": block.get("text", "")}
        out.append(_event("contentBlockDelta", {"delta": delta, "contentBlockIndex": index}))
        out.append(_event("contentBlockStop", {"contentBlockIndex": index}))
    out.append(_event("messageStop", {"stopReason": converse_body["stopReason"]}))
    out.append(_event("metadata", {"usage": converse_body["usage"], "metrics": {"latencyMs": 1}}))
    return b"".join(out)


def _streamed(reply: Reply) -> Reply:
    def body(request: Request) -> bytes:
        return stream_events(json.loads(reply.render(request)))

    headers = {"Content-Type": "application/vnd.amazon.eventstream", **reply.headers}
    return Reply(200, body, headers, reply.delay)
