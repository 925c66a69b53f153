// The grid company's view: plant capability, the envelope ahead, sending an instruction and watching it delivered.

import { ApiError, every } from "./api.js";
import { chartBox, envelopeChart, setEnvelope } from "./charts.js";
import { dispatchPanel } from "./dispatch.js";
import { plantTiles, showPlant } from "./plant.js";
import { card, fill, h, message } from "./util.js";

const PLANT_REFRESH_MS = 2000;
const ENVELOPE_REFRESH_MS = 60_000;

export function renderGrid(root, api) {
  const hours = h("select", { id: "envelope-hours", "aria-label": "hours ahead" },
    [6, 12, 24, 48].map((n) => h("option", { value: n, selected: n === 24 }, `${n} h`)));
  const envelopeCanvas = chartBox("envelope-chart", "up and down capability per 15 minutes ahead");
  const envelopeNote = h("div", { id: "envelope-note" });
  const events = dispatchPanel(api, { idPrefix: "dispatch" });
  let envelope = null;

  const field = (name, labelText, input, help = "") => h("div", { class: "field", dataset: { field: name } },
    h("label", { for: input.id }, labelText), input, help ? h("small", { class: "help" }, help) : null,
    h("p", { class: "field-error", id: `error-${name}`, role: "alert" }));
  const kind = h("select", { id: "instruction-kind", name: "kind" },
    h("option", { value: "delta" }, "delta: change from baseline"), h("option", { value: "target" }, "target: hold net power"));
  const power = h("input", { id: "instruction-kw", name: "kw", type: "text", inputmode: "decimal", placeholder: "500" });
  const startIn = h("input", { id: "instruction-start-min", name: "start", type: "text", inputmode: "decimal", value: "0" });
  const duration = h("input", { id: "instruction-minutes", name: "minutes", type: "text", inputmode: "decimal", value: "15" });
  const idInput = h("input", { id: "instruction-id", name: "id", type: "text", placeholder: "generated when empty" });
  const formError = h("div", { id: "instruction-error", class: "form-error", role: "alert" });
  const form = h("form", { id: "instruction-form", novalidate: true, autocomplete: "off" },
    field("kind", "Kind", kind),
    field("kw", "Power [kW]", power, "delta: + = reduce park load (fleet delivers more); target: fleet net power to hold"),
    field("start", "Starts in [min]", startIn),
    field("end", "Lasts [min]", duration),
    field("id", "Instruction id", idInput, "sending the same id again changes nothing"),
    formError,
    h("div", { class: "form-actions" }, h("button", { type: "submit", id: "instruction-submit" }, "Send instruction")));

  fill(root,
    h("div", { class: "cards" },
      card("Plant capability", { id: "plant", wide: true }, plantTiles()),
      card("Envelope ahead (per 15 min)", { id: "envelope", actions: [hours] }, envelopeNote, envelopeCanvas),
      card("Send an instruction", { id: "send" }, form),
      card("Instructions: requested vs delivered", { id: "events", wide: true }, events.element)));

  async function refreshEnvelope() {
    try {
      const body = await api.get(`/api/v1/plant/envelope?hours=${hours.value}`);
      envelope = envelope || envelopeChart(envelopeCanvas.querySelector("canvas"));
      setEnvelope(envelope, body.intervals);
      fill(envelopeNote);
    } catch (err) {
      fill(envelopeNote, message(err.message, "error"));
    }
  }

  function showErrors(fields) {
    const where = { delta_kw: "kw", target_kw: "kw", start: "start", end: "end", id: "id", kind: "kind" };
    const general = [];
    for (const { field: name, message: raw } of fields) {
      const text = raw.replace(/^Value error, /, "");
      // A rule over the whole instruction comes back as "body"; it names the field it is about.
      const about = name === "body" ? (/delta_kw|target_kw/.test(text) ? "kw" : /^end /.test(text) ? "end" : "none") : null;
      const slot = form.querySelector(`#error-${about || where[name.split(".")[0]] || "none"}`);
      if (slot) slot.textContent = text;
      else general.push(name === "body" ? text : `${name}: ${text}`);
    }
    if (general.length) fill(formError, general.join("; "));
  }

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    fill(formError);
    for (const el of form.querySelectorAll(".field-error")) el.textContent = "";
    const startMin = Number(startIn.value || 0);
    const minutes = Number(duration.value || 0);
    const problems = [];
    if (!Number.isFinite(startMin) || startMin < 0) problems.push({ field: "start", message: "minutes from now, 0 or more" });
    if (!Number.isFinite(minutes) || minutes <= 0) problems.push({ field: "end", message: "a duration in minutes above 0" });
    if (problems.length) return showErrors(problems);
    // Times from the service's own clock (a demo may run faster than real time).
    const plant = await api.get("/api/v1/plant");
    const start = new Date(Date.parse(plant.ts) + startMin * 60_000);
    const end = new Date(start.getTime() + minutes * 60_000);
    const value = /^[-+]?(\d+\.?\d*|\.\d+)$/.test(power.value.trim()) ? Number(power.value) : power.value.trim() || null;
    const body = {
      id: idInput.value.trim() || `grid-${start.toISOString().replace(/[-:.TZ]/g, "").slice(0, 14)}-${Math.random().toString(36).slice(2, 6)}`,
      kind: kind.value,
      start: start.toISOString(),
      end: end.toISOString(),
      [kind.value === "delta" ? "delta_kw" : "target_kw"]: value,
    };
    try {
      const view = await api.post("/api/v1/dispatch", body);
      fill(formError, message(`Sent ${view.instruction.id}: ${view.state.status}.`, "ok"));
      idInput.value = "";
      await events.refresh();
      events.select(view.instruction.id);
    } catch (err) {
      if (err instanceof ApiError && err.fields.length) showErrors(err.fields);
      else fill(formError, err.message);
    }
  });

  hours.addEventListener("change", refreshEnvelope);
  const stops = [
    every(PLANT_REFRESH_MS, async () => showPlant(await api.get("/api/v1/plant"))),
    every(ENVELOPE_REFRESH_MS, refreshEnvelope),
    events.stop,
  ];
  return () => stops.forEach((stop) => stop());
}
