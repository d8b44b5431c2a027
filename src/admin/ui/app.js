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
    const tr = el("tr");
    const td = el("td", "No LLM calls in this range.");
    td.colSpan = 8;
    tr.append(td);
    body.append(tr);
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
    const tr = el("tr");
    const td = el("td", "No calls named a conversation in this range.");
    td.colSpan = 6;
    tr.append(td);
    body.append(tr);
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

function showLogin(message) {
  sessionStorage.removeItem(TOKEN_KEY);
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
  $("range").hidden = false;
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
  if (token()) showApp(); else showLogin("");
});
