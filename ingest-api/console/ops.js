// The Sluice operator console: plain JavaScript over the /v1/ops API (same origin, no
// dependencies), loaded after app.js and using its helpers ($, when, sleep, flash, go, the form
// helpers). An operator signs in with an operator access token (`sluice token --role
// operator`), kept in sessionStorage under its own key, apart from any user session. Every view
// lives under #/ops/...; app.js's router hands those to window.sluiceOps.
"use strict";

(() => {
  const TOKEN_KEY = "sluice.operator";
  const TX_PAGE = 10;
  const LIVE_MS = 2000;
  const CURRENCIES = ["GBP", "EUR", "USD", "RUB", "JPY"];
  const SVG_NS = "http://www.w3.org/2000/svg";

  const operator = {
    get() {
      try { return JSON.parse(sessionStorage.getItem(TOKEN_KEY) || "null"); } catch { return null; }
    },
    set(value) { sessionStorage.setItem(TOKEN_KEY, JSON.stringify(value)); },
    clear() { sessionStorage.removeItem(TOKEN_KEY); },
  };

  // Where to go once signed in, when an ops page was asked for before.
  let afterSignIn = null;
  // The ops view on screen ("users", "dlq", ...), or null.
  let shownView = null;

  // ---------------------------------------------------------------- small helpers

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    setAttributes(node, attrs);
    append(node, children);
    return node;
  }

  function svgEl(tag, attrs, ...children) {
    const node = document.createElementNS(SVG_NS, tag);
    setAttributes(node, attrs);
    append(node, children);
    return node;
  }

  function setAttributes(node, attrs) {
    for (const [name, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (name === "class") node.setAttribute("class", value);
      else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
      else node.setAttribute(name, value === true ? "" : String(value));
    }
  }

  function append(node, children) {
    for (const child of children.flat(Infinity)) {
      if (child === null || child === undefined || child === false) continue;
      node.append(child instanceof Node ? child : String(child));
    }
  }

  const pill = (text, tone, attrs) => el("span", { class: "pill", "data-tone": tone || "muted", ...(attrs || {}) }, text);
  const code = (text) => el("code", {}, text);
  const none = (text) => el("span", { class: "hint" }, text || "—");
  const exact = (ms) => new Date(ms).toLocaleString([], { dateStyle: "short", timeStyle: "medium" });
  const timeEl = (ms, text) => el("time", { datetime: new Date(ms).toISOString(), title: new Date(ms).toString() }, text || exact(ms));
  const number = (n) => (typeof n === "number" ? n.toLocaleString() : n === null || n === undefined ? "—" : String(n));
  // A dotted name that may wrap after its dots (topic names in narrow tables).
  const breakable = (name) => String(name).split(".").flatMap((part, i) => (i ? [".", document.createElement("wbr"), part] : [part]));
  const message = (text, colspan, className) => el("tr", {}, el("td", { colspan, class: className || "empty-state" }, text));

  function ago(ms) {
    const seconds = Math.max(0, Math.round((Date.now() - ms) / 1000));
    if (seconds < 60) return `${seconds} s ago`;
    if (seconds < 3600) return `${Math.round(seconds / 60)} min ago`;
    return exact(ms);
  }

  function cell(content, attrs) {
    return el("td", attrs || {}, content);
  }

  // Tones for the pills: the same word always has the same colour.
  const TONES = {
    open: "warn", replayed: "good", discarded: "muted",
    ACTIVE: "good", FROZEN: "warn", DECEASED: "bad",
    FULL: "good", BASIC: "info", BROWSING: "muted",
    settled: "good", rejected: "bad", pending: "warn", accepted: "warn",
    external: "info", repartition: "purple", changelog: "warn", internal: "muted",
    Stable: "good", Empty: "muted", Dead: "bad",
  };
  const tone = (word) => TONES[word] || "muted";

  // Header values that hold credentials are never shown whole (screens get shared); the API
  // sends them as "<redacted>" already.
  function headerValue(name, value) {
    if (value === null || value === undefined) return none("(no value)");
    if (value === "<redacted>") return el("span", { class: "redacted", title: "Redacted by the API" }, "redacted");
    if (/^(authorization|proxy-authorization|cookie)$/i.test(name)) {
      const [scheme, secret] = String(value).includes(" ") ? String(value).split(/ (.*)/s) : ["", String(value)];
      return el("span", { class: "masked", title: "Credentials are not shown in the console" }, `${scheme ? `${scheme} ` : ""}${secret.slice(0, 8)}… (hidden)`);
    }
    return el("span", { class: "header-value" }, String(value));
  }

  function headersTable(headers, emptyText) {
    if (!headers || headers.length === 0) return el("p", { class: "empty-state" }, emptyText);
    return el("div", { class: "table-wrap" }, el("table", { class: "kv" },
      el("thead", {}, el("tr", {}, el("th", { scope: "col" }, "Name"), el("th", { scope: "col" }, "Value"))),
      el("tbody", {}, headers.map((h) => el("tr", { "data-header": h.name }, cell(code(h.name)), cell(headerValue(h.name, h.value)))))));
  }

  // Pretty JSON as DOM (never innerHTML), with the fields the API redacted marked.
  function jsonView(value, redacted) {
    const hidden = new Set(redacted || []);
    const pre = el("pre", { class: "json", tabindex: "0" });
    const pad = (n) => " ".repeat(n);
    const write = (v, indent, path) => {
      if (v === null) return pre.append(el("span", { class: "json-null" }, "null"));
      if (Array.isArray(v)) {
        if (v.length === 0) return pre.append("[]");
        pre.append("[\n");
        v.forEach((item, i) => {
          pre.append(pad(indent + 2));
          write(item, indent + 2, `${path}[${i}]`);
          pre.append(i < v.length - 1 ? ",\n" : "\n");
        });
        return pre.append(`${pad(indent)}]`);
      }
      if (typeof v === "object") {
        const keys = Object.keys(v);
        if (keys.length === 0) return pre.append("{}");
        pre.append("{\n");
        keys.forEach((key, i) => {
          const at = path ? `${path}.${key}` : key;
          pre.append(pad(indent + 2), el("span", { class: "json-key" }, JSON.stringify(key)), ": ");
          if (hidden.has(key) || hidden.has(at)) pre.append(el("span", { class: "redacted", title: "Redacted by the API" }, "redacted"));
          else write(v[key], indent + 2, at);
          pre.append(i < keys.length - 1 ? ",\n" : "\n");
        });
        return pre.append(`${pad(indent)}}`);
      }
      const kind = typeof v === "string" ? "json-string" : typeof v === "number" ? "json-number" : "json-bool";
      return pre.append(el("span", { class: kind }, JSON.stringify(v)));
    };
    write(value, 0, "");
    return pre;
  }

  // A decoded record value: JSON (from JSON or Avro), text, hex for binary, or nothing.
  function valueView(item) {
    const parts = [];
    if (item.decode_error) parts.push(el("p", { class: "problem" }, `Could not decode the value: ${item.decode_error}`));
    if (item.value !== null && item.value !== undefined) parts.push(jsonView(item.value, item.redacted));
    else if (item.value_text !== null && item.value_text !== undefined) {
      parts.push(el("pre", { class: `text-value${item.value_format === "binary" ? " hex" : ""}`, tabindex: "0" }, item.value_text));
    } else if (!item.decode_error) parts.push(el("p", { class: "empty-state" }, item.value_format === "null" ? "No value (a tombstone)." : "No value."));
    if (item.redacted && item.redacted.length) {
      parts.push(el("p", { class: "hint redacted-note" }, "Redacted by the API: ", item.redacted.map((f, i) => [i ? ", " : "", code(f)])));
    }
    return parts;
  }

  function formatLabel(item) {
    const label = { avro: "Avro", json: "JSON", text: "text", binary: "binary (hex)", null: "no value" }[item.value_format] || item.value_format || "unknown";
    return pill(item.schema_id !== null && item.schema_id !== undefined ? `${label} · schema ${item.schema_id}` : label, "muted", { class: "pill format" });
  }

  function problemText(answer, what) {
    if (answer.status === 0) return `Could not load ${what}: ${answer.problem.detail}`;
    return `Could not load ${what}: ${answer.problem ? answer.problem.detail : `HTTP ${answer.status}`}`;
  }

  // ---------------------------------------------------------------- the API

  function claimsOf(token) {
    const parts = token.split(".");
    if (parts.length !== 3 || parts.some((p) => !/^[A-Za-z0-9_-]+$/.test(p))) return null;
    try {
      const base64 = parts[1].replace(/-/g, "+").replace(/_/g, "/");
      const bytes = Uint8Array.from(atob(base64 + "===".slice((base64.length + 3) % 4)), (c) => c.charCodeAt(0));
      const claims = JSON.parse(new TextDecoder().decode(bytes));
      return claims && typeof claims === "object" ? claims : null;
    } catch {
      return null;
    }
  }

  async function call(method, path, body, headers) {
    const current = operator.get();
    const all = { ...(headers || {}) };
    if (current) all.authorization = `Bearer ${current.token}`;
    if (body !== undefined) all["content-type"] = "application/json";
    let response;
    try {
      response = await fetch(path, { method, headers: all, body: body === undefined ? undefined : JSON.stringify(body) });
    } catch {
      return { ok: false, status: 0, data: null, problem: { type: "network", status: 0, detail: "the API did not answer; check that Sluice is running, then try again" } };
    }
    const text = await response.text();
    let data = null;
    try { data = text ? JSON.parse(text) : null; } catch { data = { detail: text }; }
    const sentWith = current ? current.token : null;
    const problem = response.ok ? null : {
      type: ((data && data.type) || "").split("/").pop(),
      title: data && data.title,
      detail: (data && data.detail) || (data && data.title) || response.statusText || `HTTP ${response.status}`,
      status: response.status,
    };
    return { ok: response.ok, status: response.status, data, problem, sentWith };
  }

  // A call with the operator's token. A 401 means the token is gone (expired, revoked, wrong
  // key): back to the sign-in. A 403 is checked: if the token still opens the ops API, this one
  // thing was refused (shown where it was asked for); if not, it is no operator's token.
  async function opsApi(method, path, body, headers) {
    if (!operator.get()) return { ok: false, status: 401, data: null, problem: { type: "signed-out", status: 401, detail: "signed out" } };
    const answer = await call(method, path, body, headers);
    if (answer.status === 401) refused(answer.problem, answer.sentWith);
    if (answer.status === 403) {
      const check = answer.problem.type === "operator-only" ? answer : await call("GET", "/v1/ops/dlq?status=open&limit=1");
      if (check.status === 401 || check.status === 403) refused(answer.problem, check.sentWith);
    }
    return answer;
  }

  // A refusal of the token a request was sent with; an answer to a request sent before the
  // operator signed in again (with another token) changes nothing.
  function refused(problem, token) {
    const current = operator.get();
    if (!current || current.token !== token) return;
    operator.clear();
    stopLive();
    clearViews();
    const why = problem.status === 403 ? "This token does not grant the operator role" : "The API no longer accepts the operator token";
    flash(`${why} (${problem.detail}). Sign in again with an operator token.`);
    if (location.hash.startsWith("#/ops/")) afterSignIn = location.hash;
    go("#/operator");
  }

  // Money commands carry an Idempotency-Key, the same one when the same form is sent again
  // with the same fields before an answer came (as app.js does for users).
  async function sendCommand(form, path, body) {
    const fingerprint = JSON.stringify([path, body]);
    if (form.dataset.fingerprint !== fingerprint || !form.dataset.idempotencyKey) {
      form.dataset.fingerprint = fingerprint;
      form.dataset.idempotencyKey = crypto.randomUUID();
    }
    const answer = await opsApi("POST", path, body, { "idempotency-key": form.dataset.idempotencyKey });
    if (answer.status !== 0 && answer.status < 500) delete form.dataset.idempotencyKey;
    return answer;
  }

  // Polls a command's status URL until it is settled or rejected.
  async function watch(statusUrl, onUpdate) {
    for (let attempt = 0; attempt < 150 && operator.get(); attempt++) {
      const answer = await opsApi("GET", statusUrl);
      if (answer.ok) {
        onUpdate(answer.data);
        if (answer.data.status === "settled" || answer.data.status === "rejected") return answer.data;
      }
      await sleep(400);
    }
    return { status: "unknown", detail: "no outcome yet; look the command up again later" };
  }

  function setBadge(open) {
    const badge = $("#ops-dlq-badge");
    const count = Number(open) || 0;
    badge.hidden = count === 0;
    badge.textContent = String(count);
    $("#ops-dlq-link").setAttribute("aria-label", count ? `Dead letters, ${count} open` : "Dead letters");
  }

  async function refreshBadge() {
    const answer = await opsApi("GET", "/v1/ops/dlq?status=open&limit=1");
    if (answer.ok) setBadge(answer.data.open);
  }

  // ---------------------------------------------------------------- routing (called by app.js)

  const VIEWS = {
    users: { title: "Users", show: showUsers },
    dlq: { title: "Dead letters", show: showDlq },
    topology: { title: "Topology", show: showTopology },
    topics: { title: "Topics", show: showTopics },
    consumers: { title: "Consumers & instances", show: showConsumers },
  };

  function owns(view) {
    return view === "operator" || view === "ops" || view.startsWith("ops/");
  }

  function resolve(view) {
    const [, name = "", ...rest] = view.split("/");
    let param = null;
    try { param = rest.length ? decodeURIComponent(rest.join("/")) : null; } catch { param = null; }
    if (!operator.get()) {
      if (view !== "operator") afterSignIn = `#/${view}`;
      return { section: "operator", name: "operator", title: "operator sign-in", link: "#/operator", param: null };
    }
    if (!VIEWS[name]) return { section: "ops-users", name: "users", title: "Users", link: "#/ops/users", param: null };
    return { section: `ops-${name}`, name, title: VIEWS[name].title, link: `#/ops/${name}`, param: param || null };
  }

  function show(view) {
    const name = view ? view.name : null;
    if (name !== "consumers") stopLive();
    shownView = name;
    if (!view) return;
    if (name === "operator") {
      setTimeout(() => { if (!$("#view-operator").hidden) $("#operator-token").focus(); });
      return;
    }
    const current = operator.get();
    $("#ops-whoami").textContent = `Operator · ${current.subject}`;
    $("#ops-whoami").title = current.expires_at_ms ? `Token valid until ${exact(current.expires_at_ms)}` : "";
    if (name !== "dlq") refreshBadge();
    VIEWS[name].show(view.param);
  }

  function clearViews() {
    usersState.user = null;
    usersState.who = null;
    $("#ops-user").hidden = true;
    $("#ops-user-empty").hidden = false;
    $("#ops-user-profile").replaceChildren();
    $("#ops-deposit-status").textContent = "";
    $("#ops-command-result").replaceChildren();
    $("#ops-dlq-detail").replaceChildren();
    $("#ops-dlq-detail").hidden = true;
    delete $("#ops-dlq-detail").dataset.id;
    dlqState.selected = null;
    $("#ops-topic-records").replaceChildren();
    delete $("#ops-topic-detail").dataset.topic;
    live.openGroups = null;
    setBadge(0);
  }

  // ---------------------------------------------------------------- sign-in

  onSubmit("operator-form", async (form) => {
    const token = form.token.value.trim().replace(/^Bearer\s+/i, "");
    if (!token) {
      setError(form, "token", "Paste the operator access token.");
      return form.token.focus();
    }
    const claims = claimsOf(token);
    if (!claims) {
      setError(form, "token", "This is not an access token: a token is three parts separated by dots (eyJ….eyJ….…).");
      return form.token.focus();
    }
    operator.set({ token, subject: claims.sub || "operator", expires_at_ms: claims.exp ? claims.exp * 1000 : null });
    const check = await call("GET", "/v1/ops/dlq?status=open&limit=1");
    if (!check.ok) {
      operator.clear();
      if (check.status === 401) setError(form, "token", `The API refused this token: ${check.problem.detail}.`);
      else if (check.status === 403) setError(form, "token", `This token is not an operator's: ${check.problem.detail}. Make one with --role operator.`);
      else return showProblem(form, { type: "", detail: `Could not check the token: ${check.problem.detail}.` });
      return form.token.focus();
    }
    form.reset();
    flash("");
    setBadge(check.data.open);
    const next = afterSignIn && afterSignIn.startsWith("#/ops/") ? afterSignIn : "#/ops/users";
    afterSignIn = null;
    go(next);
  });

  $("#ops-sign-out").addEventListener("click", () => {
    operator.clear();
    stopLive();
    clearViews();
    afterSignIn = null;
    flash("You signed out of the operator console.");
    go("#/operator");
  });

  // ---------------------------------------------------------------- users

  const usersState = { who: null, page: 0, user: null, gen: 0 };
  problemFields["user-not-found"] = "who";
  problemFields["command-not-found"] = "command_id";
  problemFields["invalid-user-id"] = "user_id";
  problemFields["note-required"] = "note";

  function showUsers(who) {
    const form = $("#ops-find-form");
    if (!who) {
      usersState.who = null;
      usersState.user = null;
      $("#ops-user").hidden = true;
      $("#ops-user-loading").hidden = true;
      $("#ops-user-empty").hidden = false;
      return;
    }
    if (who !== usersState.who) {
      usersState.page = 0;
      usersState.user = null;
      $("#ops-deposit-status").textContent = "";
      $("#ops-command-result").replaceChildren();
      clearErrors($("#ops-deposit-form"));
      clearErrors($("#ops-command-form"));
    }
    usersState.who = who;
    form.who.value = who;
    return loadUser();
  }

  async function loadUser() {
    const gen = ++usersState.gen;
    const { who, page } = usersState;
    const form = $("#ops-find-form");
    if (!usersState.user) {
      $("#ops-user").hidden = true;
      $("#ops-user-empty").hidden = true;
      $("#ops-user-loading").hidden = false;
    }
    const answer = await opsApi("GET", `/v1/ops/users/${encodeURIComponent(who)}?skip=${page * TX_PAGE}&limit=${TX_PAGE}`);
    if (gen !== usersState.gen || shownView !== "users") return;
    $("#ops-user-loading").hidden = true;
    if (!answer.ok) {
      if (answer.status === 401) return;
      $("#ops-user").hidden = true;
      $("#ops-user-empty").hidden = false;
      usersState.user = null;
      if (answer.status === 404) {
        return showProblem(form, { type: "user-not-found", detail: `No user has this ${who.includes("@") ? "email" : "id"}.` });
      }
      return showProblem(form, { type: "", detail: problemText(answer, "the user") });
    }
    const { user, account, transactions } = answer.data;
    const previous = usersState.user;
    usersState.user = user;
    $("#ops-user-empty").hidden = true;
    $("#ops-user").hidden = false;
    renderProfile(user, account);
    renderAccount(account);
    renderTransactions(transactions);
    const commandUser = $("#ops-command-user");
    if (!commandUser.value || (previous && commandUser.value === previous.user_id) || !previous) commandUser.value = user.user_id;
  }

  function renderProfile(user, account) {
    $("#ops-user-name").textContent = user.full_name || user.email;
    const identifiers = user.identifiers && user.identifiers.length ? user.identifiers.map((i, n) => [n ? " " : "", code(i)]) : none("none verified");
    const balance = account ? `${account.balance} ${account.currency}` : "no account yet";
    const rows = [
      ["Email", user.email],
      ["User id", code(user.user_id)],
      ["Full name", user.full_name || none("not given")],
      ["Date of birth", user.date_of_birth || none("not given")],
      ["Phone", user.phone_number || none("not given")],
      ["Status", pill(user.status, tone(user.status))],
      ["KYC level", pill(user.kyc_level, tone(user.kyc_level))],
      ["Identifiers", identifiers],
      ["Registered", user.registered_at_ms ? timeEl(user.registered_at_ms) : none()],
      ["Balance", el("output", { id: "ops-user-balance" }, balance)],
    ];
    $("#ops-user-profile").replaceChildren(...rows.flatMap(([term, value]) => [el("dt", {}, term), el("dd", {}, value)]));
  }

  function renderAccount(account) {
    const body = $("#ops-user-balances tbody");
    const note = $("#ops-user-account");
    const select = $("#ops-deposit-currency");
    const chosen = select.value;
    const owner = usersState.user ? usersState.user.user_id : "";
    const held = account ? (account.balances || [{ currency: account.currency, balance: account.balance }]) : [];
    const currencies = [...new Set([...(account ? [account.currency] : []), ...held.map((b) => b.currency), ...CURRENCIES])];
    select.replaceChildren(...currencies.map((c) => new Option(c, c)));
    // The same user's page again keeps the currency chosen; another user's starts at their home one.
    select.value = select.dataset.for === owner && currencies.includes(chosen) ? chosen : currencies[0];
    select.dataset.for = owner;
    if (!account) {
      note.replaceChildren("No account yet: it opens with the first payment or deposit.");
      body.replaceChildren(message("No balances yet.", 2));
      return;
    }
    const accountTone = { open: "good", frozen: "warn", not_opened: "muted" }[account.status] || "muted";
    note.replaceChildren("Account ", pill(account.status.replace("_", " "), accountTone),
      account.frozen_reason ? ` (${account.frozen_reason})` : "", ` · home currency ${account.currency}`);
    body.replaceChildren(...held.map((b) => el("tr", { "data-currency": b.currency }, cell(b.currency), cell(b.balance, { class: "num" }))));
  }

  function renderTransactions(page) {
    const body = $("#ops-user-transactions tbody");
    const list = page.transactions || [];
    body.replaceChildren(...list.map((t) => {
      const sign = t.direction === "debit" ? "−" : "+";
      return el("tr", { "data-command": t.command_id },
        cell(timeEl(t.timestamp_ms, when(t.timestamp_ms))),
        cell(t.kind.toLowerCase()),
        cell(`${sign}${t.amount} ${t.currency || ""}`.trim(), { class: `num ${t.direction}` }),
        cell(t.counterparty_name || t.counterparty || ""),
        cell(t.reversal_reason ? `returned: ${t.reversal_reason}` : (t.reference || "")),
        cell(t.balance_after, { class: "num" }));
    }));
    if (list.length === 0) body.append(message(usersState.page === 0 ? "This user has no transactions yet." : "No more transactions.", 6));
    $("#ops-newer").disabled = usersState.page === 0;
    $("#ops-older").disabled = page.next_skip === null || page.next_skip === undefined;
    $("#ops-page-label").textContent = `Page ${usersState.page + 1}`;
  }

  onSubmit("ops-find-form", async (form) => {
    if (!validate(form, { who: "required" })) return;
    const who = form.who.value.trim();
    const hash = `#/ops/users/${encodeURIComponent(who)}`;
    if (location.hash === hash) {
      usersState.page = 0;
      await loadUser();
    } else {
      go(hash);
    }
  });

  $("#ops-newer").addEventListener("click", () => { usersState.page = Math.max(0, usersState.page - 1); loadUser(); });
  $("#ops-older").addEventListener("click", () => { usersState.page += 1; loadUser(); });

  onSubmit("ops-deposit-form", async (form) => {
    if (!validate(form, { amount: "amount" })) return;
    const user = usersState.user;
    if (!user) return;
    const body = { user_id: user.user_id, amount: form.amount.value.trim(), currency: form.currency.value };
    if (form.reference.value.trim()) body.reference = form.reference.value.trim();
    const answer = await sendCommand(form, "/v1/deposits", body);
    if (!answer.ok) {
      if (answer.status === 401) return;
      return showProblem(form, answer.problem);
    }
    const status = $("#ops-deposit-status");
    const label = `Deposit of ${body.amount} ${body.currency}`;
    const render = (state) => {
      const shown = state.status === "unknown" ? `no outcome yet (${state.detail})` : describe(state);
      status.dataset.status = state.status === "accepted" ? "pending" : state.status;
      status.replaceChildren(el("span", { class: "status-text" }, `${label}: ${shown}`),
        el("span", { class: "hint command-line" }, "Command ", el("code", { class: "command-id" }, answer.data.command_id)));
    };
    render({ status: "accepted" });
    const final = await watch(answer.data.status_url, render);
    if (final.status === "unknown") render(final);
    if (final.status === "settled") {
      const currency = form.currency.value;
      form.reset();
      form.currency.value = currency;
    }
    if (usersState.user && usersState.user.user_id === user.user_id) {
      usersState.page = 0;
      await loadUser();
    }
  });

  onSubmit("ops-command-form", async (form) => {
    if (!validate(form, { command_id: "required" })) return;
    const id = form.command_id.value.trim();
    const user = form.user_id.value.trim();
    if (user && !/^u_[0-9a-f]{20}$/.test(user)) {
      setError(form, "user_id", "A user id is u_ and 20 hex digits; leave it empty for your own commands.");
      return form.user_id.focus();
    }
    const out = $("#ops-command-result");
    out.replaceChildren();
    const answer = await opsApi("GET", `/v1/commands/${encodeURIComponent(id)}${user ? `?user_id=${encodeURIComponent(user)}` : ""}`);
    if (!answer.ok) {
      if (answer.status === 401) return;
      if (answer.status === 404) return showProblem(form, { type: "command-not-found", detail: `No command ${id} for ${user || "you"}: check the id and the account.` });
      return showProblem(form, answer.problem);
    }
    const s = answer.data;
    out.replaceChildren(el("dl", { class: "summary compact" },
      el("dt", {}, "Command"), el("dd", {}, code(s.command_id)),
      el("dt", {}, "Type"), el("dd", {}, s.command_type),
      el("dt", {}, "Outcome"), el("dd", {}, pill(s.status, tone(s.status), { "data-command-status": s.status })),
      s.reason ? [el("dt", {}, "Reason"), el("dd", {}, code(s.reason))] : null,
      s.detail ? [el("dt", {}, "Detail"), el("dd", {}, s.detail)] : null,
      el("dt", {}, "Updated"), el("dd", {}, s.updated_at_ms ? timeEl(s.updated_at_ms) : none("not processed yet"))));
  });

  // ---------------------------------------------------------------- dead letters

  const dlqState = { selected: null, gen: 0, detailGen: 0, outcome: null, focusDetail: false };

  function showDlq(id) {
    if (id !== dlqState.selected) dlqState.focusDetail = Boolean(id);
    dlqState.selected = id;
    const panel = $("#ops-dlq-detail");
    if (!id) {
      panel.hidden = true;
      panel.replaceChildren();
      delete panel.dataset.id;
    }
    loadDlqList();
    if (id) loadDlqDetail(id);
  }

  function dlqSource(d) {
    return `${d.source_topic} · partition ${d.source_partition} · offset ${d.source_offset}`;
  }

  async function loadDlqList() {
    const gen = ++dlqState.gen;
    const filter = $("#ops-dlq-filter").value;
    const body = $("#ops-dlq-table tbody");
    const refresh = $("#ops-dlq-refresh");
    refresh.disabled = true;
    refresh.textContent = "Refreshing…";
    const answer = await opsApi("GET", `/v1/ops/dlq?status=${encodeURIComponent(filter)}&limit=50`);
    if (gen !== dlqState.gen) return;
    refresh.disabled = false;
    refresh.textContent = "Refresh";
    if (!answer.ok) {
      if (answer.status !== 401) body.replaceChildren(message(problemText(answer, "the dead letters"), 6, "problem"));
      return;
    }
    const { dead_letters: letters, open } = answer.data;
    setBadge(open);
    const cut = letters.length >= 50 ? " · the 50 newest shown" : "";
    $("#ops-dlq-summary").textContent = `${open ? `${number(open)} open` : "Nothing open"}${cut} · updated ${new Date().toLocaleTimeString()}`;
    body.replaceChildren(...letters.map((d) => {
      const link = `#/ops/dlq/${encodeURIComponent(d.id)}`;
      const selected = d.id === dlqState.selected;
      const tr = el("tr", { class: `clickable${selected ? " selected" : ""}`, "data-id": d.id, "aria-current": selected ? "true" : null },
        cell(timeEl(d.dead_lettered_at_ms)),
        cell([el("a", { href: link, "aria-label": `Dead letter from ${dlqSource(d)}` }, d.source_topic),
          el("span", { class: "sub" }, `partition ${d.source_partition} · offset ${d.source_offset}`)]),
        cell(d.key === null || d.key === undefined ? none("no key") : code(d.key), { class: "key" }),
        cell(pill(d.error_class, "bad")),
        cell(el("div", { class: "clip", title: d.error_message }, d.error_message)),
        cell(pill(d.status, tone(d.status), { class: "pill dlq-status" })));
      tr.addEventListener("click", (event) => { if (!event.target.closest("a, button")) go(link); });
      return tr;
    }));
    if (letters.length === 0) {
      body.append(message(filter === "open" ? "No open dead letters: nothing is waiting for a decision." : "The dead-letter queue is empty.", 6));
    }
  }

  async function loadDlqDetail(id) {
    const gen = ++dlqState.detailGen;
    const panel = $("#ops-dlq-detail");
    panel.hidden = false;
    if (panel.dataset.id !== id) {
      panel.dataset.id = id;
      panel.replaceChildren(el("p", { class: "empty-state" }, "Loading…"));
    }
    const answer = await opsApi("GET", `/v1/ops/dlq/${encodeURIComponent(id)}`);
    if (gen !== dlqState.detailGen || shownView !== "dlq" || dlqState.selected !== id) return;
    if (!answer.ok) {
      if (answer.status === 401) return;
      const text = answer.status === 404 ? `There is no dead letter ${id}: it may have aged out of the queue.` : problemText(answer, `dead letter ${id}`);
      panel.replaceChildren(detailHead(`Dead letter ${id}`, null), el("p", { class: "problem" }, text));
      return;
    }
    renderDlqDetail(answer.data);
    if (dlqState.focusDetail) {
      dlqState.focusDetail = false;
      panel.focus({ preventScroll: true });
      panel.scrollIntoView({ block: "start", behavior: "smooth" });
    }
  }

  function detailHead(title, status) {
    return el("div", { class: "section-head" },
      el("h3", { id: "ops-dlq-detail-title" }, title),
      status ? pill(status, tone(status), { class: "pill dlq-status", id: "ops-dlq-detail-status" }) : null,
      el("a", { href: "#/ops/dlq", class: "back" }, "Close"));
  }

  function handledText(d) {
    const h = d.handled;
    if (!h) return null;
    const by = `by ${h.operator} on ${exact(h.at_ms)}`;
    if (h.action === "replayed") {
      const to = h.replayed_to;
      return to ? `Replayed to ${to.topic}, partition ${to.partition} at offset ${to.offset}, ${by}.` : `Replayed ${by}.`;
    }
    return `Discarded ${by}.`;
  }

  function renderDlqDetail(d) {
    const panel = $("#ops-dlq-detail");
    const handled = d.handled;
    const outcome = handled ? el("div", { class: "outcome", id: "ops-dlq-outcome", "data-tone": handled.action === "replayed" ? "good" : "muted", role: "status", tabindex: "-1" },
      el("p", {}, handledText(d)), handled.note ? el("p", { class: "note" }, "Reason: ", el("q", {}, handled.note)) : null) : null;
    const facts = [
      ["Dead-lettered", timeEl(d.dead_lettered_at_ms)],
      ["Source", dlqSource(d)],
      ["Error", [pill(d.error_class, "bad"), " ", el("span", { class: "error-message" }, d.error_message)]],
      ["Key", d.key === null || d.key === undefined ? none("no key") : code(d.key)],
      d.truncated ? ["Truncated", el("span", { class: "problem" }, d.truncated)] : null,
      ["In the queue at", `partition ${d.partition} · offset ${d.offset}`],
    ].filter(Boolean);
    const actions = d.status === "open" ? el("div", { class: "actions", id: "ops-dlq-actions" },
      el("button", { type: "button", "data-action": "replay", "aria-expanded": "false", "aria-controls": "ops-dlq-action-slot", disabled: Boolean(d.truncated), onclick: () => openAction(d, "replay") }, `Replay to ${d.source_topic}`),
      el("button", { type: "button", class: "secondary danger", "data-action": "discard", "aria-expanded": "false", "aria-controls": "ops-dlq-action-slot", onclick: () => openAction(d, "discard") }, "Discard"),
      d.truncated ? el("p", { class: "hint" }, "This record was cut to fit the queue, so it cannot be replayed: only discarded.") : null) : null;
    const value = d.value_format !== undefined || d.value !== undefined || d.value_text !== undefined;
    panel.replaceChildren();
    append(panel, [
      detailHead(`Dead letter ${d.id}`, d.status),
      outcome,
      el("dl", { class: "summary plain" }, facts.flatMap(([term, v]) => [el("dt", {}, term), el("dd", {}, v)])),
      actions,
      el("div", { id: "ops-dlq-action-slot" }),
      el("h4", {}, "Value ", value ? formatLabel(d) : null),
      value ? valueView(d) : el("p", { class: "empty-state" }, "Not available."),
      el("h4", {}, "Original headers"),
      headersTable(d.original_headers, "The record had no headers."),
      el("h4", {}, "Error headers"),
      headersTable(d.headers, "None."),
    ]);
  }

  function openAction(d, action) {
    const slot = $("#ops-dlq-action-slot");
    const replay = action === "replay";
    const title = replay ? `Replay to ${d.source_topic}` : "Discard this dead letter";
    const form = el("form", { id: "ops-dlq-action-form", class: "action-form", novalidate: true, "aria-labelledby": "ops-dlq-action-title", "data-action": action },
      el("h4", { id: "ops-dlq-action-title" }, title),
      el("p", { class: "hint" }, replay
        ? `The record (its key, value and headers) is produced again to ${d.source_topic}, on the partition its key belongs to, and processed as new.`
        : "The record stays in the queue's topic for the record, marked discarded; nothing is processed."),
      el("div", { class: "field" },
        el("label", { for: "ops-dlq-note" }, "Reason ", el("span", { class: "hint" }, "(kept with the outcome)")),
        el("textarea", { id: "ops-dlq-note", name: "note", rows: "3", maxlength: "1000", required: true, "aria-describedby": "ops-dlq-note-error" }),
        el("p", { class: "error", id: "ops-dlq-note-error", "aria-live": "polite" })),
      el("p", { class: "error", id: "ops-dlq-action-form-error", "aria-live": "assertive" }),
      el("div", { class: "actions" },
        el("button", { type: "submit", class: replay ? null : "danger-solid" }, replay ? "Replay dead letter" : "Discard dead letter"),
        el("button", { type: "button", class: "secondary", onclick: () => closeAction(action) }, "Cancel")));
    slot.replaceChildren(form);
    document.querySelectorAll("#ops-dlq-actions [data-action]").forEach((b) => b.setAttribute("aria-expanded", String(b.dataset.action === action)));
    form.note.addEventListener("input", () => { if (form.note.value.trim()) setError(form, "note", ""); });
    onSubmit("ops-dlq-action-form", async (f) => {
      const note = f.note.value.trim();
      if (!note) {
        setError(f, "note", "Give a reason: it is kept with the outcome.");
        return f.note.focus();
      }
      const answer = await opsApi("POST", `/v1/ops/dlq/${encodeURIComponent(d.id)}/${action}`, { note });
      if (!answer.ok) {
        if (answer.status === 401) return;
        if (answer.status === 409) {
          flash(`Dead letter ${d.id} was handled already: ${answer.problem.detail}`);
          await Promise.all([loadDlqList(), loadDlqDetail(d.id)]);
          return;
        }
        return showProblem(f, answer.problem);
      }
      await Promise.all([loadDlqList(), loadDlqDetail(d.id)]);
      const outcome = $("#ops-dlq-outcome");
      if (outcome) outcome.focus();
    });
    form.note.focus();
  }

  function closeAction(action) {
    $("#ops-dlq-action-slot").replaceChildren();
    document.querySelectorAll("#ops-dlq-actions [data-action]").forEach((b) => b.setAttribute("aria-expanded", "false"));
    const button = $(`#ops-dlq-actions [data-action=${action}]`);
    if (button) button.focus();
  }

  $("#ops-dlq-filter").addEventListener("change", () => loadDlqList());
  $("#ops-dlq-refresh").addEventListener("click", () => {
    loadDlqList();
    if (dlqState.selected) loadDlqDetail(dlqState.selected);
  });

  // ---------------------------------------------------------------- topology

  let topologyGen = 0;
  const FONT = "12px system-ui, -apple-system, \"Segoe UI\", sans-serif";
  const FONT_BOLD = "600 12px system-ui, -apple-system, \"Segoe UI\", sans-serif";
  const FONT_SMALL = "10px system-ui, -apple-system, \"Segoe UI\", sans-serif";
  const measure = (() => {
    const context = document.createElement("canvas").getContext("2d");
    return (text, font) => {
      context.font = font;
      return context.measureText(text).width;
    };
  })();
  const G = { pad: 20, top: 52, colGap: 64, rowGap: 14, nodeH: 40, pillH: 24, pillGap: 6, storeH: 44, storeGap: 22, bandGap: 56, changelogGap: 34 };

  async function showTopology() {
    const gen = ++topologyGen;
    const box = $("#ops-topology-graphs");
    if (!box.querySelector("figure")) box.replaceChildren(el("p", { class: "empty-state" }, "Loading…"));
    const answer = await opsApi("GET", "/v1/ops/topology");
    if (gen !== topologyGen || shownView !== "topology") return;
    if (!answer.ok) {
      if (answer.status !== 401) box.replaceChildren(el("p", { class: "problem" }, problemText(answer, "the topology")));
      return;
    }
    const data = answer.data;
    const topics = new Map((data.topics || []).map((t) => [t.name, t]));
    const subs = data.subtopologies || [];
    $("#ops-topology-summary").textContent = `Application ${data.application_id} · ${subs.length} sub-topolog${subs.length === 1 ? "y" : "ies"}`;
    if (subs.length === 0) {
      box.replaceChildren(el("p", { class: "empty-state" }, "This application has no sub-topologies."));
      return;
    }
    box.replaceChildren(...subs.map((sub) => subtopologyFigure(sub, topics)));
  }

  function topicKind(topics, name) {
    const topic = topics.get(name);
    return topic ? topic.kind : "external";
  }

  function subtopologyFigure(sub, topics) {
    const layout = layoutSubtopology(sub, topics);
    // The box's title says it; the caption names the graph for assistive technology.
    const caption = el("figcaption", { id: `ops-sub-${sub.id}-caption`, class: "visually-hidden" }, `Sub-topology ${sub.id}, ${subtopologyTasks(sub)}`);
    const scroll = el("div", { class: "graph-scroll", tabindex: "0", role: "region", "aria-labelledby": `ops-sub-${sub.id}-caption` }, drawSubtopology(sub, layout));
    return el("figure", { class: "topology", "data-subtopology": sub.id }, caption, scroll, textAlternative(sub, layout));
  }

  function subtopologyTasks(sub) {
    const n = sub.partitions;
    return `${n} partition${n === 1 ? "" : "s"}, so ${n} task${n === 1 ? "" : "s"} (${sub.id}_0${n > 1 ? ` … ${sub.id}_${n - 1}` : ""})`;
  }

  function layoutSubtopology(sub, topics) {
    const nodes = new Map(sub.nodes.map((n) => [n.name, { ...n, parents: [], children: (n.children || []).slice(), topics: n.topics || [], stores: n.stores || [] }]));
    for (const n of nodes.values()) for (const child of n.children) if (nodes.has(child)) nodes.get(child).parents.push(n.name);
    // Depth: the longest path from a node with no parents (a source).
    const depth = new Map();
    const visiting = new Set();
    const depthOf = (name) => {
      if (depth.has(name)) return depth.get(name);
      if (visiting.has(name)) return 0;
      visiting.add(name);
      const n = nodes.get(name);
      const d = n.parents.length ? 1 + Math.max(...n.parents.map(depthOf)) : 0;
      visiting.delete(name);
      depth.set(name, d);
      return d;
    };
    // Columns: 0 the topics read, 1 the sources, then processors by depth, the sinks one past
    // the deepest processor, and last the topics written.
    let deepest = 1;
    for (const n of nodes.values()) {
      n.col = n.kind === "source" ? 1 : 1 + Math.max(1, depthOf(n.name));
      if (n.kind !== "sink") deepest = Math.max(deepest, n.col);
    }
    const sinkCol = deepest + 1;
    const lastCol = sinkCol + 1;
    for (const n of nodes.values()) {
      if (n.kind === "sink") n.col = sinkCol;
      n.kindLabel = n.kind === "processor" ? (n.processor && n.processor !== n.name ? `processor · ${n.processor}` : "processor") : n.kind;
      n.w = Math.ceil(Math.max(measure(n.name, FONT_BOLD), measure(n.kindLabel.toUpperCase(), FONT_SMALL) * 1.08) + 26);
      n.h = G.nodeH;
      const side = n.kind === "source" || n.kind === "sink";
      n.pills = side ? n.topics.map((t) => ({ name: t, kind: topicKind(topics, t), signed: Boolean(topics.get(t) && topics.get(t).signed), w: Math.ceil(measure(t, FONT) + 28), h: G.pillH })) : [];
      n.rowH = Math.max(n.h, n.pills.length * (G.pillH + G.pillGap) - G.pillGap);
    }
    const columns = Array.from({ length: lastCol + 1 }, () => []);
    for (const n of nodes.values()) columns[n.col].push(n);
    const widths = columns.map((list) => Math.max(0, ...list.map((n) => n.w)));
    widths[0] = Math.max(0, ...columns[1].flatMap((n) => n.pills.map((p) => p.w)));
    widths[lastCol] = Math.max(0, ...columns[sinkCol].flatMap((n) => n.pills.map((p) => p.w)));
    const xs = [];
    let x = G.pad;
    for (let c = 0; c <= lastCol; c++) {
      xs[c] = x;
      if (widths[c] > 0) x += widths[c] + G.colGap;
    }
    let right = x - G.colGap;
    // Rows: sources in the order given; every later column near its parents, without overlaps.
    let bottom = G.top;
    for (let c = 1; c <= sinkCol; c++) {
      const list = columns[c];
      for (const n of list) {
        const centres = n.parents.map((p) => nodes.get(p)).filter((p) => p.cy !== undefined).map((p) => p.cy);
        n.want = c === 1 || centres.length === 0 ? null : centres.reduce((a, b) => a + b, 0) / centres.length;
      }
      if (c > 1) list.sort((a, b) => (a.want ?? 0) - (b.want ?? 0));
      let cursor = G.top;
      for (const n of list) {
        const rowY = n.want === null ? cursor : Math.max(cursor, n.want - n.rowH / 2);
        n.x = c === sinkCol || c === 1 || widths[c] === n.w ? xs[c] : xs[c] + (widths[c] - n.w) / 2;
        n.y = rowY + (n.rowH - n.h) / 2;
        n.cy = n.y + n.h / 2;
        cursor = rowY + n.rowH + G.rowGap;
        // Topic pills beside the node: read topics right-aligned in column 0, written ones
        // left-aligned in the last column.
        n.pills.forEach((p, i) => {
          p.y = rowY + (n.rowH - (n.pills.length * (G.pillH + G.pillGap) - G.pillGap)) / 2 + i * (G.pillH + G.pillGap);
          p.x = n.kind === "source" ? xs[0] + widths[0] - p.w : xs[lastCol];
          p.cy = p.y + p.h / 2;
        });
      }
      bottom = Math.max(bottom, cursor - G.rowGap);
    }
    // Stores: a band under the graph, each under the processors that use it, with its
    // changelog topic below it.
    const storeTop = bottom + G.bandGap;
    const stores = (sub.stores || []).map((s) => {
      const users = [...nodes.values()].filter((n) => n.stores.includes(s.name));
      const changelog = s.changelog ? { name: s.changelog, kind: topicKind(topics, s.changelog) === "external" ? "changelog" : topicKind(topics, s.changelog), w: Math.ceil(measure(s.changelog, FONT) + 28), h: G.pillH } : null;
      const w = Math.ceil(Math.max(measure(s.name, FONT_BOLD) + 30, 84));
      const slot = Math.max(w, changelog ? changelog.w : 0);
      const want = users.length ? users.reduce((a, n) => a + n.x + n.w / 2, 0) / users.length : xs[1];
      return { ...s, users, changelog, w, h: G.storeH, slot, want };
    });
    // In the order of the processors using them, the band centred under them, within the
    // graph's width when it fits.
    stores.sort((a, b) => a.want - b.want);
    const band = stores.reduce((sum, s) => sum + s.slot, 0) + G.storeGap * Math.max(0, stores.length - 1);
    const centre = stores.length ? stores.reduce((sum, s) => sum + s.want, 0) / stores.length : 0;
    let cursor = Math.max(G.pad, Math.min(centre - band / 2, right - band));
    for (const s of stores) {
      const left = cursor;
      s.x = left + (s.slot - s.w) / 2;
      s.y = storeTop;
      s.cx = left + s.slot / 2;
      if (s.changelog) {
        s.changelog.x = s.cx - s.changelog.w / 2;
        s.changelog.y = storeTop + G.storeH + G.changelogGap;
        s.changelog.cy = s.changelog.y + G.pillH / 2;
      }
      cursor = left + s.slot + G.storeGap;
      right = Math.max(right, left + s.slot);
    }
    const height = stores.length ? storeTop + G.storeH + (stores.some((s) => s.changelog) ? G.changelogGap + G.pillH : 0) + G.pad : bottom + G.pad;
    const ordered = [...nodes.values()].sort((a, b) => a.col - b.col || a.y - b.y);
    return { nodes, ordered, stores, width: Math.ceil(right + G.pad), height: Math.ceil(height) };
  }

  function curve(x1, y1, x2, y2) {
    const dx = Math.max(24, (x2 - x1) / 2);
    return `M${x1} ${y1} C${x1 + dx} ${y1}, ${x2 - dx} ${y2}, ${x2} ${y2}`;
  }

  function drop(x1, y1, x2, y2) {
    const dy = Math.max(20, (y2 - y1) / 2);
    return `M${x1} ${y1} C${x1} ${y1 + dy}, ${x2} ${y2 - dy}, ${x2} ${y2}`;
  }

  function pillShape(p, extra) {
    return svgEl("g", { class: `topic ${p.kind}`, "data-topic": p.name, "data-ends": extra },
      svgEl("title", {}, `${p.name} (${p.kind} topic${p.signed ? ", signed" : ""})`),
      svgEl("rect", { class: `topic-shape ${p.kind}`, x: p.x, y: p.y, width: p.w, height: p.h, rx: p.h / 2 }),
      svgEl("text", { x: p.x + p.w / 2, y: p.y + p.h / 2, "text-anchor": "middle", "dominant-baseline": "central" }, p.name));
  }

  function drawSubtopology(sub, layout) {
    const { nodes, stores, width, height } = layout;
    const marker = `ops-arrow-${sub.id}`;
    const edges = [];
    const shapes = [];
    const edge = (d, className, ends, arrow) => edges.push(svgEl("path", { class: `edge ${className || ""}`.trim(), d, "data-ends": ends, "marker-end": arrow === false ? null : `url(#${marker})` }));
    for (const n of nodes.values()) {
      for (const child of n.children) {
        const c = nodes.get(child);
        if (c) edge(curve(n.x + n.w, n.cy, c.x - 2, c.cy), "flow", `${n.name} ${c.name}`);
      }
      for (const p of n.pills) {
        if (n.kind === "source") edge(curve(p.x + p.w, p.cy, n.x - 2, n.cy), "flow", n.name);
        else edge(curve(n.x + n.w, n.cy, p.x - 2, p.cy), "flow", n.name);
        shapes.push(pillShape(p, n.name));
      }
    }
    for (const s of stores) {
      for (const n of s.users) edge(drop(n.x + n.w / 2, n.y + n.h, s.cx, s.y), "store-link", `${n.name} store:${s.name}`, false);
      if (s.changelog) {
        edge(`M${s.cx} ${s.y + s.h} L${s.cx} ${s.changelog.y - 2}`, "changelog-link", `store:${s.name}`);
        shapes.push(pillShape(s.changelog, `store:${s.name}`));
      }
      const ry = 6;
      shapes.push(svgEl("g", { class: "store", "data-store": s.name, "data-node": `store:${s.name}` },
        svgEl("title", {}, `state store ${s.name}${s.changelog ? `, changelog ${s.changelog.name}` : ", no changelog"}; used by ${s.users.map((u) => u.name).join(", ") || "no processor"}`),
        svgEl("path", { class: "store-shape", d: `M${s.x} ${s.y + ry} A${s.w / 2} ${ry} 0 0 1 ${s.x + s.w} ${s.y + ry} V${s.y + s.h - ry} A${s.w / 2} ${ry} 0 0 1 ${s.x} ${s.y + s.h - ry} Z` }),
        svgEl("path", { class: "store-rim", d: `M${s.x} ${s.y + ry} A${s.w / 2} ${ry} 0 0 0 ${s.x + s.w} ${s.y + ry}` }),
        svgEl("text", { class: "store-name", x: s.x + s.w / 2, y: s.y + s.h / 2 + 4, "text-anchor": "middle", "dominant-baseline": "central" }, s.name)));
    }
    for (const n of nodes.values()) {
      shapes.push(svgEl("g", { class: `node ${n.kind}`, "data-node": n.name },
        svgEl("title", {}, `${n.kindLabel} ${n.name}`),
        svgEl("rect", { class: `node-shape ${n.kind}`, x: n.x, y: n.y, width: n.w, height: n.h, rx: 6 }),
        svgEl("text", { class: "node-kind", x: n.x + 12, y: n.y + 13, "dominant-baseline": "central" }, n.kindLabel.toUpperCase()),
        svgEl("text", { class: "node-name", x: n.x + 12, y: n.y + 28, "dominant-baseline": "central" }, n.name)));
    }
    const graph = svgEl("svg", {
      class: "topology-graph", width, height, viewBox: `0 0 ${width} ${height}`, role: "img",
      "aria-label": `Graph of sub-topology ${sub.id}: ${nodes.size} nodes and ${stores.length} state stores; the list below describes it as text`,
    },
    svgEl("defs", {}, svgEl("marker", { id: marker, viewBox: "0 0 10 10", refX: "9", refY: "5", markerWidth: "7", markerHeight: "7", orient: "auto-start-reverse" },
      svgEl("path", { class: "arrowhead", d: "M0 0 L10 5 L0 10 z" }))),
    svgEl("g", { class: "subtopology", "data-subtopology": sub.id },
      svgEl("rect", { class: "subtopology-box", x: 1, y: 1, width: width - 2, height: height - 2, rx: 10 }),
      svgEl("text", { class: "subtopology-title", x: G.pad, y: 30 }, `Sub-topology ${sub.id}`,
        svgEl("tspan", { class: "subtopology-tasks", dx: "8" }, subtopologyTasks(sub))),
      svgEl("g", { class: "edges" }, edges),
      svgEl("g", { class: "shapes" }, shapes)));
    // Hovering a node, store or topic lights its edges and neighbours.
    graph.addEventListener("pointerover", (event) => {
      const target = event.target.closest("[data-node], [data-topic]");
      const name = target && (target.dataset.node || target.dataset.ends);
      graph.classList.toggle("tracing", Boolean(name));
      if (!name) return;
      // The hovered shape, its edges, and the shapes at their other ends.
      const names = new Set(name.split(" "));
      const lit = new Set(names);
      graph.querySelectorAll(".edge").forEach((e) => {
        const ends = e.dataset.ends.split(" ");
        const on = ends.some((end) => names.has(end));
        e.classList.toggle("lit", on);
        if (on) ends.forEach((end) => lit.add(end));
      });
      graph.querySelectorAll("[data-node], [data-topic]").forEach((shape) => {
        const id = shape.dataset.node;
        shape.classList.toggle("lit", id ? lit.has(id) : (shape.dataset.ends || "").split(" ").some((end) => names.has(end)));
      });
    });
    graph.addEventListener("pointerleave", () => graph.classList.remove("tracing"));
    return graph;
  }

  function textAlternative(sub, layout) {
    const kinds = (pills) => pills.map((p, i) => [i ? ", " : "", code(p.name), p.kind === "external" ? "" : ` (${p.kind})`]);
    const items = layout.ordered.map((n) => el("li", { "data-node": n.name },
      el("strong", {}, n.name), ` (${n.kindLabel})`,
      n.kind === "source" && n.pills.length ? [": reads ", kinds(n.pills)] : null,
      n.kind === "sink" && n.pills.length ? [": writes ", kinds(n.pills)] : null,
      n.stores.length ? [`; store${n.stores.length === 1 ? "" : "s"} `, n.stores.join(", ")] : null,
      n.children.length ? ["; then ", n.children.join(", ")] : null, "."));
    const stores = layout.stores.map((s) => el("li", {}, el("strong", {}, s.name), s.changelog ? [": changelog ", code(s.changelog.name)] : ": no changelog", "."));
    return el("details", { class: "text-alt" },
      el("summary", {}, `Sub-topology ${sub.id} as text`),
      el("h4", {}, "Nodes"), el("ul", {}, items),
      stores.length ? [el("h4", {}, "State stores"), el("ul", {}, stores)] : null);
  }

  // ---------------------------------------------------------------- topics

  const topicsState = { list: [], gen: 0, detailGen: 0, recordsGen: 0, name: null };

  function showTopics(name) {
    topicsState.name = name;
    $("#ops-topics-list").hidden = Boolean(name);
    $("#ops-topic-detail").hidden = !name;
    if (name) loadTopic(name);
    else loadTopicList();
  }

  async function loadTopicList() {
    const gen = ++topicsState.gen;
    const answer = await opsApi("GET", "/v1/ops/topics");
    if (gen !== topicsState.gen || shownView !== "topics") return;
    if (!answer.ok) {
      if (answer.status !== 401) $("#ops-topics-table tbody").replaceChildren(message(problemText(answer, "the topics"), 4, "problem"));
      return;
    }
    topicsState.list = answer.data.topics || [];
    const records = topicsState.list.reduce((sum, t) => sum + (Number(t.records) || 0), 0);
    $("#ops-topics-summary").textContent = `${topicsState.list.length} topics · ${number(records)} records`;
    renderTopicList();
  }

  function renderTopicList() {
    const filter = $("#ops-topics-filter").value.trim().toLowerCase();
    const shown = topicsState.list.filter((t) => !filter || t.name.toLowerCase().includes(filter));
    const body = $("#ops-topics-table tbody");
    body.replaceChildren(...shown.map((t) => el("tr", { "data-topic": t.name },
      cell(el("a", { href: `#/ops/topics/${encodeURIComponent(t.name)}` }, t.name)),
      cell(pill(t.kind, tone(t.kind))),
      cell(number(t.partitions), { class: "num" }),
      cell(number(t.records), { class: "num" }))));
    if (shown.length === 0) body.append(message(filter ? "No topic has this in its name." : "No topics yet.", 4));
  }

  $("#ops-topics-filter").addEventListener("input", renderTopicList);

  async function loadTopic(name) {
    const gen = ++topicsState.detailGen;
    const detail = $("#ops-topic-detail");
    const fresh = detail.dataset.topic !== name;
    const select = $("#ops-records-partition");
    if (fresh) {
      detail.dataset.topic = name;
      $("#ops-topic-title").textContent = name;
      $("#ops-topic-kind").replaceChildren();
      $("#ops-topic-partitions tbody").replaceChildren(message("Loading…", 6));
      $("#ops-topic-configs tbody").replaceChildren(message("Loading…", 3));
      $("#ops-topic-records").replaceChildren(el("p", { class: "empty-state" }, "Loading…"));
      $("#ops-records-summary").textContent = "";
      select.replaceChildren(new Option("All", ""));
    }
    $("#ops-topic-problem").hidden = true;
    const answer = await opsApi("GET", `/v1/ops/topics/${encodeURIComponent(name)}`);
    if (gen !== topicsState.detailGen || shownView !== "topics") return;
    if (!answer.ok) {
      if (answer.status === 401) return;
      $("#ops-topic-problem").hidden = false;
      $("#ops-topic-problem").textContent = answer.status === 404 ? `There is no topic ${name}.` : problemText(answer, `topic ${name}`);
      $("#ops-topic-partitions tbody").replaceChildren();
      $("#ops-topic-configs tbody").replaceChildren();
      $("#ops-topic-records").replaceChildren();
      return;
    }
    const topic = answer.data;
    $("#ops-topic-kind").replaceChildren(pill(topic.kind, tone(topic.kind)));
    $("#ops-topic-partitions tbody").replaceChildren(...topic.partitions.map((p) => el("tr", { "data-partition": p.partition },
      cell(String(p.partition), { class: "num" }),
      cell(p.leader === null || p.leader === undefined || p.leader < 0 ? none("none") : String(p.leader), { class: "num" }),
      cell((p.replicas || []).join(", ")),
      cell(number(p.low), { class: "num" }),
      cell(number(p.high), { class: "num" }),
      cell(number(Math.max(0, p.high - p.low)), { class: "num" }))));
    const configs = (topic.configs || []).slice().sort((a, b) => Number(a.is_default) - Number(b.is_default) || a.name.localeCompare(b.name));
    $("#ops-topic-configs tbody").replaceChildren(...configs.map((c) => el("tr", { class: c.is_default ? "default" : "set", "data-config": c.name },
      cell(code(c.name)),
      cell(c.sensitive ? none("hidden (sensitive)") : c.value === null || c.value === undefined ? none("not set") : el("span", { class: "config-value" }, c.value)),
      cell(c.is_default ? el("span", { class: "hint" }, "default") : "set for this topic"))));
    if (configs.length === 0) $("#ops-topic-configs tbody").append(message("No configuration to show.", 3));
    const chosen = select.value;
    select.replaceChildren(new Option("All", ""), ...topic.partitions.map((p) => new Option(String(p.partition), String(p.partition))));
    select.value = [...select.options].some((o) => o.value === chosen) ? chosen : "";
    if (fresh) {
      detail.focus({ preventScroll: true });
      window.scrollTo({ top: 0 });
    }
    await loadRecords(name);
  }

  async function loadRecords(name) {
    const gen = ++topicsState.recordsGen;
    const partition = $("#ops-records-partition").value;
    const box = $("#ops-topic-records");
    const refresh = $("#ops-records-refresh");
    refresh.disabled = true;
    const answer = await opsApi("GET", `/v1/ops/topics/${encodeURIComponent(name)}/records?limit=20${partition === "" ? "" : `&partition=${encodeURIComponent(partition)}`}`);
    if (gen !== topicsState.recordsGen || shownView !== "topics" || topicsState.name !== name) return;
    refresh.disabled = false;
    if (!answer.ok) {
      if (answer.status === 401) return;
      $("#ops-records-summary").textContent = "";
      box.replaceChildren(el("p", { class: "problem" }, answer.status === 403 ? `The API does not show this topic's records: ${answer.problem.detail}` : problemText(answer, "the records")));
      return;
    }
    const records = answer.data.records || [];
    const where = partition === "" ? "" : ` in partition ${partition}`;
    $("#ops-records-summary").textContent = records.length ? `${records.length} newest${where} · ${new Date().toLocaleTimeString()}` : "";
    box.replaceChildren(...records.map(recordCard));
    if (records.length === 0) box.append(el("p", { class: "empty-state" }, `No records${where} yet.`));
  }

  function recordCard(r) {
    return el("article", { class: "record", "data-partition": r.partition, "data-offset": r.offset, "aria-label": `Record at partition ${r.partition}, offset ${r.offset}` },
      el("div", { class: "record-head" },
        el("span", { class: "position" }, `partition ${r.partition} · offset ${r.offset}`),
        r.timestamp_ms === null || r.timestamp_ms === undefined ? none("no timestamp") : timeEl(r.timestamp_ms),
        el("span", {}, "key ", r.key === null || r.key === undefined ? none("none") : code(r.key)),
        formatLabel(r)),
      r.headers && r.headers.length ? el("details", { class: "record-headers" },
        el("summary", {}, `${r.headers.length} header${r.headers.length === 1 ? "" : "s"}`),
        el("dl", { class: "headers" }, r.headers.map((h) => [el("dt", {}, code(h.name)), el("dd", {}, headerValue(h.name, h.value))]))) : null,
      valueView(r));
  }

  $("#ops-records-partition").addEventListener("change", () => { if (topicsState.name) loadRecords(topicsState.name); });
  $("#ops-records-refresh").addEventListener("click", () => { if (topicsState.name) loadRecords(topicsState.name); });

  // ---------------------------------------------------------------- consumers & instances

  const live = { timer: null, gen: 0, toggles: 0, openGroups: null };
  const SPARKS = [
    { key: "records_per_s", label: "Records processed", unit: "/s", what: "records processed per second" },
    { key: "commands_per_s", label: "Commands", unit: "/s", what: "commands per second" },
    { key: "http_requests_per_s", label: "HTTP requests", unit: "/s", what: "HTTP requests per second" },
    { key: "p50_ms", label: "Latency p50", unit: " ms", what: "median command latency in milliseconds" },
    { key: "p99_ms", label: "Latency p99", unit: " ms", what: "99th percentile command latency in milliseconds" },
  ];

  function stopLive() {
    live.gen++;
    clearTimeout(live.timer);
    live.timer = null;
  }

  function showConsumers() {
    stopLive();
    const gen = live.gen;
    tick(gen);
  }

  async function tick(gen) {
    await Promise.all([loadGroups(gen), loadInstances(gen), loadMetrics(gen)]);
    if (gen !== live.gen || shownView !== "consumers" || !operator.get()) return;
    $("#ops-live").textContent = `Live, every 2 s · updated ${new Date().toLocaleTimeString()}`;
    live.timer = setTimeout(() => tick(gen), LIVE_MS);
  }

  async function loadGroups(gen) {
    const answer = await opsApi("GET", "/v1/ops/groups");
    if (gen !== live.gen) return;
    const body = $("#ops-groups tbody");
    const partitions = $("#ops-group-partitions");
    if (!answer.ok) {
      if (answer.status !== 401) body.replaceChildren(message(problemText(answer, "the consumer groups"), 4, "problem"));
      return;
    }
    const groups = answer.data.groups || [];
    body.replaceChildren(...groups.map((g) => el("tr", { "data-group": g.group },
      cell(code(g.group)),
      cell(pill(g.state, tone(g.state))),
      cell(number(g.members), { class: "num" }),
      cell(number(g.lag), { class: `num lag${g.lag > 0 ? " behind" : ""}` }))));
    if (groups.length === 0) body.append(message("No consumer groups yet.", 4));
    // Per-partition lag, one disclosure per group; which are open survives the refresh.
    if (live.openGroups === null) live.openGroups = new Set(groups.filter((g) => g.group === "sluice").map((g) => g.group));
    const focused = document.activeElement && document.activeElement.closest && document.activeElement.closest("#ops-group-partitions details");
    const focusedGroup = focused ? focused.dataset.group : null;
    partitions.replaceChildren(...groups.map((g) => {
      const rows = (g.partitions || []).slice().sort((a, b) => a.topic.localeCompare(b.topic) || a.partition - b.partition);
      const details = el("details", { class: "group-partitions", "data-group": g.group, open: live.openGroups.has(g.group) },
        el("summary", {}, `Partitions of ${g.group}`, el("span", { class: "hint" }, ` · ${rows.length} partition${rows.length === 1 ? "" : "s"}, lag ${number(g.lag)}`)),
        rows.length ? el("div", { class: "table-wrap" }, el("table", { class: "lag-table" },
          el("thead", {}, el("tr", {}, ["Topic", "Partition", "Committed", "End", "Lag"].map((h, i) => el("th", { scope: "col", class: i ? "num" : null }, h)))),
          el("tbody", {}, rows.map((p) => el("tr", { "data-topic": p.topic, "data-partition": p.partition },
            cell(breakable(p.topic)), cell(String(p.partition), { class: "num" }),
            cell(p.committed === null || p.committed === undefined ? none("none") : number(p.committed), { class: "num" }),
            cell(number(p.end), { class: "num" }),
            cell(number(p.lag), { class: `num${p.lag > 0 ? " behind" : ""}` })))))) : el("p", { class: "empty-state" }, "No committed partitions."));
      details.addEventListener("toggle", () => { if (details.open) live.openGroups.add(g.group); else live.openGroups.delete(g.group); });
      return details;
    }));
    if (focusedGroup) {
      const again = partitions.querySelector(`details[data-group="${CSS.escape(focusedGroup)}"] summary`);
      if (again) again.focus();
    }
  }

  function setProcessing(paused) {
    const state = $("#ops-processing");
    const button = $("#ops-processing-toggle");
    if (paused === null || paused === undefined) {
      state.textContent = "no processors in this process";
      state.dataset.tone = "muted";
      button.textContent = "Pause processing";
      button.disabled = true;
      button.title = "This API runs without processors: pause them where they run";
      delete button.dataset.action;
      return;
    }
    state.textContent = paused ? "Paused" : "Running";
    state.dataset.tone = paused ? "warn" : "good";
    button.textContent = paused ? "Resume processing" : "Pause processing";
    button.dataset.action = paused ? "resume" : "pause";
    button.className = paused ? "" : "secondary";
    button.disabled = false;
    button.title = "";
  }

  async function loadInstances(gen) {
    const toggles = live.toggles;
    const answer = await opsApi("GET", "/v1/ops/instances");
    if (gen !== live.gen) return;
    const body = $("#ops-instances tbody");
    if (!answer.ok) {
      if (answer.status !== 401) body.replaceChildren(message(problemText(answer, "the instances"), 7, "problem"));
      return;
    }
    // A toggle made while this was on its way wins over what it says.
    if (toggles === live.toggles) setProcessing(answer.data.paused);
    const instances = answer.data.instances || [];
    const tasks = (list) => (list && list.length ? el("span", { class: "tasks" }, list.map((t) => code(t))) : none("none"));
    // data-label: the column's name, shown beside each value when the table is cards (phones).
    body.replaceChildren(...instances.map((i) => el("tr", { "data-instance": i.instance },
      cell(code(i.instance), { "data-label": "Instance" }),
      cell(i.application_server ? code(i.application_server) : none("none"), { "data-label": "Serves queries at" }),
      cell(i.updated_at_ms ? timeEl(i.updated_at_ms, ago(i.updated_at_ms)) : none(), { "data-label": "Last seen" }),
      cell([i.stale ? pill("stale", "warn") : pill("live", "good"), i.paused ? [" ", pill("paused", "warn")] : null], { "data-label": "State" }),
      cell(tasks(i.active_tasks), { "data-label": "Active tasks" }),
      cell(tasks(i.standby_tasks), { "data-label": "Standby tasks" }),
      cell(i.restoring && i.restoring.length
        ? el("ul", { class: "restoring" }, i.restoring.map((r) => el("li", {}, code(r.task), ` ${number(r.remaining)} record${r.remaining === 1 ? "" : "s"} to go`)))
        : none("none"), { "data-label": "Restoring" }))));
    if (instances.length === 0) body.append(message("No instances have reported yet.", 7));
  }

  function formatValue(value, unit) {
    if (value === null || value === undefined || Number.isNaN(value)) return "–";
    const shown = Math.abs(value) < 10 && value !== 0 ? value.toFixed(1) : Math.round(value).toLocaleString();
    return `${shown}${unit}`;
  }

  async function loadMetrics(gen) {
    const answer = await opsApi("GET", "/v1/ops/metrics");
    if (gen !== live.gen) return;
    const box = $("#ops-sparks");
    if (!answer.ok) {
      if (answer.status !== 401) box.replaceChildren(el("p", { class: "problem" }, problemText(answer, "the metrics")));
      return;
    }
    const samples = answer.data.samples || [];
    const span = samples.length > 1 ? Math.round((samples[samples.length - 1].at_ms - samples[0].at_ms) / 60000) : 0;
    if (!box.querySelector(".spark")) box.replaceChildren(...SPARKS.map(sparkCard));
    for (const spec of SPARKS) updateSpark(box.querySelector(`.spark[data-metric="${spec.key}"]`), spec, samples, span);
  }

  function sparkCard(spec) {
    return el("figure", { class: "spark", "data-metric": spec.key },
      el("figcaption", {}, el("span", { class: "spark-label" }, spec.label), el("span", { class: "spark-value" }, "–")),
      svgEl("svg", { viewBox: "0 0 200 40", preserveAspectRatio: "none", role: "img", "aria-label": spec.label },
        svgEl("path", { class: "spark-area", d: "" }),
        svgEl("polyline", { class: "spark-line", points: "" })),
      el("p", { class: "spark-range hint" }, "collecting…"));
  }

  function updateSpark(card, spec, samples, minutes) {
    const values = samples.map((s) => (typeof s[spec.key] === "number" ? s[spec.key] : null));
    const known = values.filter((v) => v !== null);
    const current = values.length ? values[values.length - 1] : null;
    const max = Math.max(1, ...known);
    const width = 200, height = 40, inset = 2;
    const step = values.length > 1 ? width / (values.length - 1) : width;
    const points = [];
    values.forEach((v, i) => { if (v !== null) points.push([+(i * step).toFixed(1), +(height - inset - (v / max) * (height - 2 * inset)).toFixed(1)]); });
    card.querySelector(".spark-line").setAttribute("points", points.map((p) => p.join(",")).join(" "));
    card.querySelector(".spark-area").setAttribute("d", points.length > 1 ? `M${points[0][0]} ${height} ${points.map((p) => `L${p[0]} ${p[1]}`).join(" ")} L${points[points.length - 1][0]} ${height} Z` : "");
    const shown = formatValue(current, spec.unit);
    card.querySelector(".spark-value").textContent = shown;
    card.querySelector("svg").setAttribute("aria-label", `${spec.label}: ${spec.what}, now ${shown}${known.length ? `, at most ${formatValue(Math.max(...known), spec.unit)}` : ""}`);
    card.querySelector(".spark-range").textContent = known.length
      ? `max ${formatValue(Math.max(...known), spec.unit)} · last ${minutes > 0 ? `${minutes} min` : `${samples.length} samples`}`
      : (samples.length ? "no data in this window" : "collecting…");
  }

  $("#ops-processing-toggle").addEventListener("click", async (event) => {
    const button = event.currentTarget;
    const action = button.dataset.action;
    if (!action) return;
    const error = $("#ops-processing-error");
    error.textContent = "";
    button.disabled = true;
    live.toggles++;
    const answer = await opsApi("POST", `/v1/ops/processing/${action}`);
    live.toggles++;
    if (!answer.ok) {
      button.disabled = false;
      if (answer.status === 401) return;
      error.textContent = answer.problem.type === "no-local-processors"
        ? "This API process runs no processors: pause them where they run."
        : `Could not ${action} processing: ${answer.problem.detail}`;
      return;
    }
    setProcessing(answer.data.paused);
    button.focus();
  });

  window.sluiceOps = {
    signedIn: () => Boolean(operator.get()),
    owns,
    resolve,
    show,
  };
})();
