// Enrol or change a device with its limits. The fields come from the API's own OpenAPI document
// (the device models), and the service validates: its 422 answer names each wrong field, and the
// message is shown next to that field.

import { ApiError } from "./api.js";
import { fill, h, message } from "./util.js";

const HIDDEN = new Set(["kind", "enterprise_id"]);
const CONNECTION = new Set(["adapter", "address"]);
const KIND_LABELS = {
  battery: "Battery",
  pv: "PV",
  interruptible_load: "Interruptible load",
  shiftable_load: "Shiftable load",
  ev_charger: "EV charger",
};
const UNIT = /\s*\[([^\]]+)\]\s*$/;

/** The schema's types of a property, unwrapping "anyOf [X, null]". */
function typesOf(prop) {
  if (prop.anyOf) return prop.anyOf.map((p) => p.type || (p.$ref ? "object" : "string")).filter((t) => t !== "null");
  return [prop.type || (prop.$ref ? "object" : "string")];
}

function label(name, prop) {
  const unit = (prop.description || "").match(UNIT);
  // The unit goes in brackets, so its suffix leaves the name: rated_kw -> "Rated [kW]".
  const words = name.replace(/_(kw|kwh|min|deg|kw_per_s|cny_per_kwh)$/, "").replace(/_/g, " ").replace(/\bsoc\b/g, "SoC").replace(/\bev\b/g, "EV");
  return `${words.charAt(0).toUpperCase()}${words.slice(1)}${unit ? ` [${unit[1]}]` : ""}`;
}

/** "8-12, 14-16" as protected hour ranges, or null when it does not read as such. */
export function parseHourRanges(text) {
  if (!text.trim()) return [];
  const ranges = [];
  for (const part of text.split(",")) {
    const m = part.trim().match(/^(\d{1,2})\s*-\s*(\d{1,2})$/);
    if (!m) return null;
    ranges.push({ start_hour: Number(m[1]), end_hour: Number(m[2]) });
  }
  return ranges;
}

function hourRangesText(ranges) {
  return (ranges || []).map((r) => `${r.start_hour}-${r.end_hour}`).join(", ");
}

/**
 * The form; schemas are the OpenAPI components, onSaved(device, created) runs after a 2xx.
 * Returns {element, edit(device)}.
 */
export function deviceForm(api, enterpriseId, schemas, onSaved) {
  const kinds = Object.keys(schemas.Device.discriminator.mapping);
  const kindSelect = h("select", { id: "device-kind", name: "kind" }, kinds.map((k) => h("option", { value: k }, KIND_LABELS[k] || k)));
  const fieldsBox = h("div", { class: "form-fields" });
  const connectionBox = h("div", { class: "form-fields" });
  const formError = h("div", { id: "device-form-error", class: "form-error", role: "alert" });
  const submit = h("button", { type: "submit", id: "device-submit" }, "Enrol device");
  const form = h("form", { id: "device-form", novalidate: true, autocomplete: "off" },
    h("div", { class: "field" }, h("label", { for: "device-kind" }, "Kind"), kindSelect),
    fieldsBox,
    h("details", {}, h("summary", {}, "Connection (adapter, address)"), connectionBox),
    formError,
    h("div", { class: "form-actions" }, submit, h("button", { type: "reset", id: "device-reset" }, "Clear")));
  let inputs = {};

  function schemaOf(kind) {
    const ref = schemas.Device.discriminator.mapping[kind];
    return schemas[ref.split("/").pop()];
  }

  function build(kind, values = {}) {
    const schema = schemaOf(kind);
    const required = new Set(schema.required || []);
    inputs = {};
    const make = (name) => {
      const prop = schema.properties[name];
      const types = typesOf(prop);
      const id = `device-${name}`;
      let input;
      if (types.includes("boolean")) {
        input = h("input", { type: "checkbox", id, name });
        input.checked = Boolean(values[name] ?? prop.default ?? false);
      } else {
        const numeric = types.includes("number") || types.includes("integer");
        const placeholder = name === "protected_hours" ? "e.g. 8-12, 14-16" : prop.default ?? "";
        input = h("input", { type: "text", id, name, inputmode: numeric ? "decimal" : undefined, placeholder: String(placeholder) });
        const value = values[name];
        input.value = name === "protected_hours" ? hourRangesText(value) : value ?? "";
      }
      inputs[name] = { input, types, prop };
      const help = (prop.description || "").replace(UNIT, "");
      return h("div", { class: input.type === "checkbox" ? "field check" : "field", dataset: { field: name } },
        h("label", { for: id }, label(name, prop), required.has(name) ? h("span", { class: "req", title: "required" }, " *") : ""),
        input,
        h("small", { class: "help" }, help),
        h("p", { class: "field-error", id: `error-${name}`, role: "alert" }));
    };
    const names = Object.keys(schema.properties).filter((n) => !HIDDEN.has(n));
    fill(fieldsBox, names.filter((n) => !CONNECTION.has(n)).map(make));
    fill(connectionBox, names.filter((n) => CONNECTION.has(n)).map(make));
    clearErrors();
  }

  function payload() {
    const body = { kind: kindSelect.value };
    for (const [name, { input, types }] of Object.entries(inputs)) {
      if (input.type === "checkbox") {
        body[name] = input.checked;
        continue;
      }
      const raw = input.value.trim();
      if (raw === "") continue; // the model's default applies
      if (name === "protected_hours") {
        body[name] = parseHourRanges(raw) ?? raw; // unreadable text goes as is: the service names the field
      } else if ((types.includes("number") || types.includes("integer")) && /^[-+]?(\d+\.?\d*|\.\d+)(e[-+]?\d+)?$/i.test(raw)) {
        body[name] = Number(raw);
      } else {
        body[name] = raw;
      }
    }
    return body;
  }

  function clearErrors() {
    fill(formError);
    for (const el of form.querySelectorAll(".field-error")) el.textContent = "";
    for (const el of form.querySelectorAll("[aria-invalid]")) el.removeAttribute("aria-invalid");
  }

  /** Put each 422 field message next to its field; a whole-device rule goes to the first field it names. */
  function showErrors(fields) {
    const general = [];
    for (const { field, message: raw } of fields) {
      const text = raw.replace(/^Value error, /, "");
      let name = field.split(".")[0];
      if (!(name in inputs)) {
        const mentioned = Object.keys(inputs)
          .map((n) => [n, text.search(new RegExp(`\\b${n}\\b`))])
          .filter(([, at]) => at >= 0)
          .sort((a, b) => a[1] - b[1]);
        name = mentioned.length ? mentioned[0][0] : null;
      }
      if (name === null) {
        general.push(field === "body" ? text : `${field}: ${text}`);
        continue;
      }
      const slot = form.querySelector(`#error-${name}`);
      slot.textContent = slot.textContent ? `${slot.textContent}; ${text}` : text;
      inputs[name].input.setAttribute("aria-invalid", "true");
      const details = slot.closest("details");
      if (details) details.open = true;
    }
    if (general.length) fill(formError, general.join("; "));
  }

  kindSelect.addEventListener("change", () => build(kindSelect.value, currentValues()));
  form.addEventListener("reset", (event) => {
    event.preventDefault();
    build(kindSelect.value);
    submit.textContent = "Enrol device";
  });
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    clearErrors();
    submit.disabled = true;
    try {
      const device = await api.post(`/api/v1/enterprises/${encodeURIComponent(enterpriseId)}/devices`, payload());
      fill(formError, message(`Saved ${device.id}.`, "ok"));
      onSaved(device);
    } catch (err) {
      if (err instanceof ApiError && err.fields.length) showErrors(err.fields);
      else fill(formError, err.message);
    } finally {
      submit.disabled = false;
    }
  });

  function currentValues() {
    const values = {};
    for (const [name, { input }] of Object.entries(inputs)) {
      if (input.type === "checkbox") values[name] = input.checked;
      else if (input.value !== "") values[name] = name === "protected_hours" ? parseHourRanges(input.value) || [] : input.value;
    }
    return values;
  }

  build(kinds[0]);
  return {
    element: form,
    /** Load a device into the form to change it. */
    edit(device) {
      kindSelect.value = device.kind;
      build(device.kind, device);
      submit.textContent = `Save ${device.id}`;
      inputs.id?.input.focus();
    },
  };
}
