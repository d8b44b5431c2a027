"""Drives a running tollgate with the official anthropic and openai SDKs.

Run by tests/sdk.rs against a real gateway and the mock backend, with:
  TG_BASE       the gateway's base URL (http://127.0.0.1:PORT)
  TG_KEY        an API key with room in its budget
  TG_POOR_KEY   an API key whose budget refuses every call
Prints one "ok <name>" line per scenario; any failure raises (exit 1).
"""

import os

import anthropic
import openai

BASE = os.environ["TG_BASE"]
KEY = os.environ["TG_KEY"]
POOR_KEY = os.environ["TG_POOR_KEY"]
# The mock answers 16 tokens of "tok" unless told otherwise.
MOCK_TOKENS = 16
MOCK_TEXT = " ".join(["tok"] * MOCK_TOKENS)
MESSAGES = [{"role": "user", "content": "How do I reset my password?"}]


def ok(name):
    print(f"ok {name}", flush=True)


def refused(call, error, status, code):
    """Runs `call`, which must raise `error` with this HTTP status and the
    gateway's error code; returns the exception."""
    try:
        call()
    except error as e:
        assert e.status_code == status, e
        assert e.body["error"]["code"] == code, e.body
        return e
    raise AssertionError(f"the call must raise {error.__name__}")


def anthropic_scenarios():
    client = anthropic.Anthropic(base_url=BASE, api_key=KEY, max_retries=0)
    message = client.messages.create(model="claude", max_tokens=50, messages=MESSAGES)
    assert message.content[0].text == MOCK_TEXT, message
    assert message.usage.output_tokens == MOCK_TOKENS, message.usage
    assert message.usage.input_tokens > 0, message.usage
    ok("anthropic messages")

    with client.messages.stream(
        model="claude", max_tokens=50, system="Be brief.", messages=MESSAGES
    ) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == MOCK_TEXT, text
    assert final.usage.output_tokens == MOCK_TOKENS, final.usage
    assert final.stop_reason == "end_turn", final
    ok("anthropic streaming")

    # An upstream that runs past max_tokens is cut off by the gateway; the
    # SDK sees an ordinary end at the cap.
    runaway = {"x-mock-ignore-cap": "1", "x-mock-completion-tokens": "1000000"}
    with client.messages.stream(
        model="claude", max_tokens=20, messages=MESSAGES, extra_headers=runaway
    ) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert final.stop_reason == "max_tokens", final
    assert 20 < final.usage.output_tokens < 2000, final.usage
    assert text.startswith("tok tok"), text[:40]
    ok("anthropic runaway stream ends at max_tokens")

    poor = anthropic.Anthropic(base_url=BASE, api_key=POOR_KEY, max_retries=0)
    over_budget = lambda: poor.messages.create(model="claude", max_tokens=50, messages=MESSAGES)
    e = refused(over_budget, anthropic.RateLimitError, 429, "token_budget_exceeded")
    assert e.response.headers.get("retry-after"), e.response.headers
    ok("anthropic 429 RateLimitError")

    stranger = anthropic.Anthropic(base_url=BASE, api_key="not-a-key", max_retries=0)
    unknown = lambda: stranger.messages.create(model="claude", max_tokens=50, messages=MESSAGES)
    refused(unknown, anthropic.AuthenticationError, 401, "invalid_api_key")
    ok("anthropic unknown key AuthenticationError")


def openai_scenarios():
    client = openai.OpenAI(base_url=f"{BASE}/v1", api_key=KEY, max_retries=0)
    response = client.responses.create(model="gpt", instructions="Be brief.", input="Hello")
    assert response.output_text == MOCK_TEXT, response
    assert response.usage.output_tokens == MOCK_TOKENS, response.usage
    ok("openai responses")

    events = list(client.responses.create(model="gpt", input="Hello", stream=True))
    deltas = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    completed = [e for e in events if e.type == "response.completed"]
    assert deltas == MOCK_TEXT, deltas
    assert completed and completed[0].response.usage.output_tokens == MOCK_TOKENS, events[-1]
    ok("openai responses streaming")

    runaway = {"x-mock-ignore-cap": "1", "x-mock-completion-tokens": "1000000"}
    events = list(
        client.responses.create(
            model="gpt", input="Hello", stream=True, max_output_tokens=20, extra_headers=runaway
        )
    )
    assert events[-1].type == "response.incomplete", events[-1]
    assert events[-1].response.incomplete_details.reason == "max_output_tokens", events[-1]
    ok("openai responses runaway stream ends incomplete")

    embeddings = client.embeddings.create(model="embed", input=["first article", "second"])
    assert len(embeddings.data) == 2, embeddings
    assert len(embeddings.data[0].embedding) == 8, embeddings.data[0]
    assert embeddings.usage.prompt_tokens > 0, embeddings.usage
    ok("openai embeddings")

    poor = openai.OpenAI(base_url=f"{BASE}/v1", api_key=POOR_KEY, max_retries=0)
    try:
        poor.responses.create(model="gpt", input="Hello")
        raise AssertionError("a call over budget must raise RateLimitError")
    except openai.RateLimitError as e:
        assert e.code == "token_budget_exceeded", e
    ok("openai 429 RateLimitError")


anthropic_scenarios()
openai_scenarios()
