// The Sluice web console: plain JavaScript over the HTTP API (same origin, no dependencies).
// Tokens live in sessionStorage; every form validates inline and shows the API's problem
// details next to the field they concern.
"use strict";

const PAGE_SIZE = 10;
const session = {
  get() { return JSON.parse(sessionStorage.getItem("sluice.session") || "null"); },
  set(value) { sessionStorage.setItem("sluice.session", JSON.stringify(value)); },
  clear() { sessionStorage.removeItem("sluice.session"); },
};
let page = 0;

const $ = (selector) => document.querySelector(selector);
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

// ------------------------------------------------------------------ the API

async function api(method, path, body, retried) {
  const headers = {};
  const current = session.get();
  if (current) headers.authorization = `Bearer ${current.access_token}`;
  if (body !== undefined) headers["content-type"] = "application/json";
  const response = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  const text = await response.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch { data = { detail: text }; }
  const problem = response.ok ? null : { type: (data && data.type || "").split("/").pop(), detail: data && data.detail || response.statusText, status: response.status };
  if (problem && problem.type === "token-expired" && current && !retried && await refresh()) {
    return api(method, path, body, true);
  }
  if (problem && response.status === 401 && current && path !== "/v1/auth/logout") {
    session.clear();
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
  date: (v) => /^\d{4}-\d{2}-\d{2}$/.test(v) ? "" : "Enter a date.",
};

// Which field each problem type belongs to, per form.
const problemFields = {
  "invalid-email": "email", "email-taken": "email", "weak-password": "password",
  "invalid-credentials": "password", "invalid-amount": "amount", "unsupported-currency": "amount",
  "invalid-payee": "payee_email", "invalid-reference": "reference", "invalid-identifier": "value",
  "invalid-profile": "date_of_birth", "invalid-date": "date_of_birth", "identity_mismatch": "full_name",
};

function setError(form, name, message) {
  const input = form.elements[name];
  const id = input && input.getAttribute("aria-describedby");
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
  let view = (location.hash || "").replace("#/", "") || (signedIn ? "account" : "login");
  if (!signedIn && (view === "account" || view === "profile")) view = "login";
  if (signedIn && (view === "login" || view === "signup")) view = "account";
  document.querySelectorAll("[data-view]").forEach((s) => { s.hidden = s.id !== `view-${view}`; });
  document.querySelectorAll("[data-when]").forEach((e) => { e.hidden = (e.dataset.when === "signed-in") !== signedIn; });
  document.title = `Sluice · ${view}`;
  if (view === "account") loadAccount();
  if (view === "profile") loadProfile();
}

async function loadAccount() {
  const account = await api("GET", "/v1/accounts/me");
  if (account.ok) {
    $("#balance").textContent = `${account.data.balance} ${account.data.currency}`;
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
    for (const text of [new Date(t.timestamp_ms).toLocaleString(), t.kind.toLowerCase(), `${sign}${t.amount}`, t.counterparty || "", t.reversal_reason ? `returned: ${t.reversal_reason}` : (t.reference || ""), t.balance_after]) {
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

function describe(status) {
  if (status.status === "rejected") return `rejected: ${status.reason}${status.detail ? ` (${status.detail})` : ""}`;
  return status.status === "accepted" ? "pending" : status.status;
}

// ------------------------------------------------------------------ wiring

document.addEventListener("DOMContentLoaded", () => {
  for (const [id, rule] of [["signup-email", "email"], ["signup-password", "password"], ["login-email", "email"], ["transfer-payee", "email"], ["transfer-amount", "amount"], ["profile-name", "required"], ["profile-dob", "date"], ["verify-value", "required"]]) {
    document.getElementById(id).dataset.rule = rule;
  }

  onSubmit("signup-form", async (form) => {
    if (!validate(form, { email: "email", password: "password" })) return;
    const body = { email: form.email.value.trim(), password: form.password.value };
    if (form.full_name.value.trim()) body.full_name = form.full_name.value.trim();
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
    go("#/account");
  });

  onSubmit("transfer-form", async (form) => {
    if (!validate(form, { payee_email: "email", amount: "amount" })) return;
    const body = { payee_email: form.payee_email.value.trim(), amount: form.amount.value.trim() };
    if (form.reference.value.trim()) body.reference = form.reference.value.trim();
    const answer = await api("POST", "/v1/transfers", body);
    if (!answer.ok) return showProblem(form, answer.problem);
    const status = $("#transfer-status");
    const label = `Transfer of ${body.amount} to ${body.payee_email}`;
    status.dataset.status = "pending";
    status.textContent = `${label}: pending`;
    const final = await outcome(answer.data.status_url, (s) => {
      status.dataset.status = describe(s).split(":")[0];
      status.textContent = `${label}: ${describe(s)}`;
    });
    status.dataset.status = final.status;
    if (final.status === "settled") form.reset();
    page = 0;
    await loadAccount();
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
    session.clear();
    flash("You are logged out.");
    go("#/login");
  });
  $("#newer").addEventListener("click", () => { page = Math.max(0, page - 1); loadTransactions(); });
  $("#older").addEventListener("click", () => { page += 1; loadTransactions(); });

  window.addEventListener("hashchange", route);
  route();
});
