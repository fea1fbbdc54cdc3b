// offload dashboard: the token, calls to the API, and formatting. Every helper that puts
// text into the page uses textContent: task text is never parsed as HTML.

export const $ = (id) => document.getElementById(id);
export const FINAL = new Set(["completed", "failed", "timed_out", "cancelled", "interrupted"]);
export const RETRYABLE = new Set(["failed", "timed_out", "interrupted", "cancelled"]);

let token = null;
let skewMs = 0;

// The printed URL carries the token once: keep it in this tab's sessionStorage and take it
// out of the address bar, so it is in neither the history nor a screenshot.
export function takeToken() {
  const url = new URL(location.href);
  const fromUrl = url.searchParams.get("token");
  if (fromUrl) {
    sessionStorage.setItem("offload-token", fromUrl);
    url.searchParams.delete("token");
    history.replaceState(null, "", url.pathname + url.search + url.hash);
  }
  token = fromUrl || sessionStorage.getItem("offload-token");
  return token !== null;
}

function detailOf(data) {
  if (!data || data.detail === undefined) return null;
  if (typeof data.detail === "string") return data.detail;
  if (Array.isArray(data.detail)) return data.detail.map((d) => d.msg).join("; ");
  return String(data.detail);
}

// Calls the API; resolves to the JSON answer or rejects with the server's one-line reason.
export async function api(path, method = "GET", body = undefined) {
  const headers = { Accept: "application/json" };
  if (token) headers.Authorization = "Bearer " + token;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const res = await fetch(path, {
    method, headers, cache: "no-store", credentials: "same-origin",
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  let data = null;
  try { data = await res.json(); } catch (_) { data = null; }
  if (!res.ok) throw new Error(detailOf(data) || `${res.status} ${res.statusText}`);
  return data;
}

// The server's clock, so ages and durations agree with it.
export const setServerTime = (ms) => { skewMs = ms - Date.now(); };
export const now = () => Date.now() + skewMs;
export const shortId = (id) => id.slice(0, 8);
export const stateWord = (s) => s.replace("_", " ");
export const when = (ms) => ms == null ? "–" : new Date(ms).toLocaleString();
export const duration = (t) => t.started_at == null ? null : (t.finished_at ?? now()) - t.started_at;

export function span(ms) {
  if (ms == null || ms < 0) return "–";
  const s = Math.floor(ms / 1000);
  if (s < 60) return s + "s";
  const m = Math.floor(s / 60);
  if (m < 60) return m + "m " + (s % 60) + "s";
  const h = Math.floor(m / 60);
  if (h < 24) return h + "h " + (m % 60) + "m";
  return Math.floor(h / 24) + "d " + (h % 24) + "h";
}

export function money(usd) {
  if (usd == null) return "–";
  if (usd === 0) return "$0";
  return usd < 0.01 ? "$" + usd.toFixed(4) : "$" + usd.toFixed(2);
}

export function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text != null) e.textContent = text;
  return e;
}

export function badge(t) {
  const word = t.cancel_requested && t.state === "running" ? "cancelling" : stateWord(t.state);
  return el("span", "badge s-" + t.state, word);
}

let toastTimer = null;
export function toast(message, isError = false) {
  const box = $("toast");
  box.textContent = message;
  box.classList.toggle("toast-error", isError);
  box.hidden = false;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => { box.hidden = true; }, 6000);
}
