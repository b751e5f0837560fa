// The web console end to end in headless Chromium, against a running `sluice dev`
// (scripts/test-console starts one): sign up, inline validation, profile, identity
// verification, a deposit by an operator, a transfer watched from pending to settled, a
// rejected transfer with its reason, paginated history, log out and log in again; and
// Swagger UI at /docs trying GET /health.
// A screenshot of each page is kept in $SLUICE_SCREENSHOTS.
import assert from "node:assert/strict";
import { mkdirSync } from "node:fs";
import { chromium } from "playwright-core";

const API = process.env.SLUICE_API;
const OPERATOR = process.env.SLUICE_OPERATOR_TOKEN;
const SHOTS = process.env.SLUICE_SCREENSHOTS || "target/console-screenshots";
const CHROMIUM = process.env.CHROMIUM || "/usr/bin/chromium";
assert.ok(API && OPERATOR, "SLUICE_API and SLUICE_OPERATOR_TOKEN must be set");
mkdirSync(SHOTS, { recursive: true });

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

async function http(method, path, token, body) {
  const response = await fetch(API + path, {
    method,
    headers: { ...(token ? { authorization: `Bearer ${token}` } : {}), ...(body ? { "content-type": "application/json" } : {}) },
    body: body ? JSON.stringify(body) : undefined,
  });
  return { status: response.status, body: await response.json().catch(() => null) };
}

async function settle(statusUrl, token) {
  for (let i = 0; i < 200; i++) {
    const answer = await http("GET", statusUrl, token);
    if (answer.status === 200 && ["settled", "rejected"].includes(answer.body.status)) return answer.body;
    await sleep(250);
  }
  throw new Error(`no outcome for ${statusUrl}`);
}

async function deposit(userId, amount) {
  const accepted = await http("POST", "/v1/deposits", OPERATOR, { user_id: userId, amount });
  assert.equal(accepted.status, 202, JSON.stringify(accepted.body));
  assert.equal((await settle(accepted.body.status_url, OPERATOR)).status, "settled");
}

const browser = await chromium.launch({ executablePath: CHROMIUM, args: ["--no-sandbox", "--disable-dev-shm-usage"] });
let step = "start";
const page = await browser.newPage({ viewport: { width: 1100, height: 900 } });
const errors = [];
page.on("pageerror", (error) => errors.push(String(error)));
page.on("requestfinished", async (request) => {
  if (process.env.SLUICE_TRACE) console.error(`${request.method()} ${request.url()} -> ${(await request.response())?.status()}`);
});
// Script errors count; a refused request (e.g. a 401 while a new account is not ready) does not.
page.on("console", (message) => { if (message.type() === "error" && !message.text().startsWith("Failed to load resource")) errors.push(message.text()); });
const view = (name) => page.locator(`#view-${name}`);
const signup = view("signup"), login = view("login"), account = view("account"), profile = view("profile");
const shot = (name) => page.screenshot({ path: `${SHOTS}/${name}.png`, fullPage: true });

try {
  // The payee signs up through the API; the user under test through the console.
  step = "payee";
  assert.equal((await http("POST", "/v1/auth/register", null, { email: "bob@console.example", password: "bob-password-1" })).status, 202);

  step = "sign-up page";
  await page.goto(`${API}/#/signup`);
  await page.getByRole("heading", { name: "Create an account" }).waitFor();
  await shot("01-signup");

  step = "inline validation";
  await signup.getByLabel("Email", { exact: true }).fill("not-an-email");
  await signup.getByLabel(/^Password/).fill("short");
  await page.getByRole("button", { name: "Sign up" }).click();
  await page.getByText("Enter an email address like name@example.com.").waitFor();
  await page.getByText("Use 10 to 128 characters.").waitFor();
  assert.equal(await signup.getByLabel("Email", { exact: true }).getAttribute("aria-invalid"), "true");
  await shot("02-signup-invalid");

  step = "sign up";
  await signup.getByLabel("Email", { exact: true }).fill("alice@console.example");
  await signup.getByLabel(/^Full name/).fill("Alice Liddell");
  await signup.getByLabel(/^Password/).fill("alice-password-1");
  await page.getByRole("button", { name: "Sign up" }).click();
  await page.getByRole("heading", { name: "Your account" }).waitFor({ timeout: 30000 });
  await page.locator("#balance").filter({ hasText: "0.00 GBP" }).waitFor();
  assert.equal(await page.locator("#kyc-level").textContent(), "BROWSING");
  await page.getByText("No transactions yet.").waitFor();
  await shot("03-account-empty");

  step = "profile";
  await page.getByRole("link", { name: "Profile" }).click();
  await page.getByRole("heading", { name: "Profile" }).waitFor();
  await page.locator("#profile-email").filter({ hasText: "alice@console.example" }).waitFor();
  await profile.getByLabel("Full legal name").fill("Alice Liddell");
  await profile.getByLabel("Date of birth", { exact: true }).fill("1990-05-04");
  await page.getByRole("button", { name: "Save details" }).click();
  await page.getByText("Details: settled").waitFor({ timeout: 30000 });

  step = "identity verification";
  await profile.getByLabel("Name on the document").fill("Alice Liddell");
  await profile.getByLabel("Date of birth on the document").fill("1990-05-04");
  await profile.getByLabel("Number", { exact: true }).fill("QQ 12 34 56 C");
  await page.getByRole("button", { name: "Verify" }).click();
  await page.locator("#verify-value-error").filter({ hasText: "not a valid National Insurance prefix" }).waitFor();
  await profile.getByLabel("Number", { exact: true }).fill("AB 12 34 56 C");
  await page.getByRole("button", { name: "Verify" }).click();
  await page.getByText("Verification: settled").waitFor({ timeout: 30000 });
  await page.locator("#profile-identifiers").filter({ hasText: "NIN:AB123456C" }).waitFor();
  await shot("04-profile-verified");

  step = "deposit";
  const me = await page.evaluate(() => JSON.parse(sessionStorage.getItem("sluice.session")).user_id);
  await deposit(me, "100.00");
  await page.getByRole("link", { name: "Account" }).click();
  await page.locator("#balance").filter({ hasText: "100.00 GBP" }).waitFor();
  assert.equal(await page.locator("#kyc-level").textContent(), "FULL");

  step = "transfer validation";
  await account.getByLabel("Payee email").fill("bob@console.example");
  await account.getByLabel(/^Amount/).fill("1.001");
  await page.getByRole("button", { name: "Send" }).click();
  await page.getByText("Enter an amount like 12.50 (at most two decimal places).").waitFor();

  step = "transfer: pending, then settled";
  // Record every status the page shows, to see it go from pending to settled.
  await page.evaluate(() => {
    window.seenStatuses = [];
    new MutationObserver(() => window.seenStatuses.push(document.querySelector("#transfer-status").dataset.status))
      .observe(document.querySelector("#transfer-status"), { attributes: true, childList: true, characterData: true, subtree: true });
  });
  await account.getByLabel(/^Amount/).fill("25.00");
  await account.getByLabel(/^Reference/).fill("books");
  await page.getByRole("button", { name: "Send" }).click();
  await page.getByText("Transfer of 25.00 to bob@console.example: settled").waitFor({ timeout: 30000 });
  const seen = await page.evaluate(() => window.seenStatuses);
  assert.equal(seen[0], "pending", `statuses shown: ${seen}`);
  assert.equal(seen.at(-1), "settled", `statuses shown: ${seen}`);
  await page.locator("#balance").filter({ hasText: "75.00 GBP" }).waitFor();
  const newest = page.locator("#transactions tbody tr").first();
  await newest.filter({ hasText: "−25.00" }).waitFor();
  assert.match(await newest.textContent(), /transfer.*books/);
  await shot("05-transfer-settled");

  step = "transfer: rejected with its reason";
  await account.getByLabel("Payee email").fill("bob@console.example");
  await account.getByLabel(/^Amount/).fill("500.00");
  await page.getByRole("button", { name: "Send" }).click();
  await page.getByText(/Transfer of 500\.00 to bob@console\.example: rejected: insufficient_funds/).waitFor({ timeout: 30000 });
  await shot("06-transfer-rejected");

  step = "pagination";
  for (let i = 0; i < 10; i++) await deposit(me, "1.00");
  await page.reload();
  await page.locator("#balance").filter({ hasText: "85.00 GBP" }).waitFor();
  // The history renders after the balance (its own request): wait for the newest deposit's row
  // (balance after it: 85.00) before counting rows.
  await page.locator("#transactions tbody tr").first().filter({ hasText: "85.00" }).waitFor();
  assert.equal(await page.locator("#transactions tbody tr").count(), 10);
  assert.equal(await page.getByRole("button", { name: "Newer" }).isDisabled(), true);
  await page.getByRole("button", { name: "Older" }).click();
  await page.getByText("Page 2").waitFor();
  const older = await page.locator("#transactions tbody tr").allTextContents();
  assert.equal(older.length, 2, older.join("\n"));
  assert.match(older.at(-1), /deposit.*\+100\.00/);
  await shot("07-history-page-2");

  step = "log out";
  await page.getByRole("button", { name: "Log out" }).click();
  await page.getByRole("heading", { name: "Log in" }).waitFor();
  await page.getByText("You are logged out.").waitFor();
  await shot("08-logged-out");

  step = "log in";
  await login.getByLabel("Email", { exact: true }).fill("alice@console.example");
  await login.getByLabel("Password", { exact: true }).fill("wrong-password");
  await login.getByRole("button", { name: "Log in" }).click();
  await page.getByText("wrong email or password").waitFor();
  await login.getByLabel("Password", { exact: true }).fill("alice-password-1");
  await login.getByRole("button", { name: "Log in" }).click();
  await page.locator("#balance").filter({ hasText: "85.00 GBP" }).waitFor({ timeout: 30000 });
  await shot("09-logged-in-again");

  step = "swagger ui";
  // /docs: Swagger UI on the API's OpenAPI document, "Try it out" on GET /health.
  await page.goto(`${API}/docs`);
  const health = page.locator(".opblock-get", { has: page.locator('[data-path="/health"]') }).first();
  await health.waitFor({ timeout: 30000 });
  const document = (await http("GET", "/openapi.json")).body;
  const operations = Object.values(document.paths).flatMap((item) => Object.keys(item)).length;
  assert.equal(await page.locator(".opblock").count(), operations, "every operation of /openapi.json is listed");
  await health.locator(".opblock-summary").click();
  await health.getByRole("button", { name: "Try it out" }).click();
  await health.getByRole("button", { name: "Execute" }).click();
  await health.locator(".live-responses-table .response-col_status").filter({ hasText: "200" }).first().waitFor({ timeout: 15000 });
  assert.match(await health.locator(".live-responses-table .microlight").first().textContent(), /"status": "ok"/);
  await shot("10-swagger-ui");

  assert.deepEqual(errors, [], "no script errors");
  console.log(`console test passed; screenshots in ${SHOTS}`);
} catch (error) {
  await shot("failure").catch(() => {});
  console.error(`console test failed at step "${step}": ${error.stack || error}`);
  console.error(`page errors: ${JSON.stringify(errors)}; flash: ${await page.locator("#flash").textContent().catch(() => "?")}`);
  process.exitCode = 1;
} finally {
  await browser.close();
}
