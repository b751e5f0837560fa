// The Sluice web console: plain JavaScript over the HTTP API (same origin, no dependencies).
// Tokens live in sessionStorage; every form validates inline and shows the API's problem
// details next to the field they concern.
"use strict";

const PAGE_SIZE = 10;
const PAYMENTS_PAGE_SIZE = 20;
const session = {
  get() { return JSON.parse(sessionStorage.getItem("sluice.session") || "null"); },
  set(value) { sessionStorage.setItem("sluice.session", JSON.stringify(value)); },
  clear() { sessionStorage.removeItem("sluice.session"); },
};
let page = 0;
let paymentsPage = 0;

const $ = (selector) => document.querySelector(selector);
const when = (ms) => new Date(ms).toLocaleString([], { dateStyle: "short", timeStyle: "short" });
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

// ------------------------------------------------------------------ the API

async function api(method, path, body, retried, extraHeaders) {
  const headers = { ...(extraHeaders || {}) };
  const current = session.get();
  if (current) headers.authorization = `Bearer ${current.access_token}`;
  if (body !== undefined) headers["content-type"] = "application/json";
  const response = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  const text = await response.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch { data = { detail: text }; }
  const problem = response.ok ? null : { type: (data && data.type || "").split("/").pop(), detail: data && data.detail || response.statusText, status: response.status };
  if (problem && problem.type === "token-expired" && current && !retried && await refresh()) {
    return api(method, path, body, true, extraHeaders);
  }
  if (problem && response.status === 401 && current && path !== "/v1/auth/logout") {
    session.clear();
    notices.stop();
    flash("Your session ended; please log in again.");
    go("#/login");
  }
  return { ok: response.ok, status: response.status, data, problem };
}

async function refresh() {
  const current = session.get();
  const response = await fetch("/v1/auth/refresh", {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ refresh_token: current.refresh_token }),
  });
  if (!response.ok) return false;
  session.set(await response.json());
  return true;
}

// Money commands carry an Idempotency-Key: a new one for each new command, the same one when
// the same form is sent again with the same fields before an answer came (a retry after a
// timeout or a dropped connection), so a retry never pays twice.
async function sendMoney(form, path, body) {
  const fingerprint = JSON.stringify([path, body]);
  if (form.dataset.fingerprint !== fingerprint || !form.dataset.idempotencyKey) {
    form.dataset.fingerprint = fingerprint;
    form.dataset.idempotencyKey = crypto.randomUUID();
  }
  const answer = await api("POST", path, body, false, { "idempotency-key": form.dataset.idempotencyKey });
  // An answer (accepted or refused) ends this command: the next send is a new one.
  if (answer.status !== 0 && answer.status < 500) delete form.dataset.idempotencyKey;
  return answer;
}

// Polls a command's status URL until it is settled or rejected.
async function outcome(statusUrl, onUpdate) {
  for (let attempt = 0; attempt < 150; attempt++) {
    const answer = await api("GET", statusUrl);
    if (answer.ok) {
      onUpdate(answer.data);
      if (answer.data.status === "settled" || answer.data.status === "rejected") return answer.data;
    }
    await sleep(400);
  }
  return { status: "unknown", detail: "no outcome yet; check again later" };
}

// ------------------------------------------------------------------ forms

const rules = {
  email: (v) => /^[^\s@]+@[^\s@]+\.[^\s@]+$/.test(v) ? "" : "Enter an email address like name@example.com.",
  password: (v) => v.length >= 10 && v.length <= 128 ? "" : "Use 10 to 128 characters.",
  required: (v) => v.trim() ? "" : "This is required.",
  amount: (v) => !/^\d+(\.\d{1,2})?$/.test(v.trim()) ? "Enter an amount like 12.50 (at most two decimal places)."
    : Number(v) <= 0 ? "The amount must be more than zero." : "",
  optionalDate: (v) => !v || /^\d{4}-\d{2}-\d{2}$/.test(v) ? "" : "Enter a date.",
  date: (v) => /^\d{4}-\d{2}-\d{2}$/.test(v) ? "" : "Enter a date.",
};

// Which field each problem type belongs to, per form.
const problemFields = {
  "invalid-email": "email", "email-taken": "email", "weak-password": "password",
  "invalid-credentials": "password", "invalid-amount": "amount", "unsupported-currency": "amount",
  "invalid-payee": "payee_email", "invalid-reference": "reference", "invalid-identifier": "value",
  "invalid-profile": "date_of_birth", "invalid-date": "date_of_birth", "identity_mismatch": "full_name",
  "underage": "date_of_birth", "kyc-required": "identifier", "payee-not-found": "payee_email",
  "invalid-reset-token": "token", "reset-token-used": "token", "reset-token-expired": "token",
};

function setError(form, name, message) {
  const input = form.elements[name];
  // The first described-by element is the field's error message.
  const id = input && input.getAttribute && (input.getAttribute("aria-describedby") || "").split(" ")[0];
  if (input && input.setAttribute) input.setAttribute("aria-invalid", message ? "true" : "false");
  if (id) document.getElementById(id).textContent = message;
}

function validate(form, checks) {
  let valid = true;
  for (const [name, rule] of Object.entries(checks)) {
    const message = rules[rule](form.elements[name].value);
    setError(form, name, message);
    if (message && valid) form.elements[name].focus();
    valid = valid && !message;
  }
  return valid;
}

function showProblem(form, problem) {
  const field = problemFields[problem.type];
  const formError = document.getElementById(`${form.id.replace("-form", "")}-form-error`);
  if (field && form.elements[field]) {
    setError(form, field, problem.detail);
    form.elements[field].focus();
    formError.textContent = "";
  } else {
    formError.textContent = problem.detail;
  }
}

function clearErrors(form) {
  form.querySelectorAll(".error").forEach((p) => { p.textContent = ""; });
  form.querySelectorAll("[aria-invalid]").forEach((i) => i.setAttribute("aria-invalid", "false"));
}

function onSubmit(id, handler) {
  const form = document.getElementById(id);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    clearErrors(form);
    const button = form.querySelector("button[type=submit]");
    button.disabled = true;
    try { await handler(form); } finally { button.disabled = false; }
  });
  // Inline validation: a field is checked when the user leaves it, and a field marked invalid
  // is re-checked as they type, so its message goes as soon as it is right (and the layout
  // does not shift under the next click).
  form.querySelectorAll("input[required]").forEach((input) => {
    const check = () => {
      const rule = input.dataset.rule;
      if (rule && input.value) setError(form, input.name, rules[rule](input.value));
    };
    input.addEventListener("blur", check);
    input.addEventListener("input", () => { if (input.getAttribute("aria-invalid") === "true") check(); });
  });
}

// ------------------------------------------------------------------ views

function flash(message) { $("#flash").textContent = message; }

function go(hash) {
  if (location.hash === hash) route(); else location.hash = hash;
}

function route() {
  const signedIn = Boolean(session.get());
  // The operator console (ops.js) owns #/operator and #/ops/...; its token is kept apart.
  const ops = window.sluiceOps;
  const operator = Boolean(ops && ops.signedIn());
  let view = (location.hash || "").replace("#/", "") || (signedIn ? "account" : "login");
  let opsView = null;
  if (ops && ops.owns(view)) {
    opsView = ops.resolve(view);
    view = opsView.section;
  } else {
    const privateViews = ["account", "profile", "payments", "notifications"];
    if (!document.getElementById(`view-${view}`) || view.startsWith("ops") || view === "operator") view = signedIn ? "account" : "login";
    if (!signedIn && privateViews.includes(view)) view = "login";
    if (signedIn && (view === "login" || view === "signup" || view === "reset")) view = "account";
  }
  document.querySelectorAll("[data-view]").forEach((s) => { s.hidden = s.id !== `view-${view}`; });
  const shown = { "signed-in": signedIn, anonymous: !signedIn && !operator, operator, "not-operator": !operator };
  document.querySelectorAll("[data-when]").forEach((e) => { e.hidden = !shown[e.dataset.when]; });
  document.querySelector("main").classList.toggle("wide", Boolean(opsView) && view !== "operator");
  document.title = `Sluice · ${opsView ? opsView.title : view}`;
  const current = opsView ? opsView.link : `#/${view}`;
  document.querySelectorAll("nav a").forEach((a) => {
    if (a.getAttribute("href") === current) a.setAttribute("aria-current", "page"); else a.removeAttribute("aria-current");
  });
  if (ops) ops.show(opsView);
  if (signedIn) notices.start();
  if (view === "account") loadAccount();
  if (view === "profile") loadProfile();
  if (view === "payments") loadPayments();
  if (view === "notifications") loadNotifications();
}

async function loadAccount() {
  const account = await api("GET", "/v1/accounts/me");
  if (account.ok) {
    $("#balance").textContent = `${account.data.balance} ${account.data.currency}`;
    const others = (account.data.balances || []).filter((b) => b.currency !== account.data.currency);
    $("#other-balances").textContent = others.length ? `and ${others.map((b) => `${b.balance} ${b.currency}`).join(", ")}` : "";
    const select = $("#transfer-currency");
    const chosen = select.value;
    select.replaceChildren(...(account.data.balances || [{ currency: account.data.currency }]).map((b) => new Option(b.currency, b.currency)));
    if ([...select.options].some((o) => o.value === chosen)) select.value = chosen;
    $("#account-status").textContent = account.data.status.replace("_", " ");
    $("#kyc-level").textContent = account.data.kyc_level;
  }
  await loadTransactions();
}

async function loadTransactions() {
  const answer = await api("GET", `/v1/accounts/me/transactions?skip=${page * PAGE_SIZE}&limit=${PAGE_SIZE}`);
  if (!answer.ok) return;
  const body = $("#transactions tbody");
  body.replaceChildren(...answer.data.transactions.map((t) => {
    const row = document.createElement("tr");
    const sign = t.direction === "debit" ? "−" : "+";
    for (const text of [when(t.timestamp_ms), t.kind.toLowerCase(), `${sign}${t.amount} ${t.currency || ""}`.trim(), t.counterparty_name || t.counterparty || "", t.reversal_reason ? `returned: ${t.reversal_reason}` : (t.reference || ""), t.balance_after]) {
      const cell = document.createElement("td");
      cell.textContent = text;
      row.append(cell);
    }
    return row;
  }));
  if (answer.data.transactions.length === 0) {
    const row = document.createElement("tr");
    const cell = document.createElement("td");
    cell.colSpan = 6;
    cell.textContent = page === 0 ? "No transactions yet." : "No more transactions.";
    row.append(cell);
    body.append(row);
  }
  $("#newer").disabled = page === 0;
  $("#older").disabled = answer.data.next_skip === null;
  $("#page-label").textContent = `Page ${page + 1}`;
}

async function loadProfile() {
  const me = await api("GET", "/v1/auth/me");
  if (!me.ok) return;
  $("#profile-email").textContent = me.data.email;
  $("#profile-user-id").textContent = me.data.user_id;
  $("#profile-identifiers").textContent = me.data.identifiers.join(", ") || "none yet";
  // One identity per account: the form goes once one is verified.
  $("#verify-form").hidden = me.data.identifiers.length > 0;
  if (me.data.full_name) $("#profile-name").value = me.data.full_name;
  if (me.data.date_of_birth) $("#profile-dob").value = me.data.date_of_birth;
}

// ------------------------------------------------------------------ payments

const paymentStatusNames = { pending: "pending", completed: "completed", failed: "failed", partially_refunded: "partly refunded", refunded: "refunded" };

async function loadPayments() {
  const body = $("#payments tbody");
  const filters = new URLSearchParams({ skip: paymentsPage * PAYMENTS_PAGE_SIZE, limit: PAYMENTS_PAGE_SIZE });
  if ($("#payments-status").value) filters.set("status", $("#payments-status").value);
  if ($("#payments-direction").value) filters.set("direction", $("#payments-direction").value);
  const answer = await api("GET", `/v1/payments?${filters}`);
  if (!answer.ok) {
    body.replaceChildren(row([answer.problem ? `Could not load payments: ${answer.problem.detail}` : "Could not load payments."], 6));
    return;
  }
  const payments = answer.data.payments;
  body.replaceChildren(...payments.map((p) => {
    const sign = p.direction === "outgoing" ? "−" : "+";
    const what = `${p.kind.toLowerCase()} ${p.direction === "outgoing" ? "sent" : "received"}${p.reference ? ` · ${p.reference}` : ""}`;
    const tr = row([when(p.created_at_ms), what, p.counterparty_name || p.counterparty || "", `${sign}${p.amount} ${p.currency}`]);
    const status = document.createElement("td");
    status.dataset.payment = p.status === "partially_refunded" || p.status === "refunded" ? "completed" : p.status;
    status.textContent = paymentStatusNames[p.status] || p.status;
    if (p.reason) status.title = p.detail || p.reason;
    if (p.status === "failed" && p.reason) status.textContent += `: ${p.reason.replaceAll("_", " ")}`;
    if (Number(p.refunded_amount) > 0) status.textContent += ` (${p.refunded_amount} back)`;
    const action = document.createElement("td");
    const refundable = p.direction === "incoming" && p.kind === "TRANSFER" && ["completed", "partially_refunded"].includes(p.status);
    if (refundable) {
      const button = document.createElement("button");
      button.type = "button";
      button.className = "secondary";
      button.textContent = "Refund";
      button.setAttribute("aria-label", `Refund ${p.amount} ${p.currency} from ${p.counterparty_name || p.counterparty}`);
      button.addEventListener("click", () => openRefund(p));
      action.append(button);
    }
    tr.append(status, action);
    return tr;
  }));
  if (payments.length === 0) body.append(row([paymentsPage === 0 ? "No payments yet." : "No more payments."], 6));
  $("#payments-newer").disabled = paymentsPage === 0;
  $("#payments-older").disabled = answer.data.next_skip === null;
  $("#payments-page-label").textContent = `Page ${paymentsPage + 1}`;
}

function row(texts, span) {
  const tr = document.createElement("tr");
  for (const text of texts) {
    const cell = document.createElement("td");
    cell.textContent = text;
    if (span) cell.colSpan = span;
    tr.append(cell);
  }
  return tr;
}

function openRefund(payment) {
  const form = $("#refund-form");
  form.hidden = false;
  form.dataset.paymentId = payment.payment_id;
  form.dataset.currency = payment.currency;
  const left = (Number(payment.amount) - Number(payment.refunded_amount)).toFixed(2);
  $("#refund-what").textContent = `${payment.amount} ${payment.currency} from ${payment.counterparty_name || payment.counterparty}; up to ${left} ${payment.currency} can go back.`;
  form.amount.value = left;
  form.amount.focus();
}

// ------------------------------------------------------------------ notifications

// The live stream: server-sent events read with fetch (EventSource cannot send the bearer
// token), resumed after the last event seen when the connection drops.
const notices = {
  controller: null,
  lastId: null,
  unread: 0,
  start() {
    if (this.controller) return;
    this.controller = new AbortController();
    this.follow(this.controller.signal);
    refreshBadge();
  },
  stop() {
    if (this.controller) this.controller.abort();
    this.controller = null;
    this.lastId = null;
    setBadge(0);
  },
  async follow(signal) {
    try {
      await this.read(signal);
    } finally {
      // Ended (logged out, or the session is gone): the next route after a login starts anew.
      if (this.controller && this.controller.signal === signal) this.controller = null;
    }
  },
  async read(signal) {
    while (!signal.aborted) {
      try {
        const current = session.get();
        if (!current) return;
        const headers = { authorization: `Bearer ${current.access_token}` };
        if (this.lastId !== null) headers["last-event-id"] = String(this.lastId);
        const response = await fetch("/v1/notifications/stream", { headers, signal });
        if (response.status === 401) { if (await refresh()) continue; return; }
        if (!response.ok) throw new Error(`stream answered ${response.status}`);
        const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
        let buffer = "";
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          buffer += value;
          let end;
          while ((end = buffer.indexOf("\n\n")) >= 0) {
            const block = buffer.slice(0, end);
            buffer = buffer.slice(end + 2);
            const data = block.split("\n").filter((l) => l.startsWith("data: ")).map((l) => l.slice(6)).join("\n");
            if (block.split("\n").includes("event: notification") && data) this.received(JSON.parse(data));
          }
        }
      } catch (error) {
        if (signal.aborted) return;
      }
      await sleep(2000);
    }
  },
  received(notification) {
    this.lastId = notification.sequence;
    setBadge(this.unread + 1);
    if (!$("#view-notifications").hidden) loadNotifications();
    if (!$("#view-account").hidden) loadAccount();
    if (!$("#view-payments").hidden) loadPayments();
  },
};

function setBadge(count) {
  notices.unread = count;
  const badge = $("#unread-badge");
  badge.hidden = count === 0;
  badge.textContent = String(count);
  $("#notifications-link").setAttribute("aria-label", count ? `Notifications, ${count} unread` : "Notifications");
}

async function refreshBadge() {
  const answer = await api("GET", "/v1/notifications?limit=1");
  if (answer.ok) setBadge(answer.data.unread_count);
}

async function loadNotifications() {
  const list = $("#notifications");
  const answer = await api("GET", "/v1/notifications?limit=100");
  if (!answer.ok) {
    list.replaceChildren(item(answer.problem ? `Could not load notifications: ${answer.problem.detail}` : "Could not load notifications.", "empty"));
    return;
  }
  const { notifications, unread_count: unread, last_sequence: last } = answer.data;
  setBadge(unread);
  $("#notifications-summary").textContent = unread ? `${unread} unread` : notifications.length ? "All read" : "";
  const markAll = $("#mark-all-read");
  markAll.disabled = unread === 0;
  markAll.dataset.upTo = String(last);
  list.replaceChildren(...notifications.map((n) => {
    const li = item(n.message, n.read ? "" : "unread");
    const time = document.createElement("time");
    time.dateTime = new Date(n.created_at_ms).toISOString();
    time.textContent = `${when(n.created_at_ms)}${n.read ? "" : " · unread"}`;
    li.append(time);
    return li;
  }));
  if (notifications.length === 0) list.append(item("Nothing yet: payments you receive, verifications and account changes show up here.", "empty"));
}

function item(text, className) {
  const li = document.createElement("li");
  li.textContent = text;
  if (className) li.className = className;
  return li;
}

// ------------------------------------------------------------------ payee lookup

let lookupFor = "";
async function lookUpPayee(form) {
  const email = form.payee_email.value.trim();
  const shown = $("#transfer-payee-name");
  if (email === lookupFor) return;
  lookupFor = email;
  shown.textContent = "";
  if (rules.email(email)) return;
  const answer = await api("GET", `/v1/users/lookup?email=${encodeURIComponent(email)}`);
  if (form.payee_email.value.trim() !== email) return;
  if (answer.ok) {
    shown.textContent = `Pays ${answer.data.display_name}`;
    setError(form, "payee_email", "");
  } else if (answer.problem) {
    setError(form, "payee_email", answer.problem.type === "payee-not-found" ? "No Sluice user has this email." : answer.problem.detail);
  }
}

function describe(status) {
  if (status.status === "rejected") return `rejected: ${status.reason}${status.detail ? ` (${status.detail})` : ""}`;
  return status.status === "accepted" ? "pending" : status.status;
}

// ------------------------------------------------------------------ wiring

document.addEventListener("DOMContentLoaded", () => {
  for (const [id, rule] of [["signup-email", "email"], ["signup-password", "password"], ["login-email", "email"], ["transfer-payee", "email"], ["transfer-amount", "amount"], ["profile-name", "required"], ["profile-dob", "date"], ["verify-value", "required"], ["refund-amount", "amount"], ["reset-email", "email"], ["reset-token", "required"], ["reset-password", "password"]]) {
    document.getElementById(id).dataset.rule = rule;
  }

  onSubmit("signup-form", async (form) => {
    if (!validate(form, { email: "email", password: "password", date_of_birth: "optionalDate" })) return;
    const body = { email: form.email.value.trim(), password: form.password.value };
    if (form.full_name.value.trim()) body.full_name = form.full_name.value.trim();
    if (form.date_of_birth.value) body.date_of_birth = form.date_of_birth.value;
    const identifier = form.identifier.value.trim();
    if (identifier) {
      if (!body.full_name || !body.date_of_birth) {
        $("#signup-identity").open = true;
        setError(form, "identifier", "To verify an identity at sign-up, give your full name and date of birth too.");
        return form.identifier.focus();
      }
      body.identity = { type: form.identifier_type.value, value: identifier };
    }
    const answer = await api("POST", "/v1/auth/register", body);
    if (!answer.ok) return showProblem(form, answer.problem);
    flash("Account requested; logging you in…");
    for (let attempt = 0; attempt < 50; attempt++) {
      const login = await api("POST", "/v1/auth/login", { email: body.email, password: body.password });
      if (login.ok) {
        session.set(login.data);
        flash("Welcome to Sluice.");
        return go("#/account");
      }
      await sleep(300);
    }
    showProblem(form, { type: "", detail: "Your account is not ready yet; try logging in in a moment." });
  });

  onSubmit("login-form", async (form) => {
    if (!validate(form, { email: "email", password: "required" })) return;
    const answer = await api("POST", "/v1/auth/login", { email: form.email.value.trim(), password: form.password.value });
    if (!answer.ok) return showProblem(form, answer.problem);
    session.set(answer.data);
    flash("");
    page = 0;
    paymentsPage = 0;
    go("#/account");
  });

  onSubmit("transfer-form", async (form) => {
    if (!validate(form, { payee_email: "email", amount: "amount" })) return;
    const body = { payee_email: form.payee_email.value.trim(), amount: form.amount.value.trim(), currency: form.currency.value };
    if (form.reference.value.trim()) body.reference = form.reference.value.trim();
    const answer = await sendMoney(form, "/v1/transfers", body);
    if (!answer.ok) return showProblem(form, answer.problem);
    const status = $("#transfer-status");
    const label = `Transfer of ${body.amount}${body.currency === "GBP" ? "" : ` ${body.currency}`} to ${body.payee_email}`;
    status.dataset.status = "pending";
    status.textContent = `${label}: pending`;
    const final = await outcome(answer.data.status_url, (s) => {
      status.dataset.status = describe(s).split(":")[0];
      status.textContent = `${label}: ${describe(s)}`;
    });
    status.dataset.status = final.status;
    if (final.status === "settled") { form.reset(); lookupFor = ""; $("#transfer-payee-name").textContent = ""; }
    page = 0;
    await loadAccount();
  });
  const transferForm = $("#transfer-form");
  transferForm.payee_email.addEventListener("blur", () => lookUpPayee(transferForm));
  transferForm.payee_email.addEventListener("change", () => lookUpPayee(transferForm));

  onSubmit("refund-form", async (form) => {
    if (!validate(form, { amount: "amount" })) return;
    const body = { amount: form.amount.value.trim(), currency: form.dataset.currency };
    if (form.reason.value.trim()) body.reason = form.reason.value.trim();
    const answer = await sendMoney(form, `/v1/payments/${encodeURIComponent(form.dataset.paymentId)}/refund`, body);
    if (!answer.ok) return showProblem(form, answer.problem);
    const status = $("#refund-status");
    const label = `Refund of ${body.amount} ${body.currency}`;
    const final = await outcome(answer.data.status_url, (s) => { status.dataset.status = describe(s).split(":")[0]; status.textContent = `${label}: ${describe(s)}`; });
    status.dataset.status = final.status;
    if (final.status === "settled") { form.reset(); form.hidden = true; }
    await loadPayments();
  });
  $("#refund-cancel").addEventListener("click", () => { $("#refund-form").hidden = true; });
  for (const id of ["#payments-status", "#payments-direction"]) $(id).addEventListener("change", () => { paymentsPage = 0; loadPayments(); });
  $("#payments-newer").addEventListener("click", () => { paymentsPage = Math.max(0, paymentsPage - 1); loadPayments(); });
  $("#payments-older").addEventListener("click", () => { paymentsPage += 1; loadPayments(); });

  $("#mark-all-read").addEventListener("click", async (event) => {
    const button = event.currentTarget;
    button.disabled = true;
    const answer = await api("POST", "/v1/notifications/read", { up_to_sequence: Number(button.dataset.upTo) });
    if (!answer.ok) { $("#notifications-summary").textContent = answer.problem.detail; return; }
    await outcome(answer.data.status_url, () => {});
    await loadNotifications();
  });

  onSubmit("reset-request-form", async (form) => {
    if (!validate(form, { email: "email" })) return;
    const answer = await api("POST", "/v1/auth/reset-password", { email: form.email.value.trim() });
    if (!answer.ok) return showProblem(form, answer.problem);
    $("#reset-request-status").textContent = `If an account has this email, a reset token is on its way; it works once, for ${Math.round(answer.data.expires_in / 60)} minutes.`;
    $("#reset-token").focus();
  });

  onSubmit("reset-confirm-form", async (form) => {
    if (!validate(form, { token: "required", new_password: "password" })) return;
    const answer = await api("POST", "/v1/auth/reset-password/confirm", { token: form.token.value.trim(), new_password: form.new_password.value });
    if (!answer.ok) return showProblem(form, answer.problem);
    if (answer.status === 202) return showProblem(form, { type: "", detail: "The reset is taking a while; try logging in with the new password in a moment." });
    form.reset();
    flash("Your password was reset and every session signed out. Log in with the new password.");
    go("#/login");
  });

  onSubmit("profile-form", async (form) => {
    if (!validate(form, { full_name: "required", date_of_birth: "date" })) return;
    const answer = await api("PATCH", "/v1/auth/me", { full_name: form.full_name.value.trim(), date_of_birth: form.date_of_birth.value });
    if (!answer.ok) return showProblem(form, answer.problem);
    const final = await outcome(answer.data.status_url, (s) => { $("#profile-status").textContent = `Details: ${describe(s)}`; });
    if (final.status === "rejected") showProblem(form, { type: "invalid-profile", detail: final.detail || final.reason });
    await loadProfile();
  });

  onSubmit("verify-form", async (form) => {
    if (!validate(form, { value: "required", full_name: "required", date_of_birth: "date" })) return;
    const claim = { type: form.type.value, value: form.value.value.trim(), full_name: form.full_name.value.trim(), date_of_birth: form.date_of_birth.value };
    const answer = await api("POST", "/v1/identity/verifications", claim);
    if (!answer.ok) return showProblem(form, answer.problem);
    const final = await outcome(answer.data.status_url, (s) => { $("#verify-status").textContent = `Verification: ${describe(s)}`; });
    if (final.status === "rejected") showProblem(form, { type: final.reason, detail: final.detail || final.reason });
    if (final.status === "settled") form.reset();
    await loadProfile();
  });

  $("#logout").addEventListener("click", async () => {
    await api("POST", "/v1/auth/logout");
    notices.stop();
    session.clear();
    flash("You are logged out.");
    go("#/login");
  });
  $("#newer").addEventListener("click", () => { page = Math.max(0, page - 1); loadTransactions(); });
  $("#older").addEventListener("click", () => { page += 1; loadTransactions(); });

  window.addEventListener("hashchange", route);
  route();
});
