// Drives Piston's own JavaScript client (npm piston-client) against a server:
//   node piston_run.mjs SERVER_URL < calls.json
// calls.json is a list of calls, each ["runtimes"] or ["execute", ...arguments
// of client.execute]; what each returned is printed as one JSON list, in order.
import { readFileSync } from "node:fs";
import piston from "piston-client";

const [server] = process.argv.slice(2);
if (!server) {
  console.error("usage: node piston_run.mjs SERVER_URL < calls.json");
  process.exit(2);
}
const calls = JSON.parse(readFileSync(0, "utf8"));
const client = piston({ server });
const results = [];
for (const [method, ...args] of calls) {
  if (method !== "runtimes" && method !== "execute") {
    console.error(`unknown call ${method}`);
    process.exit(2);
  }
  const result = await client[method](...args);
  // The client hands back {success: false, error} when the request itself failed.
  if (result && result.success === false) {
    results.push({ success: false, error: String(result.error) });
  } else {
    results.push(result);
  }
}
process.stdout.write(JSON.stringify(results));
