// The park administrator's view: live plant, fleet, dispatch events, settlement, carbon and targets.

import { every } from "./api.js";
import { chartBox, greenChart, setGreen } from "./charts.js";
import { dispatchPanel } from "./dispatch.js";
import { fleetTable } from "./fleet.js";
import { plantTiles, showPlant } from "./plant.js";
import { card, cny, fill, h, kwh, message, num, pct, previousMonth, saveText, tonnes } from "./util.js";

const PLANT_REFRESH_MS = 2000;
const FLEET_REFRESH_MS = 5000;

export function renderAdmin(root, api) {
  const monthInput = h("input", { type: "month", id: "month", value: previousMonth(), "aria-label": "month" });
  const fleet = fleetTable({ showEnterprise: true, idPrefix: "fleet" });
  const events = dispatchPanel(api, { idPrefix: "dispatch" });
  const byKind = h("tbody", { id: "by-kind" });
  const settlementBody = h("div", { id: "settlement" });
  const carbonMessage = h("div", { id: "carbon-message" });
  const carbonCanvas = chartBox("carbon-chart", "consumption by source per enterprise");
  const indicators = h("div", { id: "indicators", class: "indicators" });
  let carbonChart = null;
  let enterpriseNames = {};

  fill(root,
    h("div", { class: "cards" },
      card("Live plant", { id: "plant", wide: true }, plantTiles(),
        h("table", { class: "grid-table compact" },
          h("thead", {}, h("tr", {}, ["Kind", "Devices", "Online", "Net kW", "Up kW", "Down kW"].map((t, i) => h("th", { class: i ? "num" : "" }, t)))),
          byKind)),
      card("Dispatch events", { id: "events", wide: true }, events.element),
      h("div", { class: "month-bar wide" }, h("label", { for: "month" }, "Month (park local time) "), monthInput),
      card("Park indicators against targets", { id: "targets" }, indicators),
      card("Carbon attribution per enterprise", { id: "carbon" }, carbonMessage, carbonCanvas),
      card("Monthly settlement per enterprise", {
        id: "settlement-card", wide: true,
        actions: [h("button", { type: "button", id: "settlement-csv", onclick: () => downloadSettlement() }, "CSV")],
      }, settlementBody),
      card("Fleet", { id: "fleet-card", wide: true }, fleet.element)));

  async function refreshPlant() {
    const plant = await api.get("/api/v1/plant");
    showPlant(plant);
    fill(byKind, Object.entries(plant.by_kind).map(([kind, k]) => h("tr", {},
      h("td", {}, kind), h("td", { class: "num" }, k.devices), h("td", { class: "num" }, k.online),
      h("td", { class: "num" }, num(k.net_kw)), h("td", { class: "num" }, num(k.available_up_kw)),
      h("td", { class: "num" }, num(k.available_down_kw)))));
  }

  async function refreshFleet() {
    const body = await api.get("/api/v1/plant?devices=true");
    fleet.setRows(body.devices);
  }

  async function loadSettlement(month) {
    fill(settlementBody, message(`Loading ${month}…`));
    try {
      const park = await api.get(`/api/v1/park/settlement?month=${month}`);
      const rows = park.enterprises.map((e) => ({ id: e.enterprise_id, total: e.statement.rows.find((r) => r.kind === "total") }));
      const totals = park.park.statement.totals;
      fill(settlementBody,
        park.provisional ? message(`${month} is not over: figures are provisional.`) : null,
        h("div", { class: "table-scroll short" }, h("table", { class: "grid-table", id: "settlement-table" },
          h("thead", {}, h("tr", {}, ["Enterprise", "Events", "Requested kWh", "Delivered kWh", "Ratio", "Payment", "Penalty", "Capacity", "Net"]
            .map((t, i) => h("th", { class: i ? "num" : "" }, t)))),
          h("tbody", {}, rows.map(({ id, total }) => h("tr", { dataset: { enterprise: id } },
            h("td", { title: enterpriseNames[id] || "" }, id),
            h("td", { class: "num" }, total?.events ?? 0),
            h("td", { class: "num" }, num(total?.requested_kwh)),
            h("td", { class: "num" }, num(total?.delivered_kwh)),
            h("td", { class: "num" }, pct(total?.ratio)),
            h("td", { class: "num" }, cny(total?.payment_fen)),
            h("td", { class: "num" }, cny(total?.penalty_fen)),
            h("td", { class: "num" }, cny(total?.capacity_fen)),
            h("td", { class: "num" }, cny(total?.net_fen))))),
          h("tfoot", {}, h("tr", {},
            h("th", {}, "Park"), h("th", { class: "num" }, park.park.statement.events.length),
            h("th", { class: "num" }, num(totals.requested_kwh)), h("th", { class: "num" }, num(totals.delivered_kwh)),
            h("th", {}), h("th", { class: "num" }, cny(totals.payment_fen)), h("th", { class: "num" }, cny(totals.penalty_fen)),
            h("th", { class: "num" }, cny(totals.capacity_fen)), h("th", { class: "num" }, cny(totals.net_fen)))))));
    } catch (err) {
      fill(settlementBody, message(err.message, "error"));
    }
  }

  async function downloadSettlement() {
    const month = monthInput.value;
    saveText(await api.get(`/api/v1/park/settlement?month=${month}&format=csv`), `settlement-park-${month}.csv`);
  }

  async function loadCarbon(month) {
    fill(carbonMessage);
    fill(indicators, message(`Loading ${month}…`));
    try {
      const carbon = await api.get(`/api/v1/park/carbon?month=${month}`);
      const rows = Object.entries(carbon.enterprises).sort(([a], [b]) => (a < b ? -1 : 1)).map(([id, e]) => ({ label: id, ...e }));
      carbonCanvas.hidden = false;
      carbonChart = carbonChart || greenChart(carbonCanvas.querySelector("canvas"));
      setGreen(carbonChart, rows);
      showIndicators(carbon);
    } catch (err) {
      carbonCanvas.hidden = true;
      fill(carbonMessage, message(err.message, err.status === 404 ? "info" : "error"));
      fill(indicators, message(err.status === 404 ? "No carbon record for this month." : err.message, err.status === 404 ? "info" : "error"));
    }
  }

  function showIndicators(carbon) {
    const p = carbon.park;
    const share = p.renewable_share ?? 0;
    const capKg = carbon.settings.credit_cap_fraction * p.residual_emissions_kg;
    fill(indicators,
      h("div", { class: "target" },
        h("div", { class: "target-head" },
          h("span", {}, "Renewable share of consumption"),
          h("span", { id: "renewable-share", dataset: { value: p.renewable_share ?? "" } }, `${pct(p.renewable_share)} of ${pct(p.target_share, 0)} target`),
          h("span", { class: `badge ${p.meets_target ? "online" : "stale"}`, id: "meets-target" }, p.meets_target ? "met" : "not met")),
        h("div", { class: "bar" },
          h("div", { class: "bar-fill", dataset: { share } }),
          h("div", { class: "bar-target", dataset: { share: p.target_share } }))),
      h("dl", { class: "facts" },
        h("dt", {}, "Consumption"), h("dd", {}, kwh(p.consumption_kwh, 0)),
        h("dt", {}, "Green consumed"), h("dd", {}, kwh(p.green_kwh, 0)),
        h("dt", {}, "Net imported fossil power"), h("dd", {}, kwh(p.net_imported_fossil_kwh, 0)),
        h("dt", {}, "Indirect emissions (Scope 2)"), h("dd", {}, tonnes(p.indirect_emissions_kg)),
        h("dt", {}, "Carbon credits applied"), h("dd", {}, `${tonnes(p.credits_applied_kg)} (cap ${pct(carbon.settings.credit_cap_fraction, 0)} = ${tonnes(capKg)})`),
        h("dt", {}, "Net emissions"), h("dd", {}, tonnes(p.net_emissions_kg)),
        h("dt", {}, "Scope 2 location / market"), h("dd", {}, `${tonnes(p.location_based_kg)} / ${tonnes(p.market_based_kg)}`),
        h("dt", {}, "Reconciled to meters"), h("dd", {}, p.reconciled ? "yes" : `no (${carbon.issue_count} issues)`)));
    // Widths set through CSSOM: the page's content security policy allows no inline style attributes.
    indicators.querySelector(".bar-fill").style.width = `${Math.min(share, 1) * 100}%`;
    indicators.querySelector(".bar-target").style.left = `${p.target_share * 100}%`;
  }

  function loadMonth() {
    const month = monthInput.value;
    if (!/^\d{4}-\d{2}$/.test(month)) return;
    loadSettlement(month);
    loadCarbon(month);
  }

  monthInput.addEventListener("change", loadMonth);
  api.get("/api/v1/enterprises").then((body) => {
    enterpriseNames = Object.fromEntries(body.enterprises.map((e) => [e.id, e.name]));
  }).catch(() => {}).finally(loadMonth);

  const stops = [every(PLANT_REFRESH_MS, refreshPlant), every(FLEET_REFRESH_MS, refreshFleet), events.stop];
  return () => stops.forEach((stop) => stop());
}
