// Live plant figures shared by the admin and grid views (from GET /api/v1/plant).

import { clock, h, kw, num, setTile, tile } from "./util.js";

/** The row of live figure tiles. */
export function plantTiles() {
  return h("div", { class: "tiles" },
    tile("Net power (+ into the park)", "net-kw"),
    tile("Available up", "up-kw"),
    tile("Available down", "down-kw"),
    tile("Devices online", "online"),
    tile("Active instruction", "active"));
}

/** Put a plant answer into the tiles. */
export function showPlant(plant) {
  setTile("net-kw", kw(plant.net_kw), plant.net_kw, `updated ${clock(plant.ts)}`);
  const sustained = Object.fromEntries(plant.sustained.map((s) => [s.duration_min, s]));
  const hold = (key) => [15, 60, 240].filter((m) => sustained[m]).map((m) => `${m} min ${num(sustained[m][key], 0)}`).join(" · ");
  setTile("up-kw", kw(plant.available_up_kw), plant.available_up_kw, hold("up_kw"));
  setTile("down-kw", kw(plant.available_down_kw), plant.available_down_kw, hold("down_kw"));
  setTile("online", `${num(plant.devices_online, 0)} / ${num(plant.devices_enrolled, 0)}`, plant.devices_online,
    `${num(plant.devices_stale, 0)} stale · ${num(plant.devices_protected_now, 0)} protected now`);
  setTile("active", plant.active_instruction || "none", plant.active_instruction || "");
}
