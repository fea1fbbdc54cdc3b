// offload dashboard: an agent task's turns (GET /api/tasks/<id>/turns): per turn the model,
// tokens and cost, what the model said, each tool call with its arguments and result, and
// any error. Everything goes in with textContent: a model or a tool can say anything.

import { $, api, el, money } from "./util.js";

const LIMIT = 100;

function head(t, attempts) {
  const parts = [`Turn ${t.index}`];
  if (attempts > 1) parts.push(`attempt ${t.attempt}`);
  if (t.model) parts.push(t.model);
  let tokens = `${t.tokens_in} in / ${t.tokens_out} out`;
  if (t.tokens_cached) tokens += ` (${t.tokens_cached} cached)`;
  parts.push(tokens, t.cost_usd == null ? "cost unknown" : money(t.cost_usd));
  return el("div", "turn-head", parts.join(" · "));
}

function call(c) {
  const box = el("div", "call" + (c.is_error ? " call-error" : ""));
  box.append(el("div", "call-name", "→ " + c.name));
  const args = JSON.stringify(c.arguments, null, 2);
  if (args !== "{}") box.append(el("pre", "call-args", args));
  if (!c.finished) {
    box.append(el("div", "call-note", "no result: the task ended while this call ran"));
  } else {
    box.append(el("pre", "call-result", c.result.replace(/\s+$/, "") || "(empty)"));
  }
  return box;
}

function turn(t, attempts) {
  const item = el("li", "turn" + (t.error ? " turn-error" : ""));
  item.append(head(t, attempts));
  if (t.text.trim()) item.append(el("p", "turn-text", t.text.trim()));
  for (const c of t.tool_calls) item.append(call(c));
  if (t.error) item.append(el("p", "turn-err", "Error: " + t.error));
  return item;
}

export class TurnsView {
  constructor() {
    this.section = $("turns");
    this.list = $("turns-list");
    this.note = $("turns-note");
    this.taskId = null;
    this.asked = 0;  // a newer load wins over a slower, older one
  }

  clear() {
    this.taskId = null;
    this.asked += 1;
    this.section.hidden = true;
    this.list.replaceChildren();
    this.note.textContent = "";
  }

  // Shows the task's turns (only agent tasks have any); throws the API's reason.
  async load(task) {
    if (task.type !== "agent") { this.clear(); return; }
    const asked = ++this.asked;
    this.taskId = task.id;
    this.section.hidden = false;
    const turns = await api(`/api/tasks/${task.id}/turns?limit=${LIMIT}`);
    if (asked !== this.asked) return;
    const attempts = new Set(turns.map((t) => t.attempt)).size;
    this.list.replaceChildren(...turns.map((t) => turn(t, attempts)));
    const costs = turns.map((t) => t.cost_usd).filter((c) => c != null);
    const total = costs.length ? " · " + money(costs.reduce((a, b) => a + b, 0)) : "";
    this.note.textContent = !turns.length ? "(none yet)"
      : (turns.length >= LIMIT ? `(the last ${LIMIT})` : `(${turns.length})`) + total;
  }
}
