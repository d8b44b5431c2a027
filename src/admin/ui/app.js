// tollgate usage page. Talks only to the admin API it is served by; the
// admin token lives in sessionStorage (this tab only) and travels as a
// Bearer header, never in a URL.
"use strict";

const TOKEN_KEY = "tollgate-admin-token";
const COLORS = ["#2458c6", "#e07b39", "#3a9d5d", "#a4508b", "#c9a227", "#4aa3b5", "#7a6c5d", "#d1495b"];
const $ = (id) => document.getElementById(id);

function token() { return sessionStorage.getItem(TOKEN_KEY); }

class Unauthorized extends Error {}

async function api(path, asText) {
  const resp = await fetch(path, { headers: { Authorization: "Bearer " + token() }, cache: "no-store" });
  if (resp.status === 401) throw new Unauthorized("the admin token was refused");
  if (!resp.ok) {
    let message = resp.status + " " + resp.statusText;
    try { message = (await resp.json()).error.message; } catch (_) { /* not JSON */ }
    throw new Error(message);
  }
  return asText ? resp.text() : resp.json();
}

// A request with a JSON body (or none) and its answer: { status, body }
// where body is the parsed JSON (null for 204 or a body that is not JSON).
async function send(method, path, body, headers) {
  const init = { method, headers: { Authorization: "Bearer " + token(), ...(headers || {}) }, cache: "no-store" };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const resp = await fetch(path, init);
  if (resp.status === 401) throw new Unauthorized("the admin token was refused");
  let parsed = null;
  try { parsed = await resp.json(); } catch (_) { /* 204, or not JSON */ }
  return { status: resp.status, body: parsed };
}

function problem(answer) {
  const error = answer.body && answer.body.error;
  return (error && error.message) || "the gateway answered " + answer.status;
}

function isoDay(date) { return date.toISOString().slice(0, 10); }

function days(from, to) {
  const out = [];
  for (let d = new Date(from + "T00:00:00Z"); isoDay(d) <= to; d.setUTCDate(d.getUTCDate() + 1)) {
    out.push(isoDay(d));
  }
  return out;
}

function el(tag, text, cls) {
  const e = document.createElement(tag);
  if (text !== undefined) e.textContent = text;
  if (cls) e.className = cls;
  return e;
}

// A table body's one row saying it has none, across all `columns`.
function appendEmptyRow(body, text, columns) {
  const tr = el("tr");
  const td = el("td", text);
  td.colSpan = columns;
  tr.append(td);
  body.append(tr);
}

function svg(tag, attrs) {
  const e = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  return e;
}

function reportUrl(groupBy, format) {
  const q = new URLSearchParams({ from: $("from").value, to: $("to").value, group_by: groupBy });
  if (format) q.set("format", format);
  return "/admin/usage/report?" + q.toString();
}

// Spend per day as bars stacked by model.
function drawChart(report, from, to) {
  const chart = $("chart");
  chart.replaceChildren();
  const dayList = days(from, to);
  const models = [...new Set(report.rows.map((r) => r.model))].sort();
  const perDay = new Map(dayList.map((d) => [d, new Map()]));
  for (const r of report.rows) {
    if (perDay.has(r.day)) perDay.get(r.day).set(r.model, parseFloat(r.usd));
  }
  const totals = dayList.map((d) => [...perDay.get(d).values()].reduce((a, b) => a + b, 0));
  const max = Math.max(...totals, 0) || 1;
  const W = 900, H = 260, left = 60, bottom = 24, top = 10;
  const plotH = H - bottom - top;
  const slot = (W - left) / dayList.length;
  const barW = Math.max(2, Math.min(48, slot * 0.7));
  const root = svg("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": "Spend per day by model" });
  for (const frac of [0, 0.5, 1]) {
    const y = top + plotH * (1 - frac);
    root.append(svg("line", { x1: left, x2: W, y1: y, y2: y, class: "axis" }));
    const label = svg("text", { x: left - 6, y: y + 4, "text-anchor": "end" });
    const tick = max * frac;
    label.textContent = tick === 0 ? "$0" : "$" + tick.toFixed(tick < 1 ? 4 : 2);
    root.append(label);
  }
  dayList.forEach((day, i) => {
    const x = left + i * slot + (slot - barW) / 2;
    let y = top + plotH;
    models.forEach((model, m) => {
      const usd = perDay.get(day).get(model) || 0;
      if (usd <= 0) return;
      const h = (usd / max) * plotH;
      y -= h;
      const rect = svg("rect", { x, y, width: barW, height: Math.max(h, 0.5), fill: COLORS[m % COLORS.length], class: "bar",
                                 "data-day": day, "data-model": model, "data-usd": usd });
      const title = svg("title");
      title.textContent = `${day} ${model}: $${usd.toFixed(6)}`;
      rect.append(title);
      root.append(rect);
    });
    if (dayList.length <= 14 || i % Math.ceil(dayList.length / 14) === 0) {
      const label = svg("text", { x: x + barW / 2, y: H - 6, "text-anchor": "middle" });
      label.textContent = day.slice(5);
      root.append(label);
    }
  });
  chart.append(root);
  const legend = el("div", undefined, "legend");
  models.forEach((model, m) => {
    const item = el("span", model);
    item.style.setProperty("--swatch", COLORS[m % COLORS.length]);
    legend.append(item);
  });
  chart.append(legend);
}

// Remaining budget of one user, from the live counters.
async function remaining(user) {
  try {
    const u = await api("/admin/usage?user=" + encodeURIComponent(user));
    return [u.remaining.usd_month, u.remaining.tokens_day];
  } catch (e) {
    if (e instanceof Unauthorized) throw e;
    return ["?", "?"];
  }
}

async function drawTable(report) {
  const rows = report.rows.slice().sort((a, b) => parseFloat(b.usd) - parseFloat(a.usd));
  const left = await Promise.all(rows.map((r) => remaining(r.user)));
  const body = $("usage-table").tBodies[0];
  body.replaceChildren();
  const sum = { usd: 0, prompt: 0, completion: 0, calls: 0 };
  rows.forEach((r, i) => {
    const tr = el("tr");
    tr.append(el("td", r.tenant), el("td", r.user), el("td", r.usd, "num usd"),
      el("td", String(r.prompt_tokens), "num prompt"), el("td", String(r.completion_tokens), "num completion"),
      el("td", String(r.calls), "num calls"),
      el("td", left[i][0] === null ? "no limit" : String(left[i][0]), "num left-usd"),
      el("td", left[i][1] === null ? "no limit" : String(left[i][1]), "num left-tokens"));
    body.append(tr);
    sum.usd += parseFloat(r.usd); sum.prompt += r.prompt_tokens; sum.completion += r.completion_tokens; sum.calls += r.calls;
  });
  const foot = $("usage-table").tFoot;
  foot.replaceChildren();
  if (rows.length === 0) {
    appendEmptyRow(body, "No LLM calls in this range.", 8);
    return;
  }
  const tr = el("tr", undefined, "total");
  tr.append(el("td", "Total"), el("td", ""), el("td", sum.usd.toFixed(6), "num"), el("td", String(sum.prompt), "num"),
    el("td", String(sum.completion), "num"), el("td", String(sum.calls), "num"), el("td", ""), el("td", ""));
  foot.append(tr);
}

// The costliest conversations of the range. Ids are client-chosen text:
// set as textContent only, never parsed as HTML.
const TOP_CONVERSATIONS = 20;

function drawConversations(report) {
  const rows = report.rows.filter((r) => r.conversation !== "")
    .sort((a, b) => parseFloat(b.usd) - parseFloat(a.usd)).slice(0, TOP_CONVERSATIONS);
  const body = $("conversation-table").tBodies[0];
  body.replaceChildren();
  for (const r of rows) {
    const tr = el("tr");
    tr.append(el("td", r.tenant), el("td", r.conversation, "conversation"), el("td", r.usd, "num usd"),
      el("td", String(r.prompt_tokens), "num prompt"), el("td", String(r.completion_tokens), "num completion"),
      el("td", String(r.calls), "num calls"));
    body.append(tr);
  }
  if (rows.length === 0) {
    appendEmptyRow(body, "No calls named a conversation in this range.", 6);
  }
}

async function load() {
  const from = $("from").value, to = $("to").value;
  $("status").textContent = "Loading…";
  try {
    const [byDay, byUser, byConversation] = await Promise.all([api(reportUrl("day,model")),
      api(reportUrl("tenant,user")), api(reportUrl("tenant,conversation"))]);
    drawChart(byDay, from, to);
    await drawTable(byUser);
    drawConversations(byConversation);
    $("status").textContent = `${from} to ${to} (UTC days, inclusive)`;
    document.body.dataset.loaded = "true";
  } catch (e) {
    if (e instanceof Unauthorized) return showLogin(e.message);
    $("status").textContent = "Could not load the report: " + e.message;
  }
}

async function downloadCsv() {
  try {
    const text = await api(reportUrl("tenant,user", "csv"), true);
    const url = URL.createObjectURL(new Blob([text], { type: "text/csv" }));
    const a = el("a");
    a.href = url;
    a.download = `tollgate-usage-${$("from").value}-${$("to").value}.csv`;
    document.body.append(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 1000);
  } catch (e) {
    if (e instanceof Unauthorized) return showLogin(e.message);
    $("status").textContent = "Could not download: " + e.message;
  }
}

// ---- Keys view ----------------------------------------------------------
// Keys as the admin API lists them (DESIGN §5). A tenant-bound token gets
// its tenant's keys only (the API decides); the page shows what it gets.
// A secret is shown once, in the panel, and never kept anywhere else.

const keysState = { cursor: null, pending: null, idempotency: null };

function list(text) {
  return text.split(",").map((s) => s.trim()).filter((s) => s !== "");
}

function keyButton(label, id, onClick) {
  const b = el("button", label);
  b.type = "button";
  b.dataset.key = id;
  b.setAttribute("aria-label", `${label} key ${id}`);
  b.addEventListener("click", onClick);
  return b;
}

function keyRow(k) {
  const tr = el("tr", undefined, k.state);
  tr.dataset.key = k.id;
  const models = k.models === null || k.models === undefined ? "any" : k.models.join(", ");
  tr.append(el("td", k.id, "id"), el("td", k.user), el("td", k.tenant), el("td", (k.roles || []).join(", ")),
    el("td", models), el("td", k.state, "state"), el("td", k.source), el("td", k.expires_at || "never"),
    el("td", k.last_used_at || "never"), el("td", k.note || ""));
  const actions = el("td", undefined, "actions");
  if (k.source === "config") {
    actions.append(el("span", "managed by the config file", "help"));
  } else if (k.state !== "revoked") {
    actions.append(keyButton("Rotate", k.id, () => openRotate(k.id)), keyButton("Revoke", k.id, () => openRevoke(k.id)));
  }
  tr.append(actions);
  return tr;
}

async function loadKeys(more) {
  const q = new URLSearchParams();
  const tenant = $("filter-tenant").value.trim(), user = $("filter-user").value.trim();
  if (tenant) q.set("tenant", tenant);
  if (user) q.set("user", user);
  if (more && keysState.cursor) q.set("cursor", keysState.cursor);
  const body = $("keys-table").tBodies[0];
  $("keys-status").textContent = "Loading keys…";
  try {
    const answer = await send("GET", "/admin/keys" + (q.toString() ? "?" + q.toString() : ""));
    if (answer.status !== 200) {
      // A tenant token asking for another tenant gets 404: nothing to show.
      if (!more) body.replaceChildren();
      $("keys-more").hidden = true;
      $("keys-status").textContent = answer.status === 404 ? "No keys visible to this token." : "";
      if (answer.status !== 404) $("keys-error").textContent = "Could not list the keys: " + problem(answer);
      return;
    }
    if (!more) body.replaceChildren();
    const showRevoked = $("filter-revoked").checked;
    for (const k of answer.body.keys || []) {
      if (k.state === "revoked" && !showRevoked) continue;
      body.append(keyRow(k));
    }
    keysState.cursor = answer.body.next_cursor || null;
    $("keys-more").hidden = keysState.cursor === null;
    const shown = body.rows.length;
    $("keys-status").textContent = shown === 0 ? "No keys." : `${shown} key${shown === 1 ? "" : "s"} shown.`;
    $("keys-error").textContent = "";
    document.body.dataset.keysLoaded = "true";
  } catch (e) {
    if (e instanceof Unauthorized) return showLogin(e.message);
    $("keys-error").textContent = "Could not list the keys: " + e.message;
  }
}

function showSecret(id, secret) {
  $("secret-key-id").textContent = id;
  $("secret-value").value = secret;
  $("secret-copied").textContent = "";
  $("secret-panel").hidden = false;
  $("secret-value").focus();
  $("secret-value").select();
}

function hideSecret() {
  $("secret-value").value = "";
  $("secret-key-id").textContent = "";
  $("secret-copied").textContent = "";
  $("secret-panel").hidden = true;
}

async function copySecret() {
  const value = $("secret-value").value;
  try {
    await navigator.clipboard.writeText(value);
    $("secret-copied").textContent = "Copied to the clipboard.";
  } catch (_) {
    // No clipboard permission: copy the selected field the old way.
    $("secret-value").select();
    const copied = document.execCommand && document.execCommand("copy");
    $("secret-copied").textContent = copied ? "Copied to the clipboard."
      : "Could not copy: the secret is selected, copy it with the keyboard.";
  }
}

function newIdempotencyKey() {
  return (self.crypto && crypto.randomUUID) ? crypto.randomUUID() : null;
}

async function createKey() {
  const body = { user: $("new-user").value.trim(), roles: list($("new-roles").value) };
  const tenant = $("new-tenant").value.trim();
  if (tenant) body.tenant = tenant;
  const models = list($("new-models").value);
  if (models.length > 0) body.models = models;
  if ($("new-expiry").value) body.expires_at = $("new-expiry").value + "T00:00:00Z";
  const note = $("new-note").value.trim();
  if (note) body.note = note;
  // One idempotency key per form content: a double click or a retry after
  // a lost answer creates one key, not two.
  const fingerprint = JSON.stringify(body);
  if (!keysState.idempotency || keysState.idempotency.fingerprint !== fingerprint) {
    keysState.idempotency = { fingerprint, key: newIdempotencyKey() };
  }
  const headers = keysState.idempotency.key ? { "Idempotency-Key": keysState.idempotency.key } : {};
  $("create-submit").disabled = true;
  try {
    const answer = await send("POST", "/admin/keys", body, headers);
    if (answer.status !== 201 && answer.status !== 200) {
      $("keys-error").textContent = "Could not create the key: " + problem(answer);
      return;
    }
    keysState.idempotency = null;
    $("key-create").reset();
    $("keys-error").textContent = "";
    showSecret(answer.body.id, answer.body.key);
    await loadKeys(false);
  } catch (e) {
    if (e instanceof Unauthorized) return showLogin(e.message);
    $("keys-error").textContent = "Could not create the key: " + e.message;
  } finally {
    $("create-submit").disabled = false;
  }
}

function openRotate(id) {
  keysState.pending = id;
  $("rotate-key-id").textContent = id;
  $("rotate-dialog").showModal();
  $("rotate-grace").focus();
}

function openRevoke(id) {
  keysState.pending = id;
  $("revoke-key-id").textContent = id;
  $("revoke-dialog").showModal();
  $("revoke-cancel").focus();
}

function keyPath(id) { return "/admin/keys/" + encodeURIComponent(id); }

async function rotateKey() {
  const id = keysState.pending;
  const grace = parseInt($("rotate-grace").value, 10);
  try {
    const idempotency = newIdempotencyKey();
    const answer = await send("POST", keyPath(id) + "/rotate", { grace_seconds: Number.isFinite(grace) ? grace : 0 },
      idempotency ? { "Idempotency-Key": idempotency } : {});
    if (answer.status !== 200) {
      $("keys-error").textContent = `Could not rotate key ${id}: ` + problem(answer);
      return;
    }
    $("keys-error").textContent = "";
    showSecret(answer.body.id, answer.body.key);
    await loadKeys(false);
  } catch (e) {
    if (e instanceof Unauthorized) return showLogin(e.message);
    $("keys-error").textContent = `Could not rotate key ${id}: ` + e.message;
  }
}

async function revokeKey() {
  const id = keysState.pending;
  try {
    const answer = await send("DELETE", keyPath(id));
    if (answer.status !== 204 && answer.status !== 404) {
      $("keys-error").textContent = `Could not revoke key ${id}: ` + problem(answer);
      return;
    }
    $("keys-error").textContent = "";
    $("keys-status").textContent = `Key ${id} revoked.`;
    await loadKeys(false);
  } catch (e) {
    if (e instanceof Unauthorized) return showLogin(e.message);
    $("keys-error").textContent = `Could not revoke key ${id}: ` + e.message;
  }
}

function showView(name) {
  const keys = name === "keys";
  $("usage-view").hidden = keys;
  $("keys-view").hidden = !keys;
  $("range").hidden = keys;
  $("show-usage").setAttribute("aria-pressed", String(!keys));
  $("show-keys").setAttribute("aria-pressed", String(keys));
  if (keys) loadKeys(false); else hideSecret();
}

function showLogin(message) {
  sessionStorage.removeItem(TOKEN_KEY);
  hideSecret();
  $("keys-table").tBodies[0].replaceChildren();
  $("views").hidden = true;
  $("app").hidden = true;
  $("range").hidden = true;
  $("login").hidden = false;
  $("login-error").textContent = message || "";
  $("usage-table").tBodies[0].replaceChildren();
  $("conversation-table").tBodies[0].replaceChildren();
  $("chart").replaceChildren();
  $("token").focus();
}

function showApp() {
  $("login").hidden = true;
  $("app").hidden = false;
  $("views").hidden = false;
  showView("usage");
  load();
}

document.addEventListener("DOMContentLoaded", () => {
  const today = new Date();
  const weekAgo = new Date(today);
  weekAgo.setUTCDate(today.getUTCDate() - 6);
  $("from").value = isoDay(weekAgo);
  $("to").value = isoDay(today);
  $("token-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    sessionStorage.setItem(TOKEN_KEY, $("token").value.trim());
    $("token").value = "";
    showApp();
  });
  $("range").addEventListener("submit", (ev) => { ev.preventDefault(); load(); });
  $("csv").addEventListener("click", downloadCsv);
  $("logout").addEventListener("click", () => showLogin(""));
  $("show-usage").addEventListener("click", () => showView("usage"));
  $("show-keys").addEventListener("click", () => showView("keys"));
  $("key-filter").addEventListener("submit", (ev) => { ev.preventDefault(); loadKeys(false); });
  $("filter-revoked").addEventListener("change", () => loadKeys(false));
  $("keys-more").addEventListener("click", () => loadKeys(true));
  $("key-create").addEventListener("submit", (ev) => { ev.preventDefault(); createKey(); });
  $("secret-copy").addEventListener("click", copySecret);
  $("secret-done").addEventListener("click", hideSecret);
  $("rotate-form").addEventListener("submit", () => { rotateKey(); });
  $("rotate-cancel").addEventListener("click", () => $("rotate-dialog").close());
  $("revoke-form").addEventListener("submit", () => { revokeKey(); });
  $("revoke-cancel").addEventListener("click", () => $("revoke-dialog").close());
  if (token()) showApp(); else showLogin("");
});
