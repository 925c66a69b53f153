// The token-protected JSON API, called with the signed-in bearer token.

export class ApiError extends Error {
  /** status: HTTP status; fields: [{field, message}] of a 422, else []. */
  constructor(status, message, fields = []) {
    super(message);
    this.status = status;
    this.fields = fields;
  }
}

export class Api {
  constructor(token) {
    this.token = token;
  }

  async request(method, path, body) {
    const headers = { Authorization: `Bearer ${this.token}`, Accept: "application/json" };
    const init = { method, headers, cache: "no-store" };
    if (body !== undefined) {
      headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    let response;
    try {
      response = await fetch(path, init);
    } catch (err) {
      throw new ApiError(0, `the service does not answer (${err.message})`);
    }
    const type = response.headers.get("Content-Type") || "";
    if (!response.ok) {
      let message = `${response.status} ${response.statusText}`;
      let fields = [];
      if (type.includes("json")) {
        const payload = await response.json();
        message = payload?.error?.message || message;
        fields = payload?.error?.fields || [];
      }
      throw new ApiError(response.status, message, fields);
    }
    return type.includes("json") ? response.json() : response.text();
  }

  get(path) {
    return this.request("GET", path);
  }

  post(path, body) {
    return this.request("POST", path, body);
  }
}

/** Call fn every intervalMs while the page is visible, never two calls at once; returns a stop function. */
export function every(intervalMs, fn) {
  let timer = null;
  let stopped = false;
  const run = async () => {
    timer = null;
    if (stopped) return;
    if (document.visibilityState !== "hidden") {
      try {
        await fn();
      } catch (err) {
        console.warn("refresh failed", err);
      }
    }
    if (!stopped) timer = setTimeout(run, intervalMs);
  };
  run();
  return () => {
    stopped = true;
    if (timer !== null) clearTimeout(timer);
  };
}
