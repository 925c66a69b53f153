// An enterprise's view: its own devices and their state, enrolment, events and earnings, green share
// and Scope 2. Every call names the enterprise the token is bound to; the page never asks for another.

import { every } from "./api.js";
import { chartBox, greenChart, setGreen, GREEN_SOURCES } from "./charts.js";
import { deviceForm } from "./device_form.js";
import { fleetTable } from "./fleet.js";
import { card, cny, fill, h, kw, kwh, message, num, pct, previousMonth, saveText, setTile, tile, tonnes } from "./util.js";

const DEVICES_REFRESH_MS = 3000;

export async function renderEnterprise(root, api, enterpriseId) {
  const base = `/api/v1/enterprises/${encodeURIComponent(enterpriseId)}`;
  const [enterprise, openapi] = await Promise.all([api.get(base), api.get("/api/v1/openapi.json")]);
  const monthInput = h("input", { type: "month", id: "month", value: previousMonth(), "aria-label": "month" });
  const devices = fleetTable({ showEnterprise: false, idPrefix: "devices" });
  const limits = h("tbody", { id: "device-limits" });
  const statement = h("div", { id: "statement" });
  const carbonBody = h("div", { id: "carbon-figures" });
  const daysCanvas = chartBox("green-days-chart", "consumption by source per day");
  let daysChart = null;
  const form = deviceForm(api, enterpriseId, openapi.components.schemas, () => refreshDevices());

  fill(root,
    h("div", { class: "cards" },
      card(`${enterprise.name}`, { id: "summary", wide: true },
        h("div", { class: "tiles" },
          tile("Devices online", "my-online"),
          tile("Net power of my devices", "my-net-kw"),
          tile("Earnings in month", "my-earnings"),
          tile("Green share", "my-green"),
          tile("Scope 2 (market-based)", "my-scope2"))),
      card("My devices", { id: "devices-card" }, devices.element,
        h("h3", {}, "Limits"),
        h("div", { class: "table-scroll short" }, h("table", { class: "grid-table compact" },
          h("thead", {}, h("tr", {}, ["Device", "Kind", "Rated kW", "Protected hours", "Notice min", ""].map((t) => h("th", {}, t)))),
          limits))),
      card("Enrol or change a device", { id: "enrol" }, form.element),
      h("div", { class: "month-bar wide" }, h("label", { for: "month" }, "Month (park local time) "), monthInput),
      card("Events and earnings", {
        id: "statement-card", wide: true,
        actions: [h("button", { type: "button", id: "statement-csv", onclick: () => download("settlement") }, "CSV")],
      }, statement),
      card("Green power and Scope 2", {
        id: "carbon-card", wide: true,
        actions: [h("button", { type: "button", id: "carbon-csv", onclick: () => download("carbon") }, "CSV")],
      }, h("div", { class: "split" }, carbonBody, daysCanvas))));

  async function refreshDevices() {
    const body = await api.get(`${base}/devices`);
    const definitions = body.devices;
    const rows = definitions.map((d) => d.live || {
      device_id: d.id, enterprise_id: d.enterprise_id, kind: d.kind, p_kw: null, available_up_kw: null,
      available_down_kw: null, soc_kwh: null, online: false, protected_now: false,
    });
    devices.setRows(rows);
    const t = devices.totals();
    setTile("my-online", `${t.online} / ${t.devices}`, t.online);
    setTile("my-net-kw", kw(t.p_kw), t.p_kw, "+ = into the park");
    fill(limits, definitions.map((d) => h("tr", { dataset: { device: d.id } },
      h("td", {}, d.id), h("td", {}, d.kind), h("td", { class: "num" }, num(d.rated_kw)),
      h("td", {}, (d.protected_hours || []).map((r) => `${r.start_hour}-${r.end_hour}`).join(", ") || "–"),
      h("td", { class: "num" }, num(d.notice_min, 0)),
      h("td", {}, h("button", { type: "button", class: "small", onclick: () => form.edit(d) }, "Change")))));
  }

  async function loadStatement(month) {
    fill(statement, message(`Loading ${month}…`));
    try {
      const body = await api.get(`${base}/settlement?month=${month}`);
      const rows = body.statement.rows;
      const total = rows.find((r) => r.kind === "total");
      setTile("my-earnings", cny(total?.net_fen), total?.net_fen ?? null, `${month}${body.provisional ? " (provisional)" : ""}`);
      fill(statement,
        body.provisional ? message(`${month} is not over: figures are provisional.`) : null,
        h("div", { class: "table-scroll short" }, h("table", { class: "grid-table", id: "statement-table" },
          h("thead", {}, h("tr", {}, ["Event", "Date", "Direction", "Requested kWh", "Baseline kWh", "Delivered kWh", "Ratio", "Payment", "Penalty", "Net"]
            .map((t, i) => h("th", { class: i > 2 ? "num" : "" }, t)))),
          h("tbody", {}, rows.filter((r) => r.kind !== "total").map((r) => h("tr", { dataset: { event: r.event_id } },
            h("td", {}, r.event_id || r.kind), h("td", {}, r.event_date), h("td", {}, r.direction.replace("_", " ")),
            h("td", { class: "num" }, num(r.requested_kwh)), h("td", { class: "num" }, num(r.baseline_kwh)),
            h("td", { class: "num" }, num(r.delivered_kwh)), h("td", { class: "num" }, pct(r.ratio)),
            h("td", { class: "num" }, cny(r.payment_fen)), h("td", { class: "num" }, cny(r.penalty_fen)),
            h("td", { class: "num" }, cny(r.net_fen))))),
          total ? h("tfoot", {}, h("tr", {},
            h("th", {}, `Total (${total.events} events)`), h("th", {}), h("th", {}),
            h("th", { class: "num" }, num(total.requested_kwh)), h("th", { class: "num" }, num(total.baseline_kwh)),
            h("th", { class: "num" }, num(total.delivered_kwh)), h("th", { class: "num" }, pct(total.ratio)),
            h("th", { class: "num" }, cny(total.payment_fen)), h("th", { class: "num" }, cny(total.penalty_fen)),
            h("th", { class: "num", id: "statement-net" }, cny(total.net_fen)))) : null)));
    } catch (err) {
      setTile("my-earnings", "–", null, month);
      fill(statement, message(err.message, err.status === 404 ? "info" : "error"));
    }
  }

  async function loadCarbon(month) {
    fill(carbonBody, message(`Loading ${month}…`));
    try {
      const c = await api.get(`${base}/carbon?month=${month}`);
      setTile("my-green", pct(c.renewable_share), c.renewable_share, `${kwh(c.green_kwh, 0)} green of ${kwh(c.consumption_kwh, 0)}`);
      setTile("my-scope2", tonnes(c.market_based_kg), c.market_based_kg, `location-based ${tonnes(c.location_based_kg)}`);
      fill(carbonBody,
        h("dl", { class: "facts" },
          h("dt", {}, "Consumption"), h("dd", {}, kwh(c.consumption_kwh, 0)),
          GREEN_SOURCES.map(([key, label]) => [h("dt", {}, label), h("dd", {}, kwh(c[key], 0))]),
          h("dt", {}, "Renewable share"), h("dd", { id: "green-share" }, pct(c.renewable_share)),
          h("dt", {}, "15-min matching score"), h("dd", {}, pct(c.matching_score)),
          h("dt", {}, "Certificates retired"), h("dd", {}, kwh(c.certificates_kwh, 0)),
          h("dt", {}, "Scope 2 location-based"), h("dd", { id: "scope2-location" }, tonnes(c.location_based_kg)),
          h("dt", {}, "Scope 2 market-based"), h("dd", { id: "scope2-market" }, tonnes(c.market_based_kg)),
          h("dt", {}, "Grid factor"), h("dd", {}, `${num(c.grid_factor_kg_per_kwh, 4)} kgCO2/kWh`),
          c.missing_intervals ? [h("dt", {}, "Missing intervals"), h("dd", {}, num(c.missing_intervals, 0))] : null));
      daysCanvas.hidden = false;
      daysChart = daysChart || greenChart(daysCanvas.querySelector("canvas"));
      setGreen(daysChart, c.days.map((d) => ({ label: d.day.slice(5), ...d })));
    } catch (err) {
      setTile("my-green", "–", null, month);
      setTile("my-scope2", "–", null, month);
      daysCanvas.hidden = true;
      fill(carbonBody, message(err.message, err.status === 404 ? "info" : "error"));
    }
  }

  async function download(what) {
    const month = monthInput.value;
    saveText(await api.get(`${base}/${what}?month=${month}&format=csv`), `${what}-${enterpriseId}-${month}.csv`);
  }

  function loadMonth() {
    if (!/^\d{4}-\d{2}$/.test(monthInput.value)) return;
    loadStatement(monthInput.value);
    loadCarbon(monthInput.value);
  }

  monthInput.addEventListener("change", loadMonth);
  loadMonth();
  return every(DEVICES_REFRESH_MS, refreshDevices);
}
