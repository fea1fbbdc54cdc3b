// offload dashboard: one task's output, its tail first, then followed live through
// GET /api/events?follow=<id>&offset=<bytes> while the task runs. Output is appended as text
// nodes; colour escapes are dropped; the oldest text is trimmed past a size cap.

import { $, FINAL, api } from "./util.js";

const TAIL_LINES = 500;
const MAX_CHARS = 400000;
const RECONNECT_MS = 2000;
const ANSI = /\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)/g;

export class OutputView {
  // onEnd runs when a followed task has finished and all its output is shown.
  constructor(onEnd) {
    this.pre = $("output");
    this.note = $("out-note");
    this.followBox = $("follow");
    this.onEnd = onEnd;
    this.source = null;
    this.retry = null;
    this.taskId = null;
    this.offset = 0;
    this.chars = 0;
    this.followBox.addEventListener("change", () => {
      if (this.followBox.checked) this.pre.scrollTop = this.pre.scrollHeight;
    });
  }

  get following() { return this.source !== null || this.retry !== null; }

  clear() {
    this.stop();
    this.pre.textContent = "";
    this.note.textContent = "";
    this.offset = 0;
    this.chars = 0;
  }

  append(text, reset = false) {
    const clean = text.replace(ANSI, "");
    if (reset) { this.pre.textContent = clean; this.chars = clean.length; }
    else { this.pre.append(document.createTextNode(clean)); this.chars += clean.length; }
    if (this.chars > MAX_CHARS) {
      const keep = this.pre.textContent.slice(-MAX_CHARS / 2);
      this.pre.textContent = keep;
      this.chars = keep.length;
      this.note.textContent = "(older output trimmed)";
    }
    if (this.followBox.checked) this.pre.scrollTop = this.pre.scrollHeight;
  }

  // Shows the end of the task's log, then follows it if the task is not final yet.
  async load(task) {
    this.clear();
    this.taskId = task.id;
    const out = await api(`/api/tasks/${task.id}/output?tail=${TAIL_LINES}`);
    if (this.taskId !== task.id) return;
    this.offset = out.size;
    this.note.textContent = out.truncated ? `(last ${out.lines} lines)` : "";
    this.append(out.text, true);
    if (!out.text && FINAL.has(task.state)) this.note.textContent = "(no output)";
    if (!FINAL.has(task.state)) this.follow(task.id);
  }

  follow(id) {
    this.stop();
    this.taskId = id;
    const source = new EventSource(`/api/events?follow=${encodeURIComponent(id)}&offset=${this.offset}`);
    this.source = source;
    source.addEventListener("output", (e) => {
      const d = JSON.parse(e.data);
      this.offset = d.offset;
      this.append(d.text);
    });
    source.addEventListener("end", () => {
      this.stop();
      this.onEnd(id);
    });
    // The browser would reconnect from the original offset: reconnect ourselves instead.
    source.onerror = () => {
      this.stop();
      this.retry = setTimeout(() => { this.retry = null; this.follow(id); }, RECONNECT_MS);
    };
  }

  stop() {
    if (this.source) this.source.close();
    clearTimeout(this.retry);
    this.source = null;
    this.retry = null;
  }
}
