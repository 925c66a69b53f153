// Dispatch events: the list of instructions and, for the chosen one, requested vs delivered over time.

import { every } from "./api.js";
import { chartBox, powerChart, setProgress } from "./charts.js";
import { fill, h, hhmm, kw, kwh, message, num, pct, stamp } from "./util.js";

const LIST_REFRESH_MS = 4000;
const DETAIL_REFRESH_MS = 2000;
const LIST_SHOWN = 25;

function requestedText(instruction) {
  return instruction.kind === "delta" ? `Δ ${kw(instruction.delta_kw)}` : `target ${kw(instruction.target_kw)}`;
}

/** The events card body; returns {element, select(id), stop()}. */
export function dispatchPanel(api, { idPrefix = "dispatch" } = {}) {
  let selected = null;
  let picked = false; // the user chose an instruction: stop following the active one
  let chart = null;
  let stopDetail = null;
  const list = h("tbody", { id: `${idPrefix}-rows` });
  const detail = h("div", { class: "dispatch-detail", id: `${idPrefix}-detail` });
  const status = h("div", { id: `${idPrefix}-status`, class: "dispatch-status" });
  const canvasBox = chartBox(`${idPrefix}-chart`, "requested vs measured fleet power");
  const shares = h("div", { class: "shares", id: `${idPrefix}-shares` });
  fill(detail, status, canvasBox, shares);

  const element = h("div", { class: "dispatch-panel" },
    h("div", { class: "table-scroll short" },
      h("table", { class: "grid-table" },
        h("thead", {}, h("tr", {},
          h("th", {}, "Instruction"), h("th", {}, "Window"), h("th", {}, "Request"), h("th", {}, "Status"),
          h("th", { class: "num" }, "Delivered / requested"))),
        list)),
    detail);

  async function refreshList() {
    const body = await api.get("/api/v1/dispatch");
    const pairs = body.instructions
      .slice()
      .sort((a, b) => (a.instruction.start < b.instruction.start ? 1 : -1))
      .slice(0, LIST_SHOWN);
    if (!pairs.length) {
      fill(list, h("tr", {}, h("td", { colspan: 5 }, "No instructions yet.")));
      return;
    }
    fill(list, pairs.map(({ instruction, state }) => h("tr", {
      class: instruction.id === selected ? "selected clickable" : "clickable",
      dataset: { instruction: instruction.id },
      onclick: () => select(instruction.id, true),
    },
      h("td", {}, instruction.id),
      h("td", {}, `${stamp(instruction.start)} – ${hhmm(instruction.end)}`),
      h("td", {}, requestedText(instruction)),
      h("td", {}, h("span", { class: `badge ${state.status}` }, state.status)),
      h("td", { class: "num" }, `${num(state.delivered_kwh, 1)} / ${kwh(state.requested_kwh)}`))));
    // Until the user picks one, follow the instruction in force (else the latest).
    if (!picked) {
      const follow = (pairs.find((p) => p.state.status === "active") || pairs[0]).instruction.id;
      if (follow !== selected) select(follow, false);
    }
  }

  async function refreshDetail(id) {
    const view = await api.get(`/api/v1/dispatch/${encodeURIComponent(id)}`);
    if (id !== selected) return "stop";
    const { instruction, state } = view;
    chart = chart || powerChart(canvasBox.querySelector("canvas"));
    setProgress(chart, view.progress || []);
    fill(status,
      h("strong", {}, instruction.id), " ",
      h("span", { class: `badge ${state.status}`, id: `${idPrefix}-state` }, state.status), " ",
      `${requestedText(instruction)} · delivered now `,
      h("span", { id: `${idPrefix}-delivered`, dataset: { value: state.delivered_kw ?? "" } }, kw(state.delivered_kw)),
      ` · energy ${num(state.delivered_kwh, 1)} of ${kwh(state.requested_kwh)}`,
      view.response_ratio === null ? "" : ` · ratio ${pct(view.response_ratio)}`,
      state.message ? h("span", { class: "muted" }, ` · ${state.message}`) : "");
    fill(shares, view.enterprise_shares.length
      ? [h("span", { class: "muted" }, "Shares: "),
          view.enterprise_shares.map((s) => h("span", { class: "chip" }, `${s.enterprise_id} ${pct(s.share, 0)}`))]
      : []);
    return state.status === "completed" || state.status === "cancelled" ? "stop" : "go";
  }

  function select(id, byUser = true) {
    picked = picked || byUser;
    selected = id;
    for (const row of list.querySelectorAll("tr[data-instruction]")) {
      row.classList.toggle("selected", row.dataset.instruction === id);
    }
    if (stopDetail) stopDetail();
    let finished = false;
    stopDetail = every(DETAIL_REFRESH_MS, async () => {
      if (finished) return;
      try {
        finished = (await refreshDetail(id)) === "stop";
      } catch (err) {
        fill(status, message(err.message, "error"));
      }
    });
  }

  const stopList = every(LIST_REFRESH_MS, refreshList);
  return {
    element,
    select,
    refresh: refreshList,
    stop() {
      stopList();
      if (stopDetail) stopDetail();
    },
  };
}
