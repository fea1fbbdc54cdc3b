"""A fake OpenAI Chat Completions server (`POST /v1/chat/completions`) for the real SDK.

Point the SDK at `fake.base_url`. Script answers with `reply_text`, `reply_tool_calls`,
`reply_error` or `reply_rate_limited`; an empty queue answers `default_text`.
"""

from __future__ import annotations

import itertools
import json
from typing import Any

from fakes.http import Reply, Request, ScriptedServer

__all__ = ["FakeOpenAI"]

_PATHS = ("/v1/chat/completions", "/chat/completions")
_ids = itertools.count(1)


class FakeOpenAI(ScriptedServer):
    """Scriptable OpenAI-compatible server; see the module docstring."""

    def __init__(self, default_text: str = "ok") -> None:
        super().__init__()
        self.default_text = default_text

    @property
    def base_url(self) -> str:
        """The base URL the SDK takes (`.../v1`)."""
        return f"{self.url}/v1"

    # -- reply builders ---------------------------------------------------------------
    @staticmethod
    def completion(
        message: dict[str, Any],
        *,
        finish_reason: str = "stop",
        prompt_tokens: int = 11,
        completion_tokens: int = 7,
        cached_tokens: int = 0,
        cost: float | None = None,
        model: str | None = None,
        delay: float = 0.0,
    ) -> Reply:
        """A 200 chat.completion whose model echoes the request's unless `model` is given."""

        def body(request: Request) -> dict[str, Any]:
            usage: dict[str, Any] = {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
                "prompt_tokens_details": {"cached_tokens": cached_tokens},
            }
            if cost is not None:
                usage["cost"] = cost
            return {
                "id": "chatcmpl-fake",
                "object": "chat.completion",
                "created": 1_700_000_000,
                "model": model or (request.json() or {}).get("model", "unknown"),
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "refusal": None, **message},
                        "finish_reason": finish_reason,
                        "logprobs": None,
                    }
                ],
                "usage": usage,
            }

        return Reply(200, body, delay=delay)

    @classmethod
    def text(cls, content: str, **kw: Any) -> Reply:
        """A plain text answer; keywords as in `completion`."""
        return cls.completion({"content": content}, **kw)

    @classmethod
    def tool_calls(cls, calls: list[tuple[str, Any]], **kw: Any) -> Reply:
        """An answer calling tools: (name, arguments) pairs; finish_reason tool_calls.

        Each call gets a fresh id; `arguments` may be a raw string (to send broken JSON).
        The keyword `text` sets the message's content beside the calls.
        """
        message = {
            "content": kw.pop("text", None),
            "tool_calls": [
                {
                    "id": f"call_{next(_ids)}",
                    "type": "function",
                    "function": {
                        "name": name,
                        "arguments": args if isinstance(args, str) else json.dumps(args),
                    },
                }
                for name, args in calls
            ],
        }
        kw.setdefault("finish_reason", "tool_calls")
        return cls.completion(message, **kw)

    @staticmethod
    def error(
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",  # noqa: A002 - OpenAI's field name
        code: str | None = None,
        headers: dict[str, str] | None = None,
        delay: float = 0.0,
    ) -> Reply:
        """An error in OpenAI's shape: `{"error": {"message", "type", "code"}}`."""
        body = {"error": {"message": message, "type": type, "code": code, "param": None}}
        return Reply(status, body, headers=dict(headers or {}), delay=delay)

    @classmethod
    def rate_limited(cls, message: str = "Rate limit reached", retry_after_ms: int = 1) -> Reply:
        """A 429 that asks to retry after `retry_after_ms`."""
        return cls.error(
            429,
            message,
            type="rate_limit_error",
            code="rate_limit_exceeded",
            headers={"retry-after-ms": str(retry_after_ms)},
        )

    # -- queueing shortcuts -----------------------------------------------------------
    def reply_text(self, content: str, **kw: Any) -> None:
        """Queues a text answer."""
        self.push(self.text(content, **kw))

    def reply_tool_calls(self, calls: list[tuple[str, Any]], **kw: Any) -> None:
        """Queues a tool-calling answer."""
        self.push(self.tool_calls(calls, **kw))

    def reply_error(self, status: int, message: str, **kw: Any) -> None:
        """Queues an error answer."""
        self.push(self.error(status, message, **kw))

    def reply_rate_limited(self, **kw: Any) -> None:
        """Queues a 429."""
        self.push(self.rate_limited(**kw))

    # -- server hooks -----------------------------------------------------------------
    def route(self, request: Request) -> Reply | None:
        if request.method != "POST" or request.path.split("?")[0] not in _PATHS:
            return self.error(404, f"no route {request.method} {request.path}", type="not_found")
        return None

    def _next(self, request: Request) -> Reply:
        reply = super()._next(request)
        body = request.json() if request.body else None
        if isinstance(body, dict) and body.get("stream") and reply.status == 200:
            return _streamed(reply)
        return reply

    def default_reply(self, request: Request) -> Reply:
        return self.text(self.default_text)

    # -- inspecting -------------------------------------------------------------------
    def bodies(self) -> list[dict[str, Any]]:
        """The JSON bodies of the chat completion requests received."""
        return [r.json() for r in self.requests if r.path.split("?")[0] in _PATHS]


def stream_chunks(completion: dict[str, Any]) -> bytes:
    """A chat.completion re-sent as the SSE chunks of a streamed answer (text in pieces,
    tool calls as fragments, usage in a last chunk as `stream_options.include_usage`)."""
    base = {k: completion[k] for k in ("id", "created", "model")}
    base["object"] = "chat.completion.chunk"
    choice = completion["choices"][0]
    message = choice["message"]
    deltas: list[dict[str, Any]] = [{"role": "assistant"}]
    text = message.get("content") or ""
    deltas += [{"content": text[i : i + 5]} for i in range(0, len(text), 5)]
    for index, call in enumerate(message.get("tool_calls") or ()):
        head = {
            "index": index,
            "id": call["id"],
            "type": "function",
            "function": {"name": call["function"]["name"], "arguments": ""},
        }
        args = call["function"]["arguments"]
        deltas.append({"tool_calls": [head]})
        deltas.append({"tool_calls": [{"index": index, "function": {"arguments": args}}]})
    if message.get("refusal"):
        deltas.append({"refusal": message["refusal"]})
    events = [
        {**base, "choices": [{"index": 0, "delta": d, "finish_reason": None}]} for d in deltas
    ]
    events.append(
        {**base, "choices": [{"index": 0, "delta": {}, "finish_reason": choice["finish_reason"]}]}
    )
    events.append({**base, "choices": [], "usage": completion["usage"]})
    lines = [f"data: {json.dumps(e)}\n\n" for e in events] + ["data: [DONE]\n\n"]
    return "".join(lines).encode()


def _streamed(reply: Reply) -> Reply:
    def body(request: Request) -> bytes:
        return stream_chunks(json.loads(reply.render(request)))

    return Reply(200, body, {"Content-Type": "text/event-stream", **reply.headers}, reply.delay)
