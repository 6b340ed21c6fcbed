// A TypeScript client of Switchyard with nothing but the published contract (@nats-io/transport-node,
// @nats-io/jetstream, ajv). Logged in as `partner` (nats.conf's user for other teams' clients), it:
// - discovers the services through $SRV.PING and $SRV.INFO;
// - calls inventory.check and orders.get, and gets a micro error for a bad request;
// - places an order over HTTP;
// - reads that order's lifecycle (created, stock_committed, confirmation_sent) through its own
//   durable consumer `partner` on ORDERS, acking each event;
// and validates every payload it sends and receives against the JSON Schemas in
// shared/contracts/schemas and the AsyncAPI document's messages (shared/contracts/asyncapi.json).
//
//   npx tsc -p . && node dist/client.js --url nats://127.0.0.1:4222 --password ... --http-url http://127.0.0.1:8080 --sku A-1
//
// Prints one line per check; exits 1 at the first failure.
import { readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";

import { AckPolicy, DeliverPolicy, jetstream, jetstreamManager } from "@nats-io/jetstream";
import { connect, createInbox } from "@nats-io/transport-node";
import { Ajv2020 } from "ajv/dist/2020.js";

const root = join(dirname(fileURLToPath(import.meta.url)), "..", "..", "..", "..");
const schemas = join(root, "shared", "contracts", "schemas");
const asyncapi = JSON.parse(readFileSync(join(root, "shared", "contracts", "asyncapi.json"), "utf8"));

const ajv = new Ajv2020({ strict: false, allErrors: true, validateFormats: false });
ajv.addSchema(asyncapi, "asyncapi");

function ok(text: string): void {
  console.log(`ok: ${text}`);
}

/** Validates `value` against shared/contracts/schemas/<name>.json. */
function check(name: string, value: unknown): void {
  const schema = JSON.parse(readFileSync(join(schemas, `${name}.json`), "utf8"));
  const validate = ajv.compile(schema);
  if (!validate(value)) throw new Error(`${name}: ${JSON.stringify(validate.errors)} in ${JSON.stringify(value)}`);
}

/** Validates `value` against the payload of the AsyncAPI document's message `message`. */
function checkMessage(message: string, value: unknown): void {
  const payload: string = asyncapi.components.messages[message].payload.$ref;
  const validate = ajv.getSchema(`asyncapi${payload}`);
  if (!validate) throw new Error(`no schema ${payload} in the AsyncAPI document`);
  if (!validate(value)) throw new Error(`${message}: ${JSON.stringify(validate.errors)} in ${JSON.stringify(value)}`);
}

const { values: args } = parseArgs({
  options: {
    url: { type: "string" },
    user: { type: "string", default: "partner" },
    password: { type: "string" },
    "http-url": { type: "string" },
    sku: { type: "string" },
  },
});
if (!args.url || !args.password || !args["http-url"] || !args.sku) {
  console.error("usage: client.js --url URL --password PW --http-url URL --sku SKU [--user partner]");
  process.exit(2);
}
const inboxPrefix = `_INBOX_${args.user}`;
const nc = await connect({ servers: args.url, user: args.user, pass: args.password, inboxPrefix, name: "ts-client" });
try {
  // Discovery.
  const inbox = createInbox(inboxPrefix);
  const replies = nc.subscribe(inbox, { timeout: 1000 });
  nc.publish("$SRV.PING", "", { reply: inbox });
  const names = new Set<string>();
  const deadline = setTimeout(() => replies.unsubscribe(), 700);
  try {
    for await (const reply of replies) names.add(reply.json<{ name: string }>().name);
  } catch {
    // The subscription's idle timeout ends the discovery.
  }
  clearTimeout(deadline);
  for (const name of ["inventory", "orders", "audit", "email"]) {
    if (!names.has(name)) throw new Error(`service ${name} not discovered: ${[...names]}`);
  }
  const info = (await nc.request("$SRV.INFO.inventory", "", { timeout: 5000 })).json<{ endpoints: { subject: string }[] }>();
  const subjects = info.endpoints.map((e) => e.subject).sort();
  if (!subjects.includes("inventory.check")) throw new Error(`inventory endpoints: ${subjects}`);
  ok(`discovered ${[...names].sort().join(", ")}; inventory serves ${subjects.join(", ")}`);

  // A request and its reply, each against its schema.
  const checkRequest = { items: [{ sku: args.sku, quantity: 1 }] };
  check("inventory.check.request", checkRequest);
  checkMessage("inventoryCheckRequest", checkRequest);
  const checked = (await nc.request("inventory.check", JSON.stringify(checkRequest), { timeout: 5000 })).json<{ all_available: boolean }>();
  check("inventory.check.reply", checked);
  checkMessage("inventoryCheckReply", checked);
  if (!checked.all_available) throw new Error(`not available: ${JSON.stringify(checked)}`);
  ok("inventory.check says available");

  // A micro error.
  const bad = await nc.request("inventory.check", '{"items":[]}', { timeout: 5000 });
  if (bad.headers?.get("Nats-Service-Error-Code") !== "400") throw new Error(`no 400 micro error: ${bad.headers}`);
  const error = bad.json<{ error: string }>();
  check("error", error);
  checkMessage("serviceError", error);
  ok(`a bad request gets micro error 400: ${error.error}`);

  // An order over HTTP, then orders.get.
  const body = { user_id: "typescript", email: "ts@example.com", items: [{ sku: args.sku, quantity: 1 }] };
  check("http.create_order", body);
  const response = await fetch(`${args["http-url"]}/orders`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body) });
  if (response.status !== 201) throw new Error(`POST /orders: ${response.status} ${await response.text()}`);
  const order = (await response.json()) as { id: string };
  check("order", order);
  ok(`placed order ${order.id} over HTTP`);
  const getRequest = { order_id: order.id };
  check("orders.get.request", getRequest);
  checkMessage("ordersGetRequest", getRequest);
  const got = (await nc.request("orders.get", JSON.stringify(getRequest), { timeout: 5000 })).json<{ id: string; status: string }>();
  check("order", got);
  checkMessage("ordersGetReply", got);
  if (got.id !== order.id) throw new Error(`orders.get answered ${JSON.stringify(got)}`);
  ok(`orders.get answers the order (${got.status})`);

  // Its lifecycle, through the client's own durable consumer.
  const jsm = await jetstreamManager(nc);
  await jsm.consumers.add("ORDERS", {
    name: "partner",
    durable_name: "partner",
    filter_subject: `events.orders.*.${order.id}`,
    ack_policy: AckPolicy.Explicit,
    deliver_policy: DeliverPolicy.All,
  });
  const consumer = await jetstream(nc).consumers.get("ORDERS", "partner");
  const seen: string[] = [];
  const until = Date.now() + 20_000;
  while (seen.length < 3 && Date.now() < until) {
    const messages = await consumer.fetch({ max_messages: 3 - seen.length, expires: 2000 });
    for await (const message of messages) {
      const kind = message.subject.split(".")[2];
      const event = message.json<{ event_id: string; order_id: string }>();
      if (message.headers?.get("Nats-Msg-Id") !== event.event_id) throw new Error(`Nats-Msg-Id is not the event id: ${message.headers}`);
      if (kind === "created") {
        check("events.orders.created", event);
        checkMessage("orderCreated", event);
      } else {
        check("events.orders.lifecycle", event);
        checkMessage("orderLifecycle", event);
      }
      if (event.order_id !== order.id) throw new Error(`another order's event: ${JSON.stringify(event)}`);
      message.ack();
      seen.push(kind);
    }
  }
  if (seen.sort().join(",") !== "confirmation_sent,created,stock_committed") throw new Error(`lifecycle: ${seen}`);
  ok(`read the order's lifecycle through durable \`partner\`: ${seen.join(", ")}`);
  console.log("typescript client: all checks passed");
} finally {
  await nc.drain();
}
