// Sends one message with Node's built-in fetch (Node 18+). POSTHORN_URL (default
// http://127.0.0.1:8080) and POSTHORN_TOKEN (a token with the send scope) come from the environment;
// TO and FROM may too.
import { randomUUID } from "node:crypto";
import { setTimeout as sleep } from "node:timers/promises";

const url = process.env.POSTHORN_URL ?? "http://127.0.0.1:8080";
const token = process.env.POSTHORN_TOKEN;
if (!token) throw new Error("set POSTHORN_TOKEN to a token with the send scope");
const message = {
  from: process.env.FROM ?? "Shop <shop@example.com>",
  to: [process.env.TO ?? "customer@example.org"],
  subject: "Hello from Node",
  text: "Sent with fetch.",
};
// One key per message: a retry after a timeout or a 429 is recognised, never sent twice.
const key = randomUUID();

for (let attempt = 1; attempt <= 5; attempt++) {
  let response;
  try {
    response = await fetch(`${url}/v1/send`, {
      method: "POST",
      headers: { Authorization: `Bearer ${token}`, "Idempotency-Key": key, "Content-Type": "application/json" },
      body: JSON.stringify(message),
    });
  } catch {
    await sleep(attempt * 1000);
    continue;
  }
  if (response.status === 200 || response.status === 202) {
    console.log((await response.json()).id);
    process.exit(0);
  }
  if (response.status === 429 || response.status === 503) {
    await sleep(Number(response.headers.get("Retry-After") ?? attempt) * 1000);
    continue;
  }
  // Every refusal is an RFC 9457 problem document with a stable type.
  const problem = await response.json();
  console.error(`refused: ${response.status} ${problem.type}: ${problem.detail}`);
  process.exit(1);
}
console.error("gave up after 5 attempts");
process.exit(1);
