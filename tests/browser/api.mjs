// What both browser tests share: the HTTP API as they call it beside the pages (JSON in and
// out, a bearer token, the wait for a command's outcome), and the browser with its page.
import assert from "node:assert/strict";
import { chromium } from "playwright-core";

export const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * Headless Chromium (`executablePath`) with one desktop-sized page. `errors` collects the page's
 * script errors and console errors; a refused request ("Failed to load resource") is not one.
 * With SLUICE_TRACE set, every request is printed with its status.
 */
export async function openBrowser(executablePath) {
  const browser = await chromium.launch({ executablePath, args: ["--no-sandbox", "--disable-dev-shm-usage"] });
  const page = await browser.newPage({ viewport: { width: 1100, height: 900 } });
  const errors = [];
  page.on("pageerror", (error) => errors.push(String(error)));
  page.on("requestfinished", async (request) => {
    if (process.env.SLUICE_TRACE) console.error(`${request.method()} ${request.url()} -> ${(await request.response())?.status()}`);
  });
  page.on("console", (message) => { if (message.type() === "error" && !message.text().startsWith("Failed to load resource")) errors.push(message.text()); });
  return { browser, page, errors };
}

/** The API at `base`, calling as the operator `operatorToken` where an operator is needed. */
export function apiClient(base, operatorToken) {
  async function http(method, path, token, body) {
    const response = await fetch(base + path, {
      method,
      headers: { ...(token ? { authorization: `Bearer ${token}` } : {}), ...(body ? { "content-type": "application/json" } : {}) },
      body: body ? JSON.stringify(body) : undefined,
    });
    return { status: response.status, body: await response.json().catch(() => null) };
  }

  // A command's final status (settled or rejected), polled every 250 ms for up to a minute.
  async function settle(statusUrl, token) {
    for (let i = 0; i < 240; i++) {
      const answer = await http("GET", statusUrl, token);
      if (answer.status === 200 && ["settled", "rejected"].includes(answer.body.status)) return answer.body;
      await sleep(250);
    }
    throw new Error(`no outcome for ${statusUrl}`);
  }

  // An operator's deposit to `userId`, waited for until it settles.
  async function deposit(userId, amount) {
    const accepted = await http("POST", "/v1/deposits", operatorToken, { user_id: userId, amount });
    assert.equal(accepted.status, 202, JSON.stringify(accepted.body));
    assert.equal((await settle(accepted.body.status_url, operatorToken)).status, "settled");
  }

  return { http, settle, deposit };
}
