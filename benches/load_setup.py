#!/usr/bin/env python3
"""Set-up files for benches/load.sh (stdlib only: no PyYAML needed).

    load_setup.py gateway SRC OUT --listen P --admin P --json-port P --sse-port P
                          --work DIR --name NAME --access-log PATH|off --key-sha256 HEX
        OUT = the shipped config SRC (conf/tollgate.yaml: every policy on) with
        only what a loopback bench must change: ports, peers, file paths, the
        first API key's digest, limits raised to large FINITE numbers (still
        enforced, never refusing), plus the two bench models `m` / `m-sse`.
        Prints "user=... tenant=... roles=..." of the bench key.
    load_setup.py nginx OUT --work DIR --json-port P --sse-port P
        nginx mock upstream: realistic OpenAI chat answers, JSON and SSE.
    load_setup.py bodies DIR --key KEY
        the request bodies and the wrk Lua scripts that send them.

The config is rewritten as text, section by section, and every substitution
must hit the expected number of lines: if conf/tollgate.yaml changes shape,
this fails loudly instead of benchmarking a half-rewritten config.
"""
import argparse
import json
import os
import re
import sys

# ---------------------------------------------------------------- upstream
# Token counts reported by the mock upstream. Distinct completion counts for
# JSON and SSE, so load.sh can check in /metrics that tollgate billed the
# upstream's `usage` (and did not fall back to estimating).
PROMPT_TOKENS = 142
JSON_COMPLETION_TOKENS = 58
SSE_COMPLETION_TOKENS = 61

ANSWER = (
    "Sorry about the cracked leg! You do not need to return the whole desk: "
    "I have opened a replacement-part request for order 48213 and the new leg "
    "ships within 3 business days. The motor warranty (5 years) stays valid "
    "when you assemble the desk yourself; see Help Center article "
    "Assembling your standing desk."
)


def chat_json():
    return {
        "id": "chatcmpl-bench0001",
        "object": "chat.completion",
        "created": 1764633600,
        "model": "gpt-4o-mini-2024-07-18",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": ANSWER, "refusal": None},
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
        "usage": {
            "prompt_tokens": PROMPT_TOKENS,
            "completion_tokens": JSON_COMPLETION_TOKENS,
            "total_tokens": PROMPT_TOKENS + JSON_COMPLETION_TOKENS,
            "prompt_tokens_details": {"cached_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 0},
        },
        "system_fingerprint": "fp_bench",
    }


def chat_sse():
    """What OpenAI streams with stream_options.include_usage (which tollgate
    adds): content deltas with "usage": null, a finish chunk, then a chunk
    with "choices": [] carrying `usage` (what openai_chat::on_stream_event
    reads), then [DONE]."""
    words = ANSWER.split(" ")
    pieces = [" ".join(words[i:i + 3]) + " " for i in range(0, len(words), 3)][:20]
    base = {"id": "chatcmpl-bench0002", "object": "chat.completion.chunk",
            "created": 1764633600, "model": "gpt-4o-mini-2024-07-18",
            "system_fingerprint": "fp_bench"}
    events = [dict(base, choices=[{"index": 0, "delta": {"role": "assistant", "content": ""},
                                   "logprobs": None, "finish_reason": None}], usage=None)]
    for p in pieces:
        events.append(dict(base, choices=[{"index": 0, "delta": {"content": p},
                                           "logprobs": None, "finish_reason": None}], usage=None))
    events.append(dict(base, choices=[{"index": 0, "delta": {}, "logprobs": None,
                                       "finish_reason": "stop"}], usage=None))
    events.append(dict(base, choices=[], usage={
        "prompt_tokens": PROMPT_TOKENS,
        "completion_tokens": SSE_COMPLETION_TOKENS,
        "total_tokens": PROMPT_TOKENS + SSE_COMPLETION_TOKENS,
        "prompt_tokens_details": {"cached_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 0}}))
    text = "".join(f"data: {json.dumps(e, separators=(',', ':'))}\n\n" for e in events)
    return text + "data: [DONE]\n\n"


def nginx_string(text):
    """An nginx single-quoted string. `$` would start a variable in `return`."""
    assert "$" not in text, "nginx would expand $ in a return text"
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'").replace("\n", "\\n") + "'"


def nginx_return(var, text):
    """`return 200 <text>;` for any length: nginx refuses a config token over
    4 KiB, so a longer text is cut into `set` variables joined by `return`
    (a few KiB copied per request: negligible next to a proxy hop)."""
    if len(text) <= 2000:
        return f"return 200 {nginx_string(text)};"
    parts = [text[i:i + 2000] for i in range(0, len(text), 2000)]
    sets = "".join(f"set ${var}{i} {nginx_string(p)};\n            " for i, p in enumerate(parts))
    return sets + "return 200 \"" + "".join("${" + f"{var}{i}" + "}" for i in range(len(parts))) + "\";"


def cmd_nginx(a):
    tickets = {"agent": "alice", "tickets": [
        {"id": 48213, "subject": "Cracked desk leg", "status": "open", "priority": "normal"},
        {"id": 48190, "subject": "Invoice copy", "status": "pending", "priority": "low"}]}
    w = a.work
    conf = f"""# nginx mock upstream for benches/load.sh (generated; loopback only).
daemon off;                     # load.sh keeps the master as its child
worker_processes 1;
pid {w}/nginx.pid;
error_log {w}/nginx-error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    server_tokens off;
    # Benchmark clients and proxies keep their connections: no forced
    # re-connects every 1000 requests (the 1.22 default).
    keepalive_requests 10000000;
    keepalive_timeout 300s;
    # Bodies stay in memory; temp paths inside the work dir, so a non-root
    # nginx does not need /var/lib/nginx.
    client_body_buffer_size 1m;
    client_body_temp_path {w}/ngx-body;
    proxy_temp_path {w}/ngx-proxy;
    fastcgi_temp_path {w}/ngx-fastcgi;
    uwsgi_temp_path {w}/ngx-uwsgi;
    scgi_temp_path {w}/ngx-scgi;
    default_type application/json;

    server {{    # support API + LLM JSON answers (`return` answers any method)
        listen 127.0.0.1:{a.json_port};
        location = /v1/chat/completions {{
            {nginx_return('chat', json.dumps(chat_json(), separators=(',', ':')))}
        }}
        location / {{
            {nginx_return('tickets', json.dumps(tickets, separators=(',', ':')))}
        }}
    }}
    server {{    # LLM SSE answers
        listen 127.0.0.1:{a.sse_port};
        location = /v1/chat/completions {{
            default_type text/event-stream;
            add_header Cache-Control no-cache;
            {nginx_return('sse', chat_sse())}
        }}
        location / {{
            return 200 '{{"ok":true}}';
        }}
    }}
}}
"""
    with open(a.out, "w") as f:
        f.write(conf)


# ------------------------------------------------------------------ bodies
def chat_request(model, stream):
    """A support-agent prompt of about 600 bytes (the issue's "606-byte chat
    body"): no PII and no injection, so the guards scan and pass it."""
    body = {
        "model": model,
        "max_tokens": 256,
        "messages": [
            {"role": "system", "content":
                "You are the support assistant of Acme Furniture. Answer in at most "
                "five sentences, cite the help-center article you used, and hand the "
                "case to a human agent for refunds above 100 USD."},
            {"role": "user", "content":
                "Hi, I ordered a standing desk last week (order 48213) and it arrived "
                "with a cracked leg. The courier left it at the door and the box was "
                "damaged too. Can you send a replacement part, or do I need to return "
                "the whole desk? I would rather not wait two weeks. Will the "
                "motor warranty still apply if I assemble it myself?"},
        ],
    }
    if stream:
        body["stream"] = True  # tollgate adds stream_options.include_usage itself
    return json.dumps(body, separators=(",", ":"))


def cmd_bodies(a):
    for name, model, stream in (("chat", "m", False), ("sse", "m-sse", True)):
        body = chat_request(model, stream)
        assert "]==]" not in body
        with open(os.path.join(a.dir, f"{name}.json"), "w") as f:
            f.write(body)
        # Long brackets: the JSON's quotes and backslashes stay as they are.
        lua = ('wrk.method = "POST"\n'
               'wrk.headers["Content-Type"] = "application/json"\n'
               f'wrk.headers["X-API-Key"] = "{a.key}"\n'
               f"wrk.body = [==[{body}]==]\n")
        with open(os.path.join(a.dir, f"{name}.lua"), "w") as f:
            f.write(lua)
        print(f"{name}={len(body.encode())}")


# ----------------------------------------------------------------- gateway
def fail(msg):
    sys.exit(f"load_setup.py gateway: {msg} (conf/tollgate.yaml changed shape? update benches/load_setup.py)")


def section(text, key):
    """(start, end) of the top-level block `key:` up to the next top-level key."""
    m = re.search(rf"(?m)^{re.escape(key)}:[ \t]*$", text)
    if not m:
        fail(f"no top-level '{key}:' section")
    nxt = re.compile(r"(?m)^[A-Za-z_][\w-]*:").search(text, m.end())
    return m.start(), (nxt.start() if nxt else len(text))


def sub_in(text, key, pattern, repl, count=None, at_least=1):
    """re.sub inside one top-level section; `count` = exact hits expected."""
    s, e = section(text, key)
    new, n = re.subn(pattern, repl, text[s:e], flags=re.M)
    if (count is not None and n != count) or n < at_least:
        fail(f"{key}: pattern {pattern!r} matched {n} time(s)")
    return text[:s] + new + text[e:]


def block(text, key, head):
    """Lines of the entry starting with the line `head` (regex) inside the
    section `key`, up to the next line indented as much or less; comment-only
    lines dropped."""
    s, e = section(text, key)
    lines = text[s:e].split("\n")
    for i, line in enumerate(lines):
        if re.fullmatch(head, line):
            indent = len(line) - len(line.lstrip())
            out = [re.sub(r"\s+#.*$", "", line)]
            for nxt in lines[i + 1:]:
                stripped = nxt.strip()
                if not stripped or stripped.startswith("#"):
                    continue
                if len(nxt) - len(nxt.lstrip()) <= indent and not nxt.lstrip().startswith("#"):
                    break
                out.append(re.sub(r"\s+#.*$", "", nxt))  # trailing comments
            return out
    fail(f"{key}: no entry {head!r}")


def drop_block(text, key, sub):
    """Remove `sub:` (and its indented body) from section `key`, if active."""
    s, e = section(text, key)
    part = text[s:e]
    m = re.search(rf"(?m)^(  ){re.escape(sub)}:.*\n(?:(?:    .*|[ \t]*)\n)*", part)
    if not m:
        return text
    return text[:s] + part[:m.start()] + part[m.end():] + text[e:]


def cmd_gateway(a):
    text = open(a.src).read()
    w, name = a.work, a.name
    big_rpm = "1000000000"        # u32 in the schema; ~16.7 M requests/s
    big_tokens = "1000000000000"  # 10^12 tokens
    big_usd = "1000000000.0"      # USD, stored as micro-USD in u64

    # server: ports and per-instance paths. TLS needs certificate files: off.
    text = drop_block(text, "server", "tls")
    text = sub_in(text, "server", r"^  listen: .*$", f'  listen: ["127.0.0.1:{a.listen}"]', count=1)
    text = sub_in(text, "server", r"^  admin_listen: .*$", f'  admin_listen: "127.0.0.1:{a.admin}"', count=1)
    text = sub_in(text, "server", r"^  upgrade_sock: .*$", f"  upgrade_sock: {w}/{name}-upgrade.sock", count=1)
    text = sub_in(text, "server", r"^  pid_file: .*$", f"  pid_file: {w}/{name}.pid", count=1)

    # auth: the first API key becomes the bench key (its user, tenant and
    # roles are kept, so RBAC and the owner rule run for real); its expiry
    # is moved out of the way of future runs but still checked.
    s, e = section(text, "auth")
    m = re.search(r"(?m)^( +)- id: (\S+).*\n((?:\1  .*\n)*)", text[s:e])
    if not m:
        fail("auth: no api_keys entry")
    entry = m.group(3)
    fields = {k: re.search(rf"(?m)^ +{k}: (.*?)\s*(?:#.*)?$", entry) for k in ("user", "tenant", "roles")}
    if not all(fields.values()) or not re.search(r'(?m)^\s+sha256: "[0-9a-f]{64}"', entry):
        fail("auth: first api key lacks sha256/user/tenant/roles")
    entry = re.sub(r'(?m)^(\s+sha256: )"[0-9a-f]{64}"', rf'\1"{a.key_sha256}"', entry, count=1)
    entry = re.sub(r'(?m)^(\s+expires_at: )"[^"]*"', r'\1"2099-12-31T00:00:00Z"', entry, count=1)
    text = text[:s + m.start(3)] + entry + text[s + m.end(3):]

    # upstreams: every pool to the nginx JSON port; a copy of the llm pool,
    # `llm-sse`, to the SSE port.
    text = sub_in(text, "upstreams", r"^(\s+peers: ).*$", rf'\1["127.0.0.1:{a.json_port}"]')
    sse_pool = block(text, "upstreams", r"  llm:\s*(#.*)?")
    sse_pool[0] = "  llm-sse:               # bench: the SSE answers"
    sse_pool = [re.sub(r"^(\s+peers: ).*$", rf'\g<1>["127.0.0.1:{a.sse_port}"]', l) for l in sse_pool]
    text = sub_in(text, "upstreams", r"^upstreams:.*\n", lambda m: m.group(0) + "\n".join(sse_pool) + "\n", count=1)

    # routes: their own rate limits stay, only raised.
    text = sub_in(text, "routes", r"(requests_per_minute: )\d+", rf"\g<1>{big_rpm}", at_least=0)

    # models: `m` = the shipped support-fast (same pool, prices, cap, roles,
    # fallbacks, upstream_model rewrite); `m-sse` the same on the SSE pool.
    fast = block(text, "models", r"  - name: support-fast\s*(#.*)?")
    m_json = [re.sub(r"name: support-fast", "name: m", fast[0])] + fast[1:]
    m_sse = [re.sub(r"name: support-fast", "name: m-sse", fast[0])] + [
        re.sub(r"^(\s+upstream: )llm\s*$", r"\1llm-sse", l) for l in fast[1:]
        if not re.match(r"\s+fallbacks:", l)]  # its fallback pool cannot stream
    if not any("upstream: llm-sse" in l for l in m_sse):
        fail("models: support-fast has no 'upstream: llm'")
    text = sub_in(text, "models", r"^models:.*\n",
                  lambda m: m.group(0) + "\n".join(m_json + m_sse) + "\n", count=1)

    # limits: every request rate, token and USD budget stays in force with
    # numbers no bench reaches (a 429 would fake a fast result).
    text = sub_in(text, "limits", r"(requests_per_minute: )\d+", rf"\g<1>{big_rpm}")
    text = sub_in(text, "limits", r"(tokens_per_(?:minute|day): )\d+", rf"\g<1>{big_tokens}")
    text = sub_in(text, "limits", r"(usd_per_month: )[\d.]+", rf"\g<1>{big_usd}")

    # store: a fresh ledger per instance in the work dir.
    text = sub_in(text, "store", r"^  path: .*$", f"  path: {w}/{name}-usage.db", count=1)

    # observability: access log to a file or off; no OTLP collector here.
    text = drop_block(text, "observability", "otlp")
    text = sub_in(text, "observability", r"^  access_log: .*$", f'  access_log: "{a.access_log}"', count=1)

    with open(a.out, "w") as f:
        f.write(text)
    g = {k: v.group(1) for k, v in fields.items()}
    print(f"user={g['user']} tenant={g['tenant']} roles={g['roles'].replace(' ', '')}")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sp = p.add_subparsers(dest="cmd", required=True)
    g = sp.add_parser("gateway")
    g.add_argument("src")
    g.add_argument("out")
    for opt in ("--listen", "--admin", "--json-port", "--sse-port", "--work", "--name",
                "--access-log", "--key-sha256"):
        g.add_argument(opt, required=True)
    n = sp.add_parser("nginx")
    n.add_argument("out")
    for opt in ("--work", "--json-port", "--sse-port"):
        n.add_argument(opt, required=True)
    b = sp.add_parser("bodies")
    b.add_argument("dir")
    b.add_argument("--key", required=True)
    a = p.parse_args()
    {"gateway": cmd_gateway, "nginx": cmd_nginx, "bodies": cmd_bodies}[a.cmd](a)


if __name__ == "__main__":
    main()
