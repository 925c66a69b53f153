// The fleet table: every device's live state, filtered, sorted and shown one page at a time,
// so a park of thousands of devices costs the page only the rows on screen.

import { fill, h, num } from "./util.js";

export const PAGE_SIZE = 50;

const COLUMNS = [
  ["device_id", "Device", "text"],
  ["enterprise_id", "Enterprise", "text"],
  ["kind", "Kind", "text"],
  ["p_kw", "Power kW", "num"],
  ["available_up_kw", "Up kW", "num"],
  ["available_down_kw", "Down kW", "num"],
  ["soc_kwh", "SoC kWh", "num"],
  ["online", "State", "text"],
];

function stateOf(row) {
  if (!row.online) return "stale";
  return row.protected_now ? "protected" : "online";
}

/** A fleet table over rows of GET /api/v1/plant?devices=true (or an enterprise's live rows). */
export function fleetTable({ showEnterprise = true, idPrefix = "fleet" } = {}) {
  let rows = [];
  let page = 0;
  let sortKey = "device_id";
  let sortDir = 1;

  const search = h("input", { type: "search", id: `${idPrefix}-search`, placeholder: "device id…", "aria-label": "search device" });
  const enterprise = h("select", { id: `${idPrefix}-enterprise`, "aria-label": "enterprise" }, h("option", { value: "" }, "all enterprises"));
  const kind = h("select", { id: `${idPrefix}-kind`, "aria-label": "kind" }, h("option", { value: "" }, "all kinds"));
  const state = h("select", { id: `${idPrefix}-state`, "aria-label": "state" },
    ["", "online", "stale", "protected"].map((v) => h("option", { value: v }, v || "any state")));
  const body = h("tbody", { id: `${idPrefix}-rows` });
  const summary = h("span", { id: `${idPrefix}-summary`, class: "muted" });
  const prev = h("button", { type: "button", id: `${idPrefix}-prev`, onclick: () => go(page - 1) }, "‹ Prev");
  const next = h("button", { type: "button", id: `${idPrefix}-next`, onclick: () => go(page + 1) }, "Next ›");
  const columns = COLUMNS.filter(([key]) => showEnterprise || key !== "enterprise_id");
  const head = h("tr", {}, columns.map(([key, label, type]) => h("th", {
    class: `${type === "num" ? "num " : ""}sortable`, dataset: { key }, onclick: () => sortBy(key),
  }, label)));

  for (const el of [search, enterprise, kind, state]) {
    el.addEventListener("input", () => { page = 0; render(); });
  }

  const element = h("div", { class: "fleet" },
    h("div", { class: "filters" }, search, showEnterprise ? enterprise : null, kind, state),
    h("div", { class: "table-scroll" }, h("table", { class: "grid-table", id: `${idPrefix}-table` }, h("thead", {}, head), body)),
    h("div", { class: "pager" }, prev, summary, next));

  function sortBy(key) {
    sortDir = key === sortKey ? -sortDir : 1;
    sortKey = key;
    render();
  }

  function go(target) {
    page = target;
    render();
  }

  function setOptions(select, values) {
    const chosen = select.value;
    const have = new Set([...select.options].map((o) => o.value));
    for (const value of values) if (!have.has(value)) select.append(h("option", { value }, value));
    select.value = chosen;
  }

  function filtered() {
    const text = search.value.trim().toLowerCase();
    const wantEnterprise = enterprise.value;
    const wantKind = kind.value;
    const wantState = state.value;
    const out = rows.filter((row) =>
      (!text || row.device_id.toLowerCase().includes(text)) &&
      (!wantEnterprise || row.enterprise_id === wantEnterprise) &&
      (!wantKind || row.kind === wantKind) &&
      (!wantState || stateOf(row) === wantState));
    const key = sortKey;
    out.sort((a, b) => {
      const x = key === "online" ? stateOf(a) : a[key];
      const y = key === "online" ? stateOf(b) : b[key];
      if (x === y) return 0;
      if (x === null || x === undefined) return 1;
      if (y === null || y === undefined) return -1;
      return (x < y ? -1 : 1) * sortDir;
    });
    return out;
  }

  function render() {
    const matching = filtered();
    const pages = Math.max(1, Math.ceil(matching.length / PAGE_SIZE));
    page = Math.min(Math.max(page, 0), pages - 1);
    const first = page * PAGE_SIZE;
    const shown = matching.slice(first, first + PAGE_SIZE);
    fill(body, shown.map((row) => h("tr", { dataset: { device: row.device_id } },
      columns.map(([key, , type]) => {
        if (key === "online") {
          const s = stateOf(row);
          return h("td", {}, h("span", { class: `badge ${s}` }, s));
        }
        const value = row[key];
        return h("td", { class: type === "num" ? "num" : undefined }, type === "num" ? num(value, 1) : value);
      }))));
    summary.textContent = matching.length
      ? `${num(first + 1, 0)}–${num(first + shown.length, 0)} of ${num(matching.length, 0)} devices` +
        (matching.length !== rows.length ? ` (filtered from ${num(rows.length, 0)})` : "") + ` · page ${page + 1} of ${pages}`
      : `no device matches (${num(rows.length, 0)} in total)`;
    summary.dataset.total = String(matching.length);
    prev.disabled = page === 0;
    next.disabled = page >= pages - 1;
    for (const th of head.children) {
      th.classList.toggle("asc", th.dataset.key === sortKey && sortDir === 1);
      th.classList.toggle("desc", th.dataset.key === sortKey && sortDir === -1);
    }
  }

  return {
    element,
    /** Replace the rows (live refresh keeps the filters, sort and page). */
    setRows(newRows) {
      rows = newRows;
      setOptions(enterprise, [...new Set(rows.map((r) => r.enterprise_id))].sort());
      setOptions(kind, [...new Set(rows.map((r) => r.kind))].sort());
      render();
    },
    totals() {
      const online = rows.filter((r) => r.online);
      return { devices: rows.length, online: online.length, p_kw: online.reduce((s, r) => s + r.p_kw, 0) };
    },
  };
}
