"""The official SDKs read answers under output guards (tests/output_guards.rs).

  TG_REDACT_BASE  a gateway whose output guards redact
  TG_BLOCK_BASE   a gateway whose output guards block
  TG_KEY          an API key
Prints one "ok <name>" line per scenario; any failure raises (exit 1).
"""

import base64
import json
import os

import anthropic
import openai

KEY = os.environ["TG_KEY"]
BEFORE = "Sure! Your colleague's address is "
PIECES = [BEFORE + "bob@exa", "mple.com, write to them."]
REDACTED = BEFORE + "[REDACTED:email], write to them."
ANSWER = {"x-mock-answer-b64": base64.b64encode(json.dumps(PIECES).encode()).decode()}
MESSAGES = [{"role": "user", "content": "Who handles my ticket?"}]


def ok(name):
    print(f"ok {name}", flush=True)


def scenarios(base, redact):
    mode = "redact" if redact else "block"
    chat = openai.OpenAI(base_url=f"{base}/v1", api_key=KEY, max_retries=0)
    chunks = list(
        chat.chat.completions.create(
            model="gpt", messages=MESSAGES, stream=True, extra_headers=ANSWER
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    finish = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    if redact:
        assert text == REDACTED and finish == ["stop"], chunks
        with chat.chat.completions.stream(
            model="gpt", messages=MESSAGES, extra_headers=ANSWER
        ) as stream:
            for _ in stream:
                pass
            final = stream.get_final_completion()
        assert final.choices[0].message.content == REDACTED, final
    else:
        assert text == BEFORE and finish == ["content_filter"], chunks
        # The stream helper reports a content-filter finish with its own
        # typed exception, as it does for OpenAI's own filter.
        try:
            with chat.chat.completions.stream(
                model="gpt", messages=MESSAGES, extra_headers=ANSWER
            ) as stream:
                for _ in stream:
                    pass
                stream.get_final_completion()
            raise AssertionError("expected ContentFilterFinishReasonError")
        except openai.ContentFilterFinishReasonError:
            pass
    ok(f"openai chat stream {mode}")

    claude = anthropic.Anthropic(base_url=base, api_key=KEY, max_retries=0)
    with claude.messages.stream(
        model="claude", max_tokens=100, messages=MESSAGES, extra_headers=ANSWER
    ) as stream:
        text = "".join(stream.text_stream)
        message = stream.get_final_message()
    if redact:
        assert text == REDACTED and message.stop_reason == "end_turn", message
    else:
        assert text == BEFORE and message.stop_reason == "refusal", message
    ok(f"anthropic stream {mode}")

    events = list(
        chat.responses.create(model="gpt", input="Hi", stream=True, extra_headers=ANSWER)
    )
    deltas = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    numbers = [e.sequence_number for e in events]
    assert numbers == list(range(numbers[0], numbers[0] + len(numbers))), numbers
    if redact:
        assert deltas == REDACTED, deltas
        assert events[-1].type == "response.completed", events[-1]
        assert events[-1].response.output_text == REDACTED, events[-1]
    else:
        assert deltas == BEFORE, deltas
        assert events[-1].type == "response.incomplete", events[-1]
        assert events[-1].response.incomplete_details.reason == "content_filter", events[-1]
    ok(f"openai responses stream {mode}")

    message = claude.messages.create(
        model="claude", max_tokens=100, messages=MESSAGES, extra_headers=ANSWER
    )
    completion = chat.chat.completions.create(model="gpt", messages=MESSAGES, extra_headers=ANSWER)
    response = chat.responses.create(model="gpt", input="Hi", extra_headers=ANSWER)
    if redact:
        assert message.content[0].text == REDACTED, message
        assert completion.choices[0].message.content == REDACTED, completion
        assert response.output_text == REDACTED, response
    else:
        assert message.stop_reason == "refusal" and message.content == [], message
        assert completion.choices[0].finish_reason == "content_filter", completion
        assert response.incomplete_details.reason == "content_filter", response
    ok(f"json answers {mode}")


scenarios(os.environ["TG_REDACT_BASE"], True)
scenarios(os.environ["TG_BLOCK_BASE"], False)
