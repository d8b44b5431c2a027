"""The official SDKs against models served by another provider's API.

Run by tests/sdk.rs against a real gateway (ConfigBuilder::translating)
and the mock backend, with TG_BASE (the gateway's base URL) and TG_KEY.
The openai SDK talks to an Anthropic-shaped and a Gemini-shaped upstream,
the anthropic SDK to an OpenAI-shaped one: JSON and streamed, a tool-call
round trip (call, tool result, final answer), cached-token usage.

Prints "ok <name>" per scenario and, per billed call, one line
"usage <model> <prompt> <completion> <cached> <cache_write>" with what the
SDK's own usage object says, for the Rust side to compare with the ledger.
Any failure raises (exit 1).
"""

import json
import os

import anthropic
import openai

BASE = os.environ["TG_BASE"]
KEY = os.environ["TG_KEY"]
MOCK_TEXT = "tok tok tok tok tok"
CACHE = {
    "x-mock-cached-tokens": "4",
    "x-mock-completion-tokens": "5",
}
TOOL = {**CACHE, "x-mock-tool-call": "get_ticket"}
QUESTION = "How do I reset my password?"
OPENAI_TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_ticket",
            "description": "Reads a ticket",
            "parameters": {"type": "object", "properties": {"id": {"type": "integer"}}},
        },
    }
]
ANTHROPIC_TOOLS = [
    {
        "name": "get_ticket",
        "description": "Reads a ticket",
        "input_schema": {"type": "object", "properties": {"id": {"type": "integer"}}},
    }
]


def ok(name):
    print(f"ok {name}", flush=True)


def billed_openai(model, usage):
    cached = usage.prompt_tokens_details.cached_tokens if usage.prompt_tokens_details else 0
    extra = usage.model_extra or {}
    write = extra.get("cache_creation_input_tokens") or 0
    print(f"usage {model} {usage.prompt_tokens} {usage.completion_tokens} {cached} {write}", flush=True)


def billed_anthropic(model, usage):
    read = usage.cache_read_input_tokens or 0
    write = usage.cache_creation_input_tokens or 0
    prompt = usage.input_tokens + read + write
    print(f"usage {model} {prompt} {usage.output_tokens} {read} {write}", flush=True)


def openai_scenarios(model):
    client = openai.OpenAI(base_url=f"{BASE}/v1", api_key=KEY, max_retries=0)
    messages = [{"role": "user", "content": QUESTION}]
    done = client.chat.completions.create(
        model=model, messages=messages, max_tokens=50, extra_headers=CACHE
    )
    assert done.choices[0].message.content == MOCK_TEXT, done
    assert done.choices[0].finish_reason == "stop", done
    assert done.usage.prompt_tokens_details.cached_tokens == 4, done.usage
    assert done.usage.completion_tokens == 5, done.usage
    billed_openai(model, done.usage)
    ok(f"openai {model} json")

    chunks = list(
        client.chat.completions.create(
            model=model,
            messages=messages,
            max_tokens=50,
            stream=True,
            stream_options={"include_usage": True},
            extra_headers=CACHE,
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    finish = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    usage = [c.usage for c in chunks if c.usage]
    assert text == MOCK_TEXT, text
    assert finish == ["stop"], finish
    assert usage and usage[-1].prompt_tokens_details.cached_tokens == 4, usage
    assert usage[-1].prompt_tokens == done.usage.prompt_tokens, (usage[-1], done.usage)
    billed_openai(model, usage[-1])
    ok(f"openai {model} stream")

    call = client.chat.completions.create(
        model=model, messages=messages, tools=OPENAI_TOOLS, extra_headers=TOOL
    )
    billed_openai(model, call.usage)
    assert call.choices[0].finish_reason == "tool_calls", call
    tool_call = call.choices[0].message.tool_calls[0]
    assert tool_call.function.name == "get_ticket", tool_call
    assert json.loads(tool_call.function.arguments) == {"id": 42}, tool_call
    followup = messages + [
        call.choices[0].message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": tool_call.id, "content": "ticket 42: open"},
    ]
    final = client.chat.completions.create(
        model=model, messages=followup, tools=OPENAI_TOOLS, extra_headers=TOOL
    )
    billed_openai(model, final.usage)
    assert final.choices[0].finish_reason == "stop", final
    assert final.choices[0].message.content, final

    # Streamed, the SDK assembles the call from its deltas.
    with client.chat.completions.stream(
        model=model, messages=messages, tools=OPENAI_TOOLS, extra_headers=TOOL
    ) as stream:
        for _ in stream:
            pass
        streamed = stream.get_final_completion()
    billed_openai(model, streamed.usage)
    streamed_call = streamed.choices[0].message.tool_calls[0]
    assert streamed_call.function.name == "get_ticket", streamed_call
    assert json.loads(streamed_call.function.arguments) == {"id": 42}, streamed_call
    ok(f"openai {model} tool round trip")


def anthropic_scenarios(model):
    client = anthropic.Anthropic(base_url=BASE, api_key=KEY, max_retries=0)
    messages = [{"role": "user", "content": QUESTION}]
    message = client.messages.create(
        model=model, max_tokens=50, system="Be brief.", messages=messages, extra_headers=CACHE
    )
    assert message.content[0].text == MOCK_TEXT, message
    assert message.stop_reason == "end_turn", message
    assert message.usage.cache_read_input_tokens == 4, message.usage
    assert message.usage.output_tokens == 5, message.usage
    billed_anthropic(model, message.usage)
    ok(f"anthropic {model} json")

    with client.messages.stream(
        model=model, max_tokens=50, system="Be brief.", messages=messages, extra_headers=CACHE
    ) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == MOCK_TEXT, text
    assert final.stop_reason == "end_turn", final
    assert final.usage.cache_read_input_tokens == 4, final.usage
    assert final.usage.input_tokens == message.usage.input_tokens, (final.usage, message.usage)
    billed_anthropic(model, final.usage)
    ok(f"anthropic {model} stream")

    call = client.messages.create(
        model=model, max_tokens=50, messages=messages, tools=ANTHROPIC_TOOLS, extra_headers=TOOL
    )
    billed_anthropic(model, call.usage)
    assert call.stop_reason == "tool_use", call
    use = [b for b in call.content if b.type == "tool_use"][0]
    assert use.name == "get_ticket" and use.input == {"id": 42}, use
    followup = messages + [
        {"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in call.content]},
        {
            "role": "user",
            "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "ticket 42: open"}],
        },
    ]
    final = client.messages.create(
        model=model, max_tokens=50, messages=followup, tools=ANTHROPIC_TOOLS, extra_headers=TOOL
    )
    billed_anthropic(model, final.usage)
    assert final.stop_reason == "end_turn", final

    with client.messages.stream(
        model=model, max_tokens=50, messages=messages, tools=ANTHROPIC_TOOLS, extra_headers=TOOL
    ) as stream:
        streamed = stream.get_final_message()
    billed_anthropic(model, streamed.usage)
    streamed_use = [b for b in streamed.content if b.type == "tool_use"][0]
    assert streamed_use.name == "get_ticket" and streamed_use.input == {"id": 42}, streamed_use
    assert streamed.stop_reason == "tool_use", streamed
    ok(f"anthropic {model} tool round trip")


openai_scenarios("claude-via-chat")
openai_scenarios("gemini-via-chat")
anthropic_scenarios("gpt-via-messages")
