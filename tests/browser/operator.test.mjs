// The operator console end to end in headless Chromium, against the running `sluice dev` that
// scripts/test-console starts (after console.test.mjs): sign-in with an operator token (a
// malformed one and a user's refused); a user found by email, a deposit from the console
// watched to settled, a command looked up by id; a garbage record produced with kcat to
// payments.commands.json, dead-lettered, opened and discarded with a reason; a JSON transfer
// produced with kcat to the wrong partition (librdkafka's CRC32 instead of Kafka's murmur2),
// dead-lettered as wrong_partition, replayed once "fixed", and settled; the topology drawn as
// a graph; topics with partitions, configs and decoded records, and no password hash from the
// users changelog; consumer lag rising while processing is paused and falling after it
// resumes, with live sparklines; a phone-sized screen; a token the API no longer accepts.
// A screenshot of each page is kept in $SLUICE_SCREENSHOTS (ops-*.png).
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { mkdirSync } from "node:fs";
import { apiClient, openBrowser, sleep } from "./api.mjs";

const API = process.env.SLUICE_API;
const OPERATOR = process.env.SLUICE_OPERATOR_TOKEN;
const SHOTS = process.env.SLUICE_SCREENSHOTS || "target/console-screenshots";
const CHROMIUM = process.env.CHROMIUM || "/usr/bin/chromium";
const KCAT_CONF = process.env.SLUICE_KCAT_CONF;
const BOOTSTRAP = process.env.SLUICE_BOOTSTRAP;
const KCAT = process.env.KCAT || "kcat";
assert.ok(API && OPERATOR && KCAT_CONF && BOOTSTRAP, "SLUICE_API, SLUICE_OPERATOR_TOKEN, SLUICE_KCAT_CONF and SLUICE_BOOTSTRAP must be set");
mkdirSync(SHOTS, { recursive: true });

// This run's users are new even against a stack that ran the test before.
const run = Date.now().toString(36);
const COMMANDS = "payments.commands.json";
const operatorName = JSON.parse(Buffer.from(OPERATOR.split(".")[1], "base64url").toString("utf8")).sub;

// Kafka's murmur2 (org.apache.kafka.common.utils.Utils.murmur2), as a Java int.
function murmur2(data) {
  const length = data.length;
  const m = 0x5bd1e995;
  const r = 24;
  let h = 0x9747b28c ^ length;
  const length4 = length >> 2;
  for (let i = 0; i < length4; i++) {
    const i4 = i * 4;
    let k = (data[i4] & 0xff) + ((data[i4 + 1] & 0xff) << 8) + ((data[i4 + 2] & 0xff) << 16) + ((data[i4 + 3] & 0xff) << 24);
    k = Math.imul(k, m);
    k ^= k >>> r;
    k = Math.imul(k, m);
    h = Math.imul(h, m);
    h ^= k;
  }
  const rest = length & ~3;
  switch (length % 4) {
    case 3: h ^= (data[rest + 2] & 0xff) << 16; // falls through
    case 2: h ^= (data[rest + 1] & 0xff) << 8; // falls through
    case 1:
      h ^= data[rest] & 0xff;
      h = Math.imul(h, m);
  }
  h ^= h >>> 13;
  h = Math.imul(h, m);
  h ^= h >>> 15;
  return h | 0;
}
const toPositive = (n) => n & 0x7fffffff;
// The partition Kafka's default partitioner (and Sluice) gives a key.
const partitionFor = (key, partitions) => toPositive(murmur2(Buffer.from(key, "utf8"))) % partitions;
// Kafka's own test vectors (UtilsTest.testMurmur2).
for (const [text, hash] of [["21", -973932308], ["foobar", -790332482], ["a-little-bit-long-string", -985981536], ["a-little-bit-longer-string", -1486304829], ["lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8", -58897971], ["abc", 479470107]]) {
  assert.equal(murmur2(Buffer.from(text)), hash, `murmur2(${text})`);
}

const { http, settle, deposit } = apiClient(API, OPERATOR);

// Registration is asynchronous: log in until the account exists.
async function register(name, fullName) {
  const email = `${name}-${run}@ops.example`;
  const password = `${name}-password-1`;
  const registered = await http("POST", "/v1/auth/register", null, { email, password, full_name: fullName, date_of_birth: "1985-06-15" });
  assert.equal(registered.status, 202, JSON.stringify(registered.body));
  for (let i = 0; i < 100; i++) {
    const login = await http("POST", "/v1/auth/login", null, { email, password });
    if (login.status === 200) return { email, ...login.body };
    await sleep(300);
  }
  throw new Error(`${email} could not log in`);
}

async function balance(token) {
  const answer = await http("GET", "/v1/accounts/me", token);
  return answer.status === 200 ? answer.body.balance : "0.00";
}

// Produces one record with kcat as the `kcat` principal, to an explicit partition.
function produce(topic, key, partition, value, headers = {}) {
  const args = ["-F", KCAT_CONF, "-b", BOOTSTRAP, "-P", "-t", topic, "-k", key, "-p", String(partition)];
  for (const [name, text] of Object.entries(headers)) args.push("-H", `${name}=${text}`);
  const result = spawnSync(KCAT, args, { input: `${value}\n`, encoding: "utf8", timeout: 60000 });
  assert.equal(result.status, 0, `kcat ${args.filter((a) => !a.startsWith("authorization=")).join(" ")} failed (${result.error || `exit ${result.status}`}): ${result.stderr}`);
}

// Script errors count; a refused request (a 401 or 403 the test provokes) does not.
const { browser, page, errors } = await openBrowser(CHROMIUM);
let step = "start";
const view = (name) => page.locator(`#view-${name}`);
const shot = (name) => page.screenshot({ path: `${SHOTS}/ops-${name}.png`, fullPage: true });
const users = view("ops-users"), dlq = view("ops-dlq"), consumers = view("ops-consumers");
const detail = page.locator("#ops-dlq-detail");
const dlqRow = (text) => page.locator("#ops-dlq-table tbody tr", { hasText: text });
const tokenField = page.getByLabel("Operator access token");
const sluiceLag = page.locator('#ops-groups tbody tr[data-group="sluice"] td.lag');
const lagNow = async () => Number((await sluiceLag.textContent()).replace(/[^\d]/g, ""));
const noSidewaysScroll = async (what) => {
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  assert.ok(overflow <= 0, `no sideways scrolling on a phone: ${what} is ${overflow}px too wide`);
};

// Presses the dead-letter view's Refresh until `row` is listed (the pipeline dead-letters
// asynchronously).
async function refreshUntil(row, what, timeout = 30000) {
  const deadline = Date.now() + timeout;
  while ((await row.count()) === 0) {
    if (Date.now() > deadline) throw new Error(`${what} was not listed within ${timeout / 1000} s`);
    await dlq.getByRole("button", { name: /^Refresh/ }).click();
    await sleep(1000);
  }
}

try {
  step = "users for this run";
  const olive = await register("olive", "Olive Operand");
  const payer = await register("payer", "Paula Payer");
  const payee = await register("payee", "Peter Payee");

  // ------------------------------------------------------------ 1. sign-in, a user, a deposit
  step = "operator sign-in page";
  await page.goto(`${API}/#/operator`);
  await page.getByRole("heading", { name: "Operator sign-in" }).waitFor();
  await page.locator("pre.command").filter({ hasText: "sluice token --subject <your-name> --role operator" }).waitFor();
  assert.equal(await page.locator("#ops-nav").isHidden(), true, "no operator links before signing in");
  await shot("01-sign-in");

  step = "sign-in: not a token";
  await tokenField.fill("not-a-token");
  await page.getByRole("button", { name: "Sign in as operator" }).click();
  await page.locator("#operator-token-error").filter({ hasText: "This is not an access token" }).waitFor();
  assert.equal(await tokenField.getAttribute("aria-invalid"), "true");

  step = "sign-in: a user's token is refused";
  await tokenField.fill(olive.access_token);
  await page.getByRole("button", { name: "Sign in as operator" }).click();
  await page.locator("#operator-token-error").filter({ hasText: "not an operator's" }).waitFor();
  assert.equal(await page.evaluate(() => sessionStorage.getItem("sluice.operator")), null);
  await shot("02-sign-in-refused");

  step = "sign in";
  await tokenField.fill(OPERATOR);
  await page.getByRole("button", { name: "Sign in as operator" }).click();
  await page.getByRole("heading", { name: "Users" }).waitFor();
  for (const link of ["Users", "Dead letters", "Topology", "Topics", "Consumers & instances"]) {
    await page.locator("#ops-nav").getByRole("link", { name: link }).first().waitFor();
  }
  assert.equal(await page.evaluate(() => sessionStorage.getItem("sluice.session")), null, "the operator token is kept apart from user sessions");
  assert.equal(await page.evaluate(() => JSON.parse(sessionStorage.getItem("sluice.operator")).token), OPERATOR);
  await page.locator("#ops-whoami").filter({ hasText: operatorName }).waitFor();

  step = "find a user: unknown";
  await users.getByLabel("Email or user id").fill(`nobody-${run}@ops.example`);
  await users.getByRole("button", { name: "Find" }).click();
  await page.locator("#ops-find-who-error").filter({ hasText: "No user has this email." }).waitFor();

  step = "find a user";
  await users.getByLabel("Email or user id").fill(olive.email);
  await users.getByRole("button", { name: "Find" }).click();
  const profile = page.locator("#ops-user-profile");
  await profile.filter({ hasText: olive.email }).waitFor();
  const profileText = await profile.textContent();
  assert.ok(profileText.includes(olive.user_id) && profileText.includes("Olive Operand") && profileText.includes("ACTIVE"), profileText);
  await page.getByText("This user has no transactions yet.").waitFor();
  assert.match(await page.locator("#ops-user-balance").textContent(), /no account yet|^0\.00 GBP$/);
  await shot("03-user-found");

  step = "deposit from the console";
  const keys = [];
  page.on("request", (request) => { if (request.url().endsWith("/v1/deposits")) keys.push(request.headers()["idempotency-key"]); });
  await users.getByLabel(/^Amount/).fill("40.00");
  await users.getByLabel("Currency").selectOption("GBP");
  await users.getByRole("button", { name: "Deposit", exact: true }).click();
  await page.getByText("Deposit of 40.00 GBP: settled").waitFor({ timeout: 30000 });
  assert.equal(keys.length, 1, `deposits sent: ${keys}`);
  assert.match(keys[0], /^[0-9a-f-]{36}$/, "a deposit carries an Idempotency-Key");
  await page.locator("#ops-user-balance").filter({ hasText: "40.00 GBP" }).waitFor({ timeout: 15000 });
  await page.locator('#ops-user-balances tr[data-currency="GBP"]').filter({ hasText: "40.00" }).waitFor();
  const newest = page.locator("#ops-user-transactions tbody tr").first();
  await newest.filter({ hasText: "+40.00" }).waitFor();
  assert.match(await newest.textContent(), /deposit/);
  const commandId = (await page.locator("#ops-deposit-status .command-id").textContent()).trim();
  assert.ok(commandId, "the deposit's command id is shown");
  await shot("04-deposit-settled");

  step = "command status lookup";
  assert.equal(await users.getByLabel(/^Account/).inputValue(), olive.user_id, "the lookup is for the user shown");
  await users.getByLabel("Command id").fill(`c-${run}-nothing`);
  await users.getByRole("button", { name: "Look up" }).click();
  await page.locator("#ops-command-id-error").filter({ hasText: "No command" }).waitFor();
  await users.getByLabel("Command id").fill(commandId);
  await users.getByRole("button", { name: "Look up" }).click();
  const result = page.locator("#ops-command-result");
  await result.filter({ hasText: "settled" }).waitFor();
  assert.match(await result.textContent(), /Deposit/);
  await shot("05-command-status");

  // ------------------------------------------------------------ 2. a garbage record, discarded
  step = "dead letters: garbage produced with kcat";
  const commandsTopic = await http("GET", `/v1/ops/topics/${COMMANDS}`, OPERATOR);
  assert.equal(commandsTopic.status, 200, JSON.stringify(commandsTopic.body));
  const partitions = commandsTopic.body.partitions.length;
  const garbageKey = `garbage-${run}`;
  // On its key's own partition: refused for what it is, not for where it is.
  const garbagePartition = partitionFor(garbageKey, partitions);
  produce(COMMANDS, garbageKey, garbagePartition, "this is not JSON {");
  await page.locator("#ops-nav").getByRole("link", { name: "Dead letters" }).click();
  await page.getByRole("heading", { name: "Dead letters" }).waitFor();
  const garbage = dlqRow(garbageKey);
  await refreshUntil(garbage, "the garbage record's dead letter");
  const garbageText = await garbage.textContent();
  assert.ok(garbageText.includes(COMMANDS) && garbageText.includes(`partition ${garbagePartition}`), garbageText);
  assert.equal((await garbage.locator(".dlq-status").textContent()).trim(), "open");
  await page.locator("#ops-dlq-badge").filter({ hasText: /^[1-9]\d*$/ }).waitFor();
  await shot("06-dlq-list");

  step = "dead letters: the garbage record's detail";
  await garbage.getByRole("link").click();
  await detail.getByRole("heading", { name: /^Dead letter / }).waitFor();
  await detail.locator("pre").filter({ hasText: "this is not JSON {" }).waitFor();
  assert.equal((await detail.locator("#ops-dlq-detail-status").textContent()).trim(), "open");
  assert.ok((await detail.locator("table.kv").last().textContent()).includes("sluice.error.class"), "the error headers are listed");

  step = "dead letters: discard needs a reason";
  await detail.getByRole("button", { name: "Discard", exact: true }).click();
  await detail.getByRole("button", { name: "Discard dead letter" }).click();
  await detail.getByText("Give a reason: it is kept with the outcome.").waitFor();
  assert.equal(await detail.getByLabel(/^Reason/).getAttribute("aria-invalid"), "true");
  await detail.getByLabel(/^Reason/).fill("Garbage from a test producer: nothing to process.");
  await shot("07-dlq-discard-reason");

  step = "dead letters: discard";
  await detail.getByRole("button", { name: "Discard dead letter" }).click();
  const outcome = page.locator("#ops-dlq-outcome");
  await outcome.filter({ hasText: `Discarded by ${operatorName}` }).waitFor({ timeout: 15000 });
  assert.match(await outcome.textContent(), /Garbage from a test producer/);
  assert.equal((await detail.locator("#ops-dlq-detail-status").textContent()).trim(), "discarded");
  assert.equal(await detail.getByRole("button", { name: "Discard", exact: true }).count(), 0, "a handled dead letter has no actions");
  await garbage.waitFor({ state: "detached" });
  await dlq.getByLabel("Show").selectOption("all");
  await garbage.filter({ hasText: "discarded" }).waitFor();
  await shot("08-dlq-discarded");
  await dlq.getByLabel("Show").selectOption("open");

  // ------------------------------------------------------------ 3. a misrouted transfer, replayed
  step = "dead letters: a transfer on the wrong partition";
  await deposit(payer.user_id, "100.00");
  const right = partitionFor(payer.user_id, partitions);
  const wrong = (right + 1) % partitions;
  const transferId = `t-ops-${run}`;
  const transfer = { event_id: transferId, payload: { type: "Transfer", payee_user_id: payee.user_id, amount: "15.00", currency: "GBP" } };
  // As kcat with librdkafka's default CRC32 partitioner might place it: not where murmur2 says.
  produce(COMMANDS, payer.user_id, wrong, JSON.stringify(transfer), { authorization: `Bearer ${payer.access_token}` });
  const misrouted = dlqRow(payer.user_id);
  await refreshUntil(misrouted, "the misrouted transfer's dead letter");
  const misroutedText = await misrouted.textContent();
  assert.ok(misroutedText.includes("wrong_partition") && misroutedText.includes(`partition ${wrong}`), misroutedText);
  assert.equal(await balance(payee.access_token), "0.00", "nothing reached the payee");
  assert.notEqual((await http("GET", `/v1/commands/${transferId}`, payer.access_token)).body?.status, "settled");

  step = "dead letters: the misrouted transfer's detail";
  await misrouted.getByRole("link").click();
  await detail.getByRole("heading", { name: /^Dead letter / }).waitFor();
  await detail.locator("pre.json").filter({ hasText: payee.user_id }).waitFor();
  const decoded = await detail.locator("pre.json").textContent();
  assert.ok(decoded.includes('"Transfer"') && decoded.includes('"15.00"') && decoded.includes(transferId), decoded);
  await detail.locator('tr[data-header="authorization"]').first().waitFor();
  assert.ok(!(await detail.textContent()).includes(payer.access_token.split(".")[2]), "the bearer token is not shown");
  await detail.locator('tr[data-header="sluice.error.class"]').filter({ hasText: "wrong_partition" }).waitFor();
  await shot("09-dlq-wrong-partition");

  step = "dead letters: replay";
  await detail.getByRole("button", { name: `Replay to ${COMMANDS}` }).click();
  await detail.getByLabel(/^Reason/).fill("The producer uses murmur2_random now; replaying.");
  await detail.getByRole("button", { name: "Replay dead letter" }).click();
  await outcome.filter({ hasText: `Replayed to ${COMMANDS}, partition ${right} at offset` }).waitFor({ timeout: 15000 });
  assert.match(await outcome.textContent(), new RegExp(`by ${operatorName}`));
  assert.equal((await detail.locator("#ops-dlq-detail-status").textContent()).trim(), "replayed");
  await misrouted.waitFor({ state: "detached" });
  await shot("10-dlq-replayed");

  step = "the replayed transfer settles";
  const settledTransfer = await settle(`/v1/commands/${transferId}`, payer.access_token);
  assert.equal(settledTransfer.status, "settled", JSON.stringify(settledTransfer));
  assert.equal(await balance(payee.access_token), "15.00");
  assert.equal(await balance(payer.access_token), "85.00");
  await page.locator("#ops-nav").getByRole("link", { name: "Users" }).click();
  await users.getByLabel("Email or user id").fill(payee.email);
  await users.getByRole("button", { name: "Find" }).click();
  await page.locator("#ops-user-balance").filter({ hasText: "15.00 GBP" }).waitFor({ timeout: 15000 });
  await page.locator("#ops-user-transactions tbody tr").first().filter({ hasText: "+15.00" }).waitFor();
  await shot("11-payee-credited");

  // ------------------------------------------------------------ 4. topology and topics
  step = "topology";
  const topology = (await http("GET", "/v1/ops/topology", OPERATOR)).body;
  await page.locator("#ops-nav").getByRole("link", { name: "Topology" }).click();
  await page.getByRole("heading", { name: "Topology" }).waitFor();
  const graphs = page.locator("#ops-topology-graphs");
  await graphs.locator("svg g.subtopology").first().waitFor();
  assert.equal(await graphs.locator("svg g.subtopology").count(), topology.subtopologies.length, "one box per sub-topology");
  const nodeCount = topology.subtopologies.reduce((n, s) => n + s.nodes.length, 0);
  assert.equal(await graphs.locator("svg g.node").count(), nodeCount, "one shape per node");
  await graphs.locator('svg g.node[data-node="json-bridge"]').waitFor();
  const repartition = topology.topics.find((t) => t.kind === "repartition");
  assert.ok(repartition, "the topology has a repartition topic");
  assert.ok(await graphs.locator(`svg g.topic.repartition[data-topic="${repartition.name}"]`).count() >= 2, `${repartition.name} is drawn where it is written and where it is read`);
  assert.ok(await graphs.locator("svg g.store").count() >= 1, "stores are drawn");
  assert.ok(await graphs.locator("svg g.topic.changelog").count() >= 1, "changelog topics are drawn");
  assert.ok(await graphs.locator("svg path.edge").count() >= nodeCount - topology.subtopologies.length, "edges are drawn");
  const bridgeSub = topology.subtopologies.findIndex((s) => s.nodes.some((n) => n.name === "json-bridge"));
  const textAlternative = graphs.locator("details.text-alt").nth(bridgeSub);
  await textAlternative.locator("summary").click();
  await textAlternative.locator('li[data-node="json-bridge"]').waitFor();
  // A wide graph scrolls in its own box, not the page.
  const pageOverflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  assert.ok(pageOverflow <= 0, `the topology page is ${pageOverflow}px too wide`);
  await page.setViewportSize({ width: 1600, height: 900 });
  await shot("12-topology");
  await page.setViewportSize({ width: 1100, height: 900 });

  step = "topics";
  await page.locator("#ops-nav").getByRole("link", { name: "Topics", exact: true }).click();
  await page.getByRole("heading", { name: "Topics", exact: true }).waitFor();
  const settledRow = page.locator('#ops-topics-table tbody tr[data-topic="payments.settled"]');
  await settledRow.waitFor();
  await shot("13-topics");
  await settledRow.getByRole("link", { name: "payments.settled" }).click();
  const topicDetail = page.locator("#ops-topic-detail");
  await topicDetail.getByRole("heading", { name: "payments.settled" }).waitFor();
  const settledTopic = (await http("GET", "/v1/ops/topics/payments.settled", OPERATOR)).body;
  await page.locator("#ops-topic-partitions tbody tr[data-partition]").nth(settledTopic.partitions.length - 1).waitFor();
  assert.equal(await page.locator("#ops-topic-partitions tbody tr[data-partition]").count(), settledTopic.partitions.length);
  assert.ok(await page.locator("#ops-topic-configs tbody tr[data-config]").count() > 0, "configs are listed");
  await page.locator("#ops-topic-records .record").first().waitFor({ timeout: 15000 });
  const records = await page.locator("#ops-topic-records .record").allTextContents();
  assert.ok(records.some((r) => /"(amount|command_id)"/.test(r)), `decoded records: ${records.slice(0, 2).join("\n")}`);
  await shot("14-topic-records");

  step = "topics: the partition filter";
  const payerPartition = partitionFor(payer.user_id, settledTopic.partitions.length);
  await topicDetail.getByLabel("Partition", { exact: true }).selectOption(String(payerPartition));
  await page.waitForFunction((p) => {
    const shown = [...document.querySelectorAll("#ops-topic-records .record")];
    return shown.length > 0 && shown.every((r) => r.dataset.partition === String(p));
  }, payerPartition, { timeout: 15000 });
  await topicDetail.getByRole("button", { name: "Refresh" }).click();
  await page.locator("#ops-topic-records .record").filter({ hasText: payer.user_id }).first().waitFor({ timeout: 15000 });

  step = "topics: no password hash from the users changelog";
  const changelogRecords = await fetch(`${API}/v1/ops/topics/sluice-users-changelog/records?limit=50`, { headers: { authorization: `Bearer ${OPERATOR}` } });
  const changelogText = await changelogRecords.text();
  assert.ok(!changelogText.includes("$argon2"), "the API never sends a password hash");
  const topicList = (await http("GET", "/v1/ops/topics", OPERATOR)).body.topics;
  if (topicList.some((t) => t.name === "sluice-users-changelog")) {
    await topicDetail.getByRole("link", { name: "All topics" }).click();
    await page.locator('#ops-topics-table tbody tr[data-topic="sluice-users-changelog"]').getByRole("link").click();
    await topicDetail.getByRole("heading", { name: "sluice-users-changelog" }).waitFor();
    // Its records shown (redacted), or refused: either way, no hash.
    await page.locator("#ops-topic-records .record, #ops-topic-records .problem, #ops-topic-problem:not([hidden])").first().waitFor({ timeout: 15000 });
    assert.ok(!(await page.locator("main").textContent()).includes("$argon2"), "no password hash on the page");
    const redacting = changelogRecords.status === 200 && JSON.parse(changelogText).records.some((r) => (r.redacted || []).length > 0);
    if (redacting) assert.ok(await page.locator("#ops-topic-records .redacted").count() > 0, "redacted fields are marked");
    await shot("15-users-changelog");
  }

  // ------------------------------------------------------------ 5. lag while paused
  step = "consumers";
  await page.locator("#ops-nav").getByRole("link", { name: "Consumers & instances" }).click();
  await page.getByRole("heading", { name: "Consumers & instances" }).waitFor();
  await sluiceLag.waitFor();
  await page.locator("#ops-instances tbody tr[data-instance]").first().waitFor();
  // Idle, the group has caught up (the views refresh every 2 s).
  let baseline = await lagNow();
  for (let i = 0; i < 30 && baseline > 0; i++) {
    await sleep(1000);
    baseline = Math.min(baseline, await lagNow());
  }
  if (baseline > 0) console.warn(`note: the sluice group's lag stays at ${baseline} when idle`);
  await shot("16-consumers");

  step = "pause processing";
  await consumers.getByRole("button", { name: "Pause processing" }).click();
  await consumers.getByRole("button", { name: "Resume processing" }).waitFor();
  await page.locator("#ops-processing").filter({ hasText: "Paused" }).waitFor();
  const statusUrls = [];
  for (let i = 0; i < 30; i++) {
    const accepted = await http("POST", "/v1/deposits", OPERATOR, { user_id: olive.user_id, amount: "1.00" });
    assert.equal(accepted.status, 202, JSON.stringify(accepted.body));
    statusUrls.push(accepted.body.status_url);
  }
  // No reload: the view polls.
  await page.waitForFunction(([selector, base]) => {
    const shown = document.querySelector(selector);
    return shown && Number(shown.textContent.replace(/[^\d]/g, "")) > base;
  }, ['#ops-groups tbody tr[data-group="sluice"] td.lag', baseline], { timeout: 30000 });
  assert.notEqual((await http("GET", statusUrls.at(-1), OPERATOR)).body.status, "settled", "nothing is processed while paused");
  await shot("17-consumers-paused");

  step = "resume processing";
  await consumers.getByRole("button", { name: "Resume processing" }).click();
  await consumers.getByRole("button", { name: "Pause processing" }).waitFor();
  await page.locator("#ops-processing").filter({ hasText: "Running" }).waitFor();
  await page.waitForFunction(([selector, base]) => {
    const shown = document.querySelector(selector);
    return shown && Number(shown.textContent.replace(/[^\d]/g, "")) <= base;
  }, ['#ops-groups tbody tr[data-group="sluice"] td.lag', baseline], { timeout: 60000 });
  for (const url of statusUrls) assert.equal((await settle(url, OPERATOR)).status, "settled");
  assert.equal((await http("GET", `/v1/ops/users/${encodeURIComponent(olive.email)}`, OPERATOR)).body.account.balance, "70.00");

  step = "sparklines";
  assert.ok(await page.locator("#ops-sparks .spark").count() >= 4, "throughput and latency sparklines");
  await page.waitForFunction(() => ["records_per_s", "commands_per_s"].every((metric) => {
    const card = document.querySelector(`#ops-sparks .spark[data-metric="${metric}"]`);
    return card && /\d/.test(card.querySelector(".spark-value").textContent) && card.querySelector("polyline").getAttribute("points").trim().split(/\s+/).length >= 2;
  }), null, { timeout: 20000 });
  await page.locator("#ops-sparks .spark").filter({ hasText: "Latency p99" }).waitFor();
  await shot("18-consumers-resumed");

  step = "the live view stops polling when left";
  await page.locator("#ops-nav").getByRole("link", { name: "Topics", exact: true }).click();
  await page.getByRole("heading", { name: "Topics", exact: true }).waitFor();
  await sleep(500);
  let polls = 0;
  const countPolls = (request) => { if (request.url().includes("/v1/ops/groups")) polls++; };
  page.on("request", countPolls);
  await sleep(4500);
  page.off("request", countPolls);
  assert.equal(polls, 0, "no polling once the consumers view is closed");

  // ------------------------------------------------------------ 6. a phone-sized screen
  step = "a phone-sized screen";
  await page.setViewportSize({ width: 390, height: 844 });
  await page.locator("#ops-nav").getByRole("link", { name: "Dead letters" }).click();
  await dlq.getByLabel("Show").selectOption("all");
  await dlqRow(payer.user_id).waitFor();
  await noSidewaysScroll("the dead letters");
  await shot("19-dlq-phone");
  await dlqRow(payer.user_id).getByRole("link").click();
  await detail.getByRole("heading", { name: /^Dead letter / }).waitFor();
  await detail.locator("pre.json").waitFor();
  await noSidewaysScroll("a dead letter");
  await shot("20-dlq-detail-phone");
  await page.locator("#ops-nav").getByRole("link", { name: "Consumers & instances" }).click();
  await sluiceLag.waitFor();
  await page.locator("#ops-sparks .spark").first().waitFor();
  await noSidewaysScroll("consumers and instances");
  await shot("21-consumers-phone");
  await page.setViewportSize({ width: 1100, height: 900 });

  // ------------------------------------------------------------ a token the API refuses, sign out
  step = "a token the API no longer accepts";
  await page.evaluate(() => {
    const stored = JSON.parse(sessionStorage.getItem("sluice.operator"));
    const [head, claims, signature] = stored.token.split(".");
    // Another signature: as if the token were made with another key.
    stored.token = `${head}.${claims}.${signature.slice(0, 4)}${signature[4] === "x" ? "y" : "x"}${signature.slice(5)}`;
    sessionStorage.setItem("sluice.operator", JSON.stringify(stored));
  });
  await page.locator("#ops-nav").getByRole("link", { name: "Topology" }).click();
  await page.getByRole("heading", { name: "Operator sign-in" }).waitFor();
  await page.getByText("The API no longer accepts the operator token").waitFor();
  assert.equal(await page.locator("#ops-nav").isHidden(), true);
  assert.equal(await page.evaluate(() => sessionStorage.getItem("sluice.operator")), null);
  await shot("22-token-refused");

  step = "sign in again, then sign out";
  await tokenField.fill(OPERATOR);
  await page.getByRole("button", { name: "Sign in as operator" }).click();
  // Back where the refused token left off.
  await page.getByRole("heading", { name: "Topology" }).waitFor();
  await page.locator("#ops-nav").getByRole("button", { name: "Sign out" }).click();
  await page.getByText("You signed out of the operator console.").waitFor();
  assert.equal(await page.evaluate(() => sessionStorage.getItem("sluice.operator")), null);
  await page.goto(`${API}/#/ops/dlq`);
  await page.getByRole("heading", { name: "Operator sign-in" }).waitFor();

  assert.deepEqual(errors, [], "no script errors");
  console.log(`operator console test passed; screenshots in ${SHOTS}`);
} catch (error) {
  await shot("failure").catch(() => {});
  console.error(`operator console test failed at step "${step}": ${error.stack || error}`);
  console.error(`page errors: ${JSON.stringify(errors)}; flash: ${await page.locator("#flash").textContent().catch(() => "?")}`);
  process.exitCode = 1;
} finally {
  await browser.close();
}
