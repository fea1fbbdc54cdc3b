// offload dashboard: the 14-day chart, drawn as inline SVG (no library, no network).
// Two bars a day: tasks finished (each scaled to the busiest day) and USD spent (scaled to
// the costliest day). Every label is set with textContent, never parsed as markup.
const NS = "http://www.w3.org/2000/svg";
const W = 420;
const H = 120;
const PAD_TOP = 6;

function node(tag, attrs) {
  const e = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, String(v));
  return e;
}

function money(usd) {
  if (!usd) return "$0";
  return usd < 0.01 ? "<$0.01" : "$" + usd.toFixed(2);
}

function dayLabel(day) {
  const d = new Date(day + "T00:00:00Z");
  return d.toLocaleDateString(undefined, { month: "short", day: "numeric", timeZone: "UTC" });
}

// Draws `days` ([{day, finished, cost_usd}], oldest first) into `svg`; fills the labels.
export function draw(svg, days, labels) {
  svg.replaceChildren();
  const n = Math.max(days.length, 1);
  const slot = W / n;
  const maxDone = Math.max(1, ...days.map((d) => d.finished));
  const maxCost = Math.max(0, ...days.map((d) => d.cost_usd));
  const usable = H - PAD_TOP;
  for (let y = 0.25; y < 1; y += 0.25) {
    svg.appendChild(node("line", { x1: 0, x2: W, y1: PAD_TOP + usable * y, y2: PAD_TOP + usable * y,
      class: "grid" }));
  }
  days.forEach((d, i) => {
    const g = node("g", { class: "day" });
    const title = document.createElementNS(NS, "title");
    title.textContent = `${d.day}: ${d.finished} finished, ${money(d.cost_usd)}`;
    g.appendChild(title);
    g.appendChild(node("rect", { x: i * slot, y: 0, width: slot, height: H, class: "hit" }));
    const doneH = (d.finished / maxDone) * usable;
    g.appendChild(node("rect", { x: i * slot + slot * 0.14, y: H - doneH, width: slot * 0.5,
      height: doneH, class: "bar-done", rx: 1.5 }));
    if (maxCost > 0) {
      const costH = (d.cost_usd / maxCost) * usable;
      g.appendChild(node("rect", { x: i * slot + slot * 0.66, y: H - costH, width: slot * 0.2,
        height: costH, class: "bar-cost", rx: 1 }));
    }
    svg.appendChild(g);
  });
  svg.appendChild(node("line", { x1: 0, x2: W, y1: H - 0.5, y2: H - 0.5, class: "base" }));
  const total = days.reduce((s, d) => s + d.finished, 0);
  const spent = days.reduce((s, d) => s + d.cost_usd, 0);
  svg.setAttribute("aria-label",
    `Last ${days.length} days: ${total} tasks finished, ${money(spent)} spent; ` +
    `busiest day ${maxDone === 1 && total === 0 ? 0 : maxDone} tasks`);
  if (labels) {
    labels.from.textContent = days.length ? dayLabel(days[0].day) : "";
    labels.to.textContent = days.length ? dayLabel(days[days.length - 1].day) : "";
    labels.max.textContent = `max ${total ? maxDone : 0}/day · ${money(maxCost)}/day`;
  }
}

