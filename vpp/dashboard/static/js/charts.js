// Chart.js (vendored UMD build, global `Chart`) wrapped for the few charts the dashboard draws.

import { h, num } from "./util.js";

export const COLORS = {
  requested: "#d9480f",
  delivered: "#1c7ed6",
  up: "#2f9e44",
  down: "#e8590c",
  expected: "#495057",
  own_pv: "#f59f00",
  shared_green: "#82c91e",
  storage_green: "#20c997",
  contract: "#4dabf7",
  grid: "#adb5bd",
};

export const GREEN_SOURCES = [
  ["own_pv_kwh", "Own PV", COLORS.own_pv],
  ["shared_green_kwh", "Park shared green", COLORS.shared_green],
  ["storage_green_kwh", "Green from storage", COLORS.storage_green],
  ["contract_kwh", "Contracted green", COLORS.contract],
  ["grid_kwh", "Grid (fossil mix)", COLORS.grid],
];

const timeOfDay = new Intl.DateTimeFormat("en-GB", { hour: "2-digit", minute: "2-digit", hour12: false });

/** A canvas inside a sized box (Chart.js needs a positioned parent to be responsive). */
export function chartBox(id, label) {
  return h("div", { class: "chart-box" }, h("canvas", { id, role: "img", "aria-label": label }));
}

function base(type, canvas, data, options) {
  // Live charts update every few seconds: no animation, so the page stays responsive.
  return new window.Chart(canvas, {
    type,
    data,
    options: {
      animation: false,
      responsive: true,
      maintainAspectRatio: false,
      interaction: { mode: "index", intersect: false },
      plugins: { legend: { position: "bottom", labels: { boxWidth: 12 } } },
      ...options,
    },
  });
}

const timeWithSeconds = new Intl.DateTimeFormat("en-GB", { hour: "2-digit", minute: "2-digit", second: "2-digit", hour12: false });

const timeAxis = {
  type: "linear",
  ticks: {
    // Seconds only when the chart spans a few minutes (a live instruction that just started).
    callback: (value, index, ticks) => {
      const span = ticks.length > 1 ? ticks[ticks.length - 1].value - ticks[0].value : 0;
      return (span < 10 * 60_000 ? timeWithSeconds : timeOfDay).format(new Date(value));
    },
    maxTicksLimit: 8,
  },
};

/** Requested vs measured fleet power over time [kW]. */
export function powerChart(canvas) {
  return base("line", canvas, {
    datasets: [
      { label: "Requested kW", data: [], borderColor: COLORS.requested, backgroundColor: COLORS.requested, stepped: true, pointRadius: 0, borderWidth: 2 },
      { label: "Measured kW", data: [], borderColor: COLORS.delivered, backgroundColor: COLORS.delivered, pointRadius: 0, borderWidth: 2 },
    ],
  }, {
    parsing: false,
    scales: { x: timeAxis, y: { title: { display: true, text: "fleet net power [kW]" } } },
  });
}

/** Set the progress points ({ts, requested_kw, measured_kw}) of a power chart. */
export function setProgress(chart, points) {
  const xs = points.map((p) => Date.parse(p.ts));
  chart.data.datasets[0].data = points.map((p, i) => ({ x: xs[i], y: p.requested_kw }));
  chart.data.datasets[1].data = points.map((p, i) => ({ x: xs[i], y: p.measured_kw }));
  chart.update("none");
}

/** Up / down capability per interval ahead, and the expected net power [kW]. */
export function envelopeChart(canvas) {
  return base("bar", canvas, {
    labels: [],
    datasets: [
      { type: "bar", label: "Up available kW", data: [], backgroundColor: COLORS.up, stack: "env" },
      { type: "bar", label: "Down available kW", data: [], backgroundColor: COLORS.down, stack: "env" },
      { type: "line", label: "Expected net kW", data: [], borderColor: COLORS.expected, backgroundColor: COLORS.expected, pointRadius: 0, borderWidth: 2 },
    ],
  }, {
    scales: {
      x: { stacked: true, ticks: { maxTicksLimit: 12 } },
      y: { stacked: false, title: { display: true, text: "kW (down shown below zero)" } },
    },
  });
}

/** Set envelope rows ({start, up_kw, down_kw, expected_kw}). */
export function setEnvelope(chart, intervals) {
  chart.data.labels = intervals.map((row) => timeOfDay.format(new Date(row.start)));
  chart.data.datasets[0].data = intervals.map((row) => row.up_kw);
  chart.data.datasets[1].data = intervals.map((row) => -row.down_kw);
  chart.data.datasets[2].data = intervals.map((row) => row.expected_kw);
  chart.update("none");
}

/** Consumption by source, stacked, one bar per label (enterprise or day) [kWh]. */
export function greenChart(canvas, { horizontal = false } = {}) {
  return base("bar", canvas, {
    labels: [],
    datasets: GREEN_SOURCES.map(([, label, color]) => ({ label, data: [], backgroundColor: color, stack: "kwh" })),
  }, {
    indexAxis: horizontal ? "y" : "x",
    scales: {
      x: { stacked: true, ticks: { autoSkip: true } },
      y: { stacked: true, title: { display: !horizontal, text: "kWh" }, ticks: { callback: (v) => num(v, 0) } },
    },
  });
}

/** Set rows ({label, own_pv_kwh, …, grid_kwh}) of a green chart. */
export function setGreen(chart, rows) {
  chart.data.labels = rows.map((row) => row.label);
  GREEN_SOURCES.forEach(([key], i) => {
    chart.data.datasets[i].data = rows.map((row) => row[key] ?? 0);
  });
  chart.update("none");
}
