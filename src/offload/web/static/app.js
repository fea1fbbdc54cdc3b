// offload dashboard. Plain ES modules, no build step. Live through server-sent events: one
// stream for the queue's change feed (each change triggers a coalesced refetch) and, while a
// task is open, one for its output (output.js); an open agent task's turns (turns.js) are
// fetched again when a change for it arrives. All task text goes in with textContent.

import { draw } from "./chart.js";
import { OutputView } from "./output.js";
import { TurnsView } from "./turns.js";
import {
  $, FINAL, RETRYABLE, api, badge, duration, el, money, now, setServerTime, shortId, span,
  stateWord, takeToken, toast, when,
} from "./util.js";

const PAGE = 200;
// What a summary chip counts and filters by: "failed" includes the tasks that timed out.
const CHIP_STATES = {
  pending: ["pending"], running: ["running"], completed: ["completed"],
  failed: ["failed", "timed_out"],
};

const ui = {
  tasks: [], total: 0, limit: PAGE, stateFilter: "", text: "",
  selected: null, task: null, cells: new Map(), durationCell: null, turnsStale: false,
  refresh: { timer: null, busy: false, again: false },
  purgeArmed: null, cancelling: null,
};
const output = new OutputView(() => scheduleRefresh(0));
const turns = new TurnsView();

// -- the task table -------------------------------------------------------------------
function matches(t, words) {
  if (!words.length) return true;
  const hay = [t.id, t.title, t.type, t.state, t.group, t.name, t.spec, t.error,
    ...(t.labels || [])].filter(Boolean).join(" ").toLowerCase();
  return words.every((w) => hay.includes(w));
}

function progressCell(t) {
  const cell = el("td", "c-prog");
  if (t.state !== "running") return cell;
  const bar = document.createElement("progress");
  bar.max = 1;
  if (t.progress != null) bar.value = t.progress;
  const pct = t.progress != null ? Math.round(t.progress * 100) + "%" : null;
  bar.setAttribute("aria-label", pct ?? "running");
  if (t.progress_message) bar.title = t.progress_message;
  cell.append(bar);
  if (pct) cell.append(el("span", "pct", pct));
  return cell;
}

function row(t) {
  const tr = el("tr", t.id === ui.selected ? "selected" : "");
  tr.dataset.id = t.id;
  tr.tabIndex = 0;
  tr.setAttribute("aria-label", `${stateWord(t.state)} task ${shortId(t.id)}: ${t.title}`);
  const title = el("td", "c-title");
  title.append(el("span", "clip", t.title || "(no command)"));
  if (t.error && !["completed", "running"].includes(t.state)) {
    title.append(el("span", "err clip", t.error));
  }
  if (t.waiting) title.append(el("span", "wait clip", t.waiting));
  const state = el("td", "c-state");
  state.append(badge(t));
  const age = el("td", "c-age", span(now() - t.created_at));
  const dur = el("td", "c-dur", span(duration(t)));
  ui.cells.set(t.id, { age, dur, task: t });
  tr.append(el("td", "c-id mono", shortId(t.id)), state, title, el("td", "c-type", t.type),
    el("td", "c-prio", String(t.priority)), age, dur, progressCell(t),
    el("td", "c-cost", t.cost_usd == null ? "" : money(t.cost_usd)));
  return tr;
}

function renderRows() {
  const words = ui.text.toLowerCase().split(/\s+/).filter(Boolean);
  const shown = ui.tasks.filter((t) => matches(t, words));
  const focused = document.activeElement?.dataset?.id;
  const body = $("rows");
  ui.cells.clear();
  body.replaceChildren(...shown.map(row));
  $("empty").hidden = shown.length > 0;
  $("shown").textContent = ui.total
    ? `${shown.length} shown of ${ui.total}` + (words.length ? " (filtered)" : "") : "";
  $("more").hidden = ui.tasks.length >= ui.total;
  if (focused) body.querySelector(`tr[data-id="${CSS.escape(focused)}"]`)?.focus();
}

// Ages and running durations move with the clock, between two refreshes.
function tick() {
  for (const { age, dur, task } of ui.cells.values()) {
    age.textContent = span(now() - task.created_at);
    if (task.state === "running") dur.textContent = span(duration(task));
  }
  if (ui.task?.state === "running" && ui.durationCell) {
    ui.durationCell.textContent = span(duration(ui.task));
  }
}

// -- summary --------------------------------------------------------------------------
function renderStats(s) {
  setServerTime(s.now);
  for (const [name, states] of Object.entries(CHIP_STATES)) {
    const n = states.reduce((sum, state) => sum + (s.counts[state] ?? 0), 0);
    $("n-" + name).textContent = String(n);
  }
  $("n-cost").textContent = "$" + s.cost_today_usd.toFixed(2);
  renderHosts(s.hosts ?? []);
  draw($("chart"), fourteenDays(s.days, s.now), { from: $("chart-from"), to: $("chart-to"), max: $("chart-max") });
}

// Several hosts sharing one queue (PostgreSQL): what each runs now and has finished.
function renderHosts(hosts) {
  const list = $("hosts");
  list.hidden = hosts.length === 0;
  list.replaceChildren(...hosts.map((h) => {
    const li = el("li", "");
    li.append(el("b", "", h.host ?? "stopped supervisors"),
      document.createTextNode(` ${h.running} running · ${h.finished} finished`));
    return li;
  }));
}

// The chart always spans the 14 UTC days ending today: a day the server left out (nothing
// finished on it, or it was purged) is drawn as an empty slot, never dropped.
function fourteenDays(days, nowMs) {
  const byDay = new Map(days.map((d) => [d.day, d]));
  const today = Math.floor(nowMs / 86_400_000);
  const out = [];
  for (let i = 13; i >= 0; i--) {
    const key = new Date((today - i) * 86_400_000).toISOString().slice(0, 10);
    out.push(byDay.get(key) ?? { day: key, finished: 0, cost_usd: 0 });
  }
  return out;
}

// A "Cancelling…" toast gives way once the task it speaks of has stopped.
function settleCancelToast() {
  const id = ui.cancelling;
  if (!id) return;
  const t = ui.task?.id === id ? ui.task : ui.tasks.find((x) => x.id === id);
  if (t && FINAL.has(t.state)) {
    ui.cancelling = null;
    toast(t.state === "cancelled" ? `Cancelled ${shortId(id)}` : `${shortId(id)} ${stateWord(t.state)}`);
  }
}

function syncChips() {
  for (const chip of document.querySelectorAll("button.chip")) {
    chip.setAttribute("aria-pressed", String(chip.dataset.state === ui.stateFilter));
  }
  $("state-filter").value = ui.stateFilter;
}

// -- refreshing: each change event schedules one; bursts coalesce ---------------------
function scheduleRefresh(delay = 120) {
  if (ui.refresh.timer) return;
  ui.refresh.timer = setTimeout(() => { ui.refresh.timer = null; refresh(); }, delay);
}

async function refresh() {
  if (ui.refresh.busy) { ui.refresh.again = true; return; }
  ui.refresh.busy = true;
  try {
    const q = new URLSearchParams({ limit: String(ui.limit) });
    for (const state of (CHIP_STATES[ui.stateFilter] ?? [ui.stateFilter]).filter(Boolean)) {
      q.append("state", state);
    }
    const [stats, page] = await Promise.all([api("/api/stats"), api("/api/tasks?" + q)]);
    renderStats(stats);
    ui.tasks = page.tasks;
    ui.total = page.total;
    renderRows();
    if (ui.selected) await refreshDetail();
    settleCancelToast();
  } catch (err) {
    toast(err.message, true);
  } finally {
    ui.refresh.busy = false;
    if (ui.refresh.again) { ui.refresh.again = false; scheduleRefresh(); }
  }
}

// -- the detail panel -----------------------------------------------------------------
function renderFields(t) {
  const rows = [
    ["Command", Array.isArray(t.command) ? t.command.join(" ") : t.command, "pre"],
    ["Waiting", t.waiting, "wait"], ["Runs on", (t.run_on || []).join(", ")],
    ["Spec", t.spec, "pre"], ["Error", t.error, "err"], ["Result", t.result, "pre"],
    ["Progress", t.progress_message], ["Type", t.type], ["Priority", t.priority],
    ["Group", t.group], ["Attempt", t.attempt], ["Created", when(t.created_at)],
    ["Started", t.started_at && when(t.started_at)],
    ["Finished", t.finished_at && when(t.finished_at)],
    ["Duration", t.started_at && span(duration(t))], ["Exit code", t.exit_code],
    ["Signal", t.signal], ["Working dir", t.cwd], ["After", t.depends_on.join(", ")],
    ["Labels", t.labels.join(", ")], ["Model", t.model_used || t.model],
    ["Tokens", t.tokens_in != null ? `${t.tokens_in} in / ${t.tokens_out} out` : null],
    ["Cost", t.cost_usd != null ? money(t.cost_usd) : null], ["Output file", t.output_path],
    ["Files written", t.files_written.join("\n"), "pre"], ["Env", t.env_names.join(", ")],
    ["Pid", t.pid],
  ];
  const dl = $("detail-fields");
  dl.replaceChildren();
  ui.durationCell = null;
  for (const [name, value, kind] of rows) {
    if (value == null || value === "") continue;
    const dd = el("dd", kind || "", String(value));
    if (name === "Duration") ui.durationCell = dd;
    dl.append(el("dt", "", name), dd);
  }
}

function renderDetail(t) {
  ui.task = t;
  $("detail-title").textContent = t.title || "(no command)";
  $("detail-id").textContent = t.id;
  $("detail-badge").replaceWith(Object.assign(badge(t), { id: "detail-badge" }));
  $("cancel").hidden = !(t.state === "pending" || t.state === "running");
  $("cancel").disabled = t.cancel_requested;
  $("retry").hidden = !RETRYABLE.has(t.state);
  renderFields(t);
}

// An agent task's turns; a failure to read them leaves the rest of the detail open.
async function loadTurns(t) {
  try {
    await turns.load(t);
  } catch (err) {
    toast(err.message, true);
  }
}

async function refreshDetail() {
  try {
    const t = await api(`/api/tasks/${ui.selected}`);
    renderDetail(t);
    if (t.state === "pending" || t.state === "running") {
      if (!output.following) output.follow(t.id);
    }
    if (ui.turnsStale) {
      ui.turnsStale = false;
      await loadTurns(t);
    }
  } catch (err) {
    closeDetail();
    toast(err.message, true);
  }
}

function markSelected() {
  for (const tr of $("rows").children) tr.classList.toggle("selected", tr.dataset.id === ui.selected);
}

async function openDetail(id) {
  if (ui.selected === id) return;
  ui.selected = id;
  ui.turnsStale = false;
  output.clear();
  turns.clear();
  $("detail").hidden = false;
  markSelected();
  if (location.hash !== "#task/" + id) history.pushState(null, "", "#task/" + id);
  $("detail-title").focus();
  try {
    const t = await api(`/api/tasks/${id}`);
    renderDetail(t);
    await Promise.all([output.load(t), loadTurns(t)]);
  } catch (err) {
    closeDetail();
    toast(err.message, true);
  }
}

function closeDetail() {
  const id = ui.selected;
  output.clear();
  turns.clear();
  ui.selected = null;
  ui.task = null;
  $("detail").hidden = true;
  markSelected();
  if (location.hash.startsWith("#task/")) history.pushState(null, "", location.pathname + location.search);
  if (id) $("rows").querySelector(`tr[data-id="${CSS.escape(id)}"]`)?.focus();
}

// -- actions --------------------------------------------------------------------------
async function act(button, path, body, done) {
  button.disabled = true;
  try {
    toast(done(await api(path, "POST", body)));
    scheduleRefresh(0);
  } catch (err) {
    toast(err.message, true);
  } finally {
    button.disabled = false;
  }
}

function cancelTask() {
  if (!ui.task) return;
  act($("cancel"), `/api/tasks/${ui.task.id}/cancel`, undefined, (r) => {
    if (r.state === "cancelled") return `Cancelled ${shortId(r.id)}`;
    ui.cancelling = r.id;  // settleCancelToast replaces the toast when the task stops
    return `Cancelling ${shortId(r.id)}…`;
  });
}

function retryTask() {
  if (!ui.task) return;
  act($("retry"), `/api/tasks/${ui.task.id}/retry`, undefined, (r) => {
    output.clear();
    return `Queued ${shortId(r.id)} again (attempt ${r.attempt})`;
  });
}

function purge() {
  const button = $("purge");
  if (!ui.purgeArmed) {  // two clicks rather than a blocking confirm() dialog
    button.textContent = "Confirm purge";
    button.classList.add("btn-danger");
    ui.purgeArmed = setTimeout(disarmPurge, 4000);
    return;
  }
  disarmPurge();
  act(button, "/api/purge", {}, (r) => `Purged ${r.purged} finished task(s)`);
}

function disarmPurge() {
  clearTimeout(ui.purgeArmed);
  ui.purgeArmed = null;
  $("purge").textContent = "Purge finished";
  $("purge").classList.remove("btn-danger");
}

// -- the change feed (the browser resumes it with Last-Event-ID by itself) -------------
function connect() {
  const source = new EventSource("/api/events");
  const conn = $("conn");
  source.addEventListener("ready", () => {
    conn.textContent = "live";
    conn.className = "conn conn-live";
    scheduleRefresh(0);
  });
  source.onmessage = (e) => {
    let change = null;
    try { change = JSON.parse(e.data); } catch (_) { change = null; }
    if (ui.selected && change?.task_id === ui.selected) ui.turnsStale = true;
    scheduleRefresh();
  };
  source.onerror = () => {
    const closed = source.readyState === EventSource.CLOSED;
    conn.textContent = closed ? "disconnected" : "reconnecting…";
    conn.className = "conn conn-down";
    if (closed) setTimeout(connect, 3000);
  };
}

// -- keyboard and wiring --------------------------------------------------------------
function onRowKey(e) {
  const tr = e.target.closest("tr[data-id]");
  if (!tr) return;
  if (e.key === "Enter" || e.key === " ") { e.preventDefault(); openDetail(tr.dataset.id); }
  else if (e.key === "ArrowDown") { e.preventDefault(); tr.nextElementSibling?.focus(); }
  else if (e.key === "ArrowUp") { e.preventDefault(); tr.previousElementSibling?.focus(); }
}

function onGlobalKey(e) {
  const typing = ["INPUT", "SELECT", "TEXTAREA"].includes(document.activeElement?.tagName);
  if (e.key === "/" && !typing) { e.preventDefault(); $("text-filter").focus(); }
  else if (e.key === "Escape" && ui.selected) closeDetail();
}

function fromHash() {
  const m = location.hash.match(/^#task\/([0-9a-f]{6,32})$/);
  if (m) openDetail(m[1]);
  else if (ui.selected) closeDetail();
}

function setStateFilter(value) {
  ui.stateFilter = value;
  ui.limit = PAGE;
  syncChips();
  refresh();
}

function wire() {
  $("rows").addEventListener("click", (e) => {
    const tr = e.target.closest("tr[data-id]");
    if (tr) openDetail(tr.dataset.id);
  });
  $("rows").addEventListener("keydown", onRowKey);
  document.addEventListener("keydown", onGlobalKey);
  $("text-filter").addEventListener("input", (e) => { ui.text = e.target.value; renderRows(); });
  $("state-filter").addEventListener("change", (e) => setStateFilter(e.target.value));
  for (const chip of document.querySelectorAll("button.chip")) {
    chip.addEventListener("click", () =>
      setStateFilter(ui.stateFilter === chip.dataset.state ? "" : chip.dataset.state));
  }
  $("more").addEventListener("click", () => { ui.limit += PAGE; refresh(); });
  $("detail-close").addEventListener("click", closeDetail);
  $("cancel").addEventListener("click", cancelTask);
  $("retry").addEventListener("click", retryTask);
  $("purge").addEventListener("click", purge);
  window.addEventListener("popstate", fromHash);
  setInterval(tick, 1000);
}

const hasToken = takeToken();
$("banner").hidden = hasToken;
$("mode").hidden = hasToken;
wire();
connect();
fromHash();
