// The web console end to end in headless Chromium, against a running `sluice dev`
// (scripts/test-console starts one): sign up, inline validation, profile, identity
// verification, a deposit by an operator, a transfer watched from pending to settled, a
// rejected transfer with its reason, paginated history, log out and log in again; the payee
// looked up before sending, money sent with an Idempotency-Key, the payments list and a refund
// by the payee from theirs, notifications arriving live with an unread count, password reset
// with the token from the dev outbox, sign-up with an identity, a phone-sized screen; and
// Swagger UI at /docs trying GET /health.
// A screenshot of each page is kept in $SLUICE_SCREENSHOTS.
import assert from "node:assert/strict";
import { existsSync, mkdirSync, readdirSync, readFileSync } from "node:fs";
import { apiClient, openBrowser, sleep } from "./api.mjs";

const API = process.env.SLUICE_API;
const OPERATOR = process.env.SLUICE_OPERATOR_TOKEN;
const SHOTS = process.env.SLUICE_SCREENSHOTS || "target/console-screenshots";
const CHROMIUM = process.env.CHROMIUM || "/usr/bin/chromium";
const OUTBOX = process.env.SLUICE_OUTBOX;
assert.ok(API && OPERATOR && OUTBOX, "SLUICE_API, SLUICE_OPERATOR_TOKEN and SLUICE_OUTBOX must be set");
mkdirSync(SHOTS, { recursive: true });


const { http, settle, deposit } = apiClient(API, OPERATOR);

// Script errors count; a refused request (a 401 or 403 the test provokes) does not.
const { browser, page, errors } = await openBrowser(CHROMIUM);
let step = "start";
const view = (name) => page.locator(`#view-${name}`);
const signup = view("signup"), login = view("login"), account = view("account"), profile = view("profile");
const shot = (name) => page.screenshot({ path: `${SHOTS}/${name}.png`, fullPage: true });

try {
  // The payee signs up through the API; the user under test through the console.
  step = "payee";
  assert.equal((await http("POST", "/v1/auth/register", null, { email: "bob@console.example", password: "bob-password-1", full_name: "Bob Baker", date_of_birth: "1980-02-02" })).status, 202);

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

  step = "payee lookup";
  await account.getByLabel("Payee email").fill("nobody@console.example");
  await account.getByLabel(/^Amount/).focus();
  await page.locator("#transfer-payee-error").filter({ hasText: "No Sluice user has this email." }).waitFor();
  await account.getByLabel("Payee email").fill("bob@console.example");
  await account.getByLabel(/^Amount/).focus();
  await page.locator("#transfer-payee-name").filter({ hasText: "Pays Bob B." }).waitFor();

  step = "money sent with an Idempotency-Key";
  const keys = [];
  page.on("request", (request) => { if (request.url().endsWith("/v1/transfers")) keys.push(request.headers()["idempotency-key"]); });
  await account.getByLabel(/^Amount/).fill("1.00");
  await page.getByRole("button", { name: "Send" }).click();
  await page.getByText("Transfer of 1.00 to bob@console.example: settled").waitFor({ timeout: 30000 });
  await account.getByLabel("Payee email").fill("bob@console.example");
  await account.getByLabel(/^Amount/).fill("1.00");
  await page.getByRole("button", { name: "Send" }).click();
  await page.locator("#balance").filter({ hasText: "83.00 GBP" }).waitFor({ timeout: 30000 });
  assert.equal(keys.length, 2, `transfers sent: ${keys}`);
  assert.ok(keys.every((k) => /^[0-9a-f-]{36}$/.test(k)) && keys[0] !== keys[1], `a new key per transfer: ${keys}`);
  // The history names the payee, not their id.
  assert.match(await page.locator("#transactions tbody tr").first().textContent(), /Bob B\./);

  step = "payments";
  await page.getByRole("link", { name: "Payments" }).click();
  await page.getByRole("heading", { name: "Payments" }).waitFor();
  const books = page.locator("#payments tbody tr", { hasText: "books" });
  await books.filter({ hasText: "completed" }).waitFor();
  assert.match(await books.textContent(), /transfer sent.*Bob B\..*−25\.00 GBP/);
  await page.locator("#payments tbody tr", { hasText: "500.00" }).filter({ hasText: "failed: insufficient funds" }).waitFor();
  await page.getByLabel("Status").selectOption("failed");
  await page.locator("#payments tbody tr").first().filter({ hasText: "500.00" }).waitFor();
  assert.equal(await page.locator("#payments tbody tr").count(), 1);
  await page.getByLabel("Status").selectOption("");
  await shot("10-payments");

  step = "refund by the payee";
  const bob = await browser.newPage({ viewport: { width: 1100, height: 900 } });
  bob.on("pageerror", (error) => errors.push(`bob: ${error}`));
  await bob.goto(`${API}/#/login`);
  await bob.locator("#view-login").getByLabel("Email", { exact: true }).fill("bob@console.example");
  await bob.locator("#view-login").getByLabel("Password", { exact: true }).fill("bob-password-1");
  await bob.locator("#view-login").getByRole("button", { name: "Log in" }).click();
  await bob.getByRole("heading", { name: "Your account" }).waitFor({ timeout: 30000 });
  await bob.getByRole("link", { name: "Payments" }).click();
  await bob.getByRole("button", { name: "Refund 25.00 GBP from Alice L." }).click();
  assert.equal(await bob.getByLabel("Amount to send back").inputValue(), "25.00");
  await bob.getByLabel("Amount to send back").fill("5.00");
  await bob.getByLabel(/^Reason/).fill("one book was damaged");
  await bob.getByRole("button", { name: "Send refund" }).click();
  await bob.getByText(/^Refund of 5\.00 GBP: (settled|rejected)/).waitFor({ timeout: 30000 });
  assert.equal(await bob.locator("#refund-status").textContent(), "Refund of 5.00 GBP: settled");
  await bob.locator("#payments tbody tr", { hasText: "books" }).filter({ hasText: "(5.00 back)" }).waitFor();
  await bob.screenshot({ path: `${SHOTS}/11-refund-by-the-payee.png`, fullPage: true });
  await page.reload();
  await page.locator("#payments tbody tr", { hasText: "books" }).filter({ hasText: "partly refunded (5.00 back)" }).waitFor({ timeout: 30000 });

  step = "notifications, live";
  await page.getByRole("link", { name: /^Notifications/ }).click();
  await page.getByRole("heading", { name: "Notifications" }).waitFor();
  await page.locator("#notifications li.unread", { hasText: "You received a refund of 5.00 GBP from Bob B." }).waitFor();
  const unreadBefore = Number(await page.locator("#unread-badge").textContent());
  assert.ok(unreadBefore >= 2, `unread: ${unreadBefore}`);
  await deposit(me, "2.00");
  // No reload: the stream brings it, and the count goes up.
  await page.locator("#notifications li.unread", { hasText: "2.00 GBP was deposited into your account." }).waitFor({ timeout: 30000 });
  await page.locator("#unread-badge").filter({ hasText: String(unreadBefore + 1) }).waitFor();
  assert.equal(await page.locator("#notifications-link").getAttribute("aria-label"), `Notifications, ${unreadBefore + 1} unread`);
  await shot("12-notifications-unread");
  await page.getByRole("button", { name: "Mark all as read" }).click();
  await page.locator("#notifications-summary").filter({ hasText: "All read" }).waitFor({ timeout: 30000 });
  assert.equal(await page.locator("#unread-badge").isHidden(), true);
  assert.equal(await page.locator("#notifications li.unread").count(), 0);

  step = "a phone-sized screen";
  await page.setViewportSize({ width: 390, height: 844 });
  await page.getByRole("link", { name: "Payments" }).click();
  await page.locator("#payments tbody tr", { hasText: "books" }).waitFor();
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  assert.ok(overflow <= 0, `no sideways scrolling on a phone (${overflow}px too wide)`);
  await shot("13-payments-phone");
  await page.setViewportSize({ width: 1100, height: 900 });

  step = "password reset";
  await page.getByRole("button", { name: "Log out" }).click();
  await page.getByRole("link", { name: "Forgot your password?" }).click();
  await page.getByRole("heading", { name: "Reset your password" }).waitFor();
  const reset = view("reset");
  await reset.getByLabel("Email", { exact: true }).fill("alice@console.example");
  await page.getByRole("button", { name: "Send me a token" }).click();
  await page.getByText(/a reset token is on its way; it works once, for 30 minutes/).waitFor();
  // The message is written just after the answer.
  let mails = [];
  for (let i = 0; i < 100 && mails.length === 0; i++) {
    mails = (existsSync(OUTBOX) ? readdirSync(OUTBOX) : []).map((f) => readFileSync(`${OUTBOX}/${f}`, "utf8")).filter((m) => m.includes("To: alice@console.example"));
    if (mails.length === 0) await sleep(100);
  }
  assert.equal(mails.length, 1, "one reset message for Alice in the outbox");
  const token = mails[0].split(/\r?\n/).map((l) => l.trim()).find((l) => /^u_[0-9a-f]+\.[0-9a-f]{64}$/.test(l));
  await reset.getByLabel(/^Reset token/).fill(`${token.slice(0, -1)}${token.endsWith("0") ? "1" : "0"}`);
  await reset.getByLabel(/^New password/).fill("alice-password-2");
  await page.getByRole("button", { name: "Set new password" }).click();
  await page.locator("#reset-token-error").filter({ hasText: /no password reset with this token|not a reset token/ }).waitFor({ timeout: 30000 });
  await shot("14-reset-wrong-token");
  await reset.getByLabel(/^Reset token/).fill(token);
  await page.getByRole("button", { name: "Set new password" }).click();
  await page.getByText("Your password was reset and every session signed out. Log in with the new password.").waitFor({ timeout: 30000 });
  await login.getByLabel("Email", { exact: true }).fill("alice@console.example");
  await login.getByLabel("Password", { exact: true }).fill("alice-password-2");
  await login.getByRole("button", { name: "Log in" }).click();
  // 85.00, two transfers of 1.00, Bob's refund of 5.00, a deposit of 2.00.
  await page.locator("#balance").filter({ hasText: "90.00 GBP" }).waitFor({ timeout: 30000 });
  await page.getByRole("button", { name: "Log out" }).click();
  await page.getByText("You are logged out.").waitFor();

  step = "sign-up with an identity";
  await page.goto(`${API}/#/signup`);
  await signup.getByLabel("Email", { exact: true }).fill("carol@console.example");
  await signup.getByLabel(/^Full name/).fill("Carol Danvers");
  await signup.getByLabel(/^Password/).fill("carol-password-1");
  await page.getByText("Verify your identity now").click();
  await signup.getByLabel("NHS number").check();
  await signup.getByLabel("Number", { exact: true }).fill("943 476 5919");
  await signup.getByLabel("Date of birth").fill("1985-03-08");
  await shot("15-signup-with-identity");
  await page.getByRole("button", { name: "Sign up" }).click();
  await page.getByRole("heading", { name: "Your account" }).waitFor({ timeout: 30000 });
  await page.getByRole("link", { name: "Profile" }).click();
  for (let i = 0; i < 60 && !(await page.locator("#profile-identifiers").textContent()).includes("NHS:9434765919"); i++) {
    await sleep(500);
    await page.reload();
  }
  await page.locator("#profile-identifiers").filter({ hasText: "NHS:9434765919" }).waitFor();
  await page.getByRole("link", { name: /^Notifications/ }).click();
  await page.locator("#notifications li", { hasText: "Your identity is verified" }).waitFor({ timeout: 30000 });

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
  await shot("16-swagger-ui");

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
