// DOM building, number and time formatting, months, downloads. No data of its own.

export const PARK_ZONE = "Asia/Shanghai"; // months and days of settlement and carbon are local to the park

/** Build an element: h("td", {class: "num"}, "12.5"). Children are nodes or text (never parsed as HTML). */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith("on") && typeof value === "function") el.addEventListener(key.slice(2), value);
    else if (key === "dataset") Object.assign(el.dataset, value);
    else if (value === true) el.setAttribute(key, "");
    else el.setAttribute(key, String(value));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

/** Replace an element's children. */
export function fill(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

const numberFormats = new Map();
function numberFormat(digits) {
  if (!numberFormats.has(digits)) {
    numberFormats.set(digits, new Intl.NumberFormat("en", { minimumFractionDigits: digits, maximumFractionDigits: digits }));
  }
  return numberFormats.get(digits);
}

/** A number with thousands separators, or an en dash for none. */
export function num(value, digits = 1) {
  return value === null || value === undefined || Number.isNaN(value) ? "–" : numberFormat(digits).format(value);
}

export const kw = (value) => `${num(value, 1)} kW`;
export const kwh = (value, digits = 1) => `${num(value, digits)} kWh`;
export const cny = (fen) => (fen === null || fen === undefined ? "–" : `¥${num(fen / 100, 2)}`);
export const pct = (share, digits = 1) => (share === null || share === undefined ? "–" : `${num(share * 100, digits)} %`);
export const tonnes = (kg) => (kg === null || kg === undefined ? "–" : `${num(kg / 1000, 1)} t`);

const timeFormat = new Intl.DateTimeFormat("en-GB", { hour: "2-digit", minute: "2-digit", second: "2-digit", hour12: false });
const dateTimeFormat = new Intl.DateTimeFormat("en-GB", {
  year: "numeric", month: "2-digit", day: "2-digit", hour: "2-digit", minute: "2-digit", hour12: false,
});

/** Time of day of an ISO instant, in the browser's zone. */
export const clock = (iso) => (iso ? timeFormat.format(new Date(iso)) : "–");
const hourMinuteFormat = new Intl.DateTimeFormat("en-GB", { hour: "2-digit", minute: "2-digit", hour12: false });
/** Hours and minutes of an ISO instant, in the browser's zone. */
export const hhmm = (iso) => (iso ? hourMinuteFormat.format(new Date(iso)) : "–");
/** Date and time of an ISO instant, in the browser's zone. */
export const stamp = (iso) => (iso ? dateTimeFormat.format(new Date(iso)) : "–");

/** The park-local month of an instant, "YYYY-MM". */
export function monthOf(date) {
  const parts = new Intl.DateTimeFormat("en-CA", { timeZone: PARK_ZONE, year: "numeric", month: "2-digit" }).formatToParts(date);
  const get = (type) => parts.find((p) => p.type === type).value;
  return `${get("year")}-${get("month")}`;
}

/** The park-local month before the current one: the last closed month, "YYYY-MM". */
export function previousMonth(now = new Date()) {
  const [year, month] = monthOf(now).split("-").map(Number);
  return month === 1 ? `${year - 1}-12` : `${year}-${String(month - 1).padStart(2, "0")}`;
}

/** Save a text as a file the browser downloads. */
export function saveText(text, filename, type = "text/csv") {
  const url = URL.createObjectURL(new Blob([text], { type }));
  const link = h("a", { href: url, download: filename, hidden: true });
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10_000);
}

/** A card: a titled section of the page. */
export function card(title, { id, wide = false, actions = [] } = {}, ...body) {
  return h("section", { class: wide ? "card wide" : "card", id },
    h("header", { class: "card-head" }, h("h2", {}, title), h("div", { class: "actions" }, ...actions)),
    ...body);
}

/** A figure tile: label, big value, optional note. The value element carries data-value for tests and tools. */
export function tile(label, id) {
  return h("div", { class: "tile" },
    h("div", { class: "tile-label" }, label),
    h("div", { class: "tile-value", id, dataset: { value: "" } }, "–"),
    h("div", { class: "tile-note", id: `${id}-note` }));
}

/** Set a tile's value (text and numeric data-value) and its note. */
export function setTile(id, text, value = null, note = "") {
  const el = document.getElementById(id);
  if (!el) return;
  el.textContent = text;
  el.dataset.value = value === null || value === undefined ? "" : String(value);
  const noteEl = document.getElementById(`${id}-note`);
  if (noteEl) noteEl.textContent = note;
}

/** A message line (info or error) inside a card. */
export function message(text, kind = "info") {
  return h("p", { class: `message ${kind}`, role: kind === "error" ? "alert" : undefined }, text);
}
