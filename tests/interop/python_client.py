#!/usr/bin/env python3
"""A Python client of Switchyard with nothing but the published contract (nats-py, jsonschema).

Logged in as `partner` (nats.conf's user for other teams' clients), it:
- discovers the services through $SRV.PING and $SRV.INFO;
- calls inventory.check and inventory.stock, and gets a micro error for a bad request;
- places an order over HTTP (POST /orders) and reads it back with orders.get;
- reads that order's lifecycle (created, stock_committed, confirmation_sent) through its own
  durable consumer `partner` on ORDERS, acking each event;
and validates every payload it sends and receives against the JSON Schemas in
shared/contracts/schemas and against the AsyncAPI document's messages (shared/contracts/asyncapi.json).

    python python_client.py --url nats://127.0.0.1:<port> --password ... --http-url http://127.0.0.1:8080 --sku A-1

Prints one line per check; exits 1 at the first failure.
"""

import argparse
import asyncio
import json
import pathlib
import sys
import urllib.request

import jsonschema
import nats
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

ROOT = pathlib.Path(__file__).resolve().parents[2]
SCHEMAS = ROOT / "shared" / "contracts" / "schemas"
ASYNCAPI = json.loads((ROOT / "shared" / "contracts" / "asyncapi.json").read_text())


def check(name, value):
    """Validates `value` against the JSON Schema `name` (shared/contracts/schemas/<name>.json)."""
    schema = json.loads((SCHEMAS / f"{name}.json").read_text())
    jsonschema.validators.validator_for(schema)(schema).validate(value)


def check_message(message, value):
    """Validates `value` against the payload of the AsyncAPI document's message `message`."""
    payload = ASYNCAPI["components"]["messages"][message]["payload"]["$ref"]
    schema = {"$ref": payload, "components": ASYNCAPI["components"]}
    jsonschema.Draft7Validator(schema).validate(value)


def ok(text):
    print(f"ok: {text}", flush=True)


async def request(nc, subject, body, schema_in, schema_out, message):
    check(schema_in, body)
    check_message(f"{message}Request", body)
    reply = await nc.request(subject, json.dumps(body).encode(), timeout=5)
    if reply.headers and "Nats-Service-Error-Code" in reply.headers:
        raise SystemExit(f"{subject} answered an error: {reply.headers} {reply.data!r}")
    value = json.loads(reply.data)
    check(schema_out, value)
    check_message(f"{message}Reply", value)
    return value


async def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--user", default="partner")
    parser.add_argument("--password", required=True)
    parser.add_argument("--http-url", required=True)
    parser.add_argument("--sku", required=True)
    args = parser.parse_args()

    nc = await nats.connect(args.url, user=args.user, password=args.password, inbox_prefix=f"_INBOX_{args.user}".encode(), name="python-client")
    try:
        # Discovery.
        inbox = nc.new_inbox()
        sub = await nc.subscribe(inbox)
        await nc.publish("$SRV.PING", b"", reply=inbox)
        names = set()
        try:
            while True:
                message = await sub.next_msg(timeout=0.5)
                names.add(json.loads(message.data)["name"])
        except nats.errors.TimeoutError:
            pass
        await sub.unsubscribe()
        assert {"inventory", "orders", "audit", "email"} <= names, names
        info = json.loads((await nc.request("$SRV.INFO.inventory", b"", timeout=5)).data)
        subjects = {endpoint["subject"] for endpoint in info["endpoints"]}
        assert {"inventory.check", "inventory.stock"} <= subjects, subjects
        ok(f"discovered {sorted(names)}; inventory serves {sorted(subjects)}")

        # Requests, their replies and an error, each against its schema.
        checked = await request(nc, "inventory.check", {"items": [{"sku": args.sku, "quantity": 1}]}, "inventory.check.request", "inventory.check.reply", "inventoryCheck")
        assert checked["all_available"] is True, checked
        stock = await request(nc, "inventory.stock", {"skus": [args.sku]}, "inventory.stock.request", "inventory.stock.reply", "inventoryStock")
        ok(f"inventory.check says available; inventory.stock: {stock}")
        bad = await nc.request("inventory.check", b'{"items":[]}', timeout=5)
        assert bad.headers and bad.headers.get("Nats-Service-Error-Code") == "400", bad.headers
        error = json.loads(bad.data)
        check("error", error)
        check_message("serviceError", error)
        ok(f"a bad request gets micro error 400: {error['error']}")

        # An order over HTTP.
        body = {"user_id": "python", "email": "python@example.com", "items": [{"sku": args.sku, "quantity": 1}]}
        check("http.create_order", body)
        http = urllib.request.Request(f"{args.http_url}/orders", data=json.dumps(body).encode(), headers={"content-type": "application/json"}, method="POST")
        with urllib.request.urlopen(http, timeout=10) as response:
            assert response.status == 201, response.status
            order = json.loads(response.read())
        check("order", order)
        ok(f"placed order {order['id']} over HTTP")
        got = await request(nc, "orders.get", {"order_id": order["id"]}, "orders.get.request", "order", "ordersGet")
        assert got["id"] == order["id"], got
        ok(f"orders.get answers the order ({got['status']})")

        # Its lifecycle, through the client's own durable consumer.
        js = nc.jetstream()
        await js.add_consumer(
            "ORDERS",
            ConsumerConfig(
                name="partner",
                durable_name="partner",
                filter_subject=f"events.orders.*.{order['id']}",
                ack_policy=AckPolicy.EXPLICIT,
                deliver_policy=DeliverPolicy.ALL,
            ),
        )
        consumer = await js.pull_subscribe_bind("partner", stream="ORDERS")
        seen = []
        deadline = asyncio.get_running_loop().time() + 20
        while len(seen) < 3 and asyncio.get_running_loop().time() < deadline:
            try:
                messages = await consumer.fetch(3 - len(seen), timeout=2)
            except nats.errors.TimeoutError:
                continue
            for message in messages:
                kind = message.subject.split(".")[2]
                event = json.loads(message.data)
                assert message.headers and message.headers.get("Nats-Msg-Id") == event["event_id"], message.headers
                if kind == "created":
                    check("events.orders.created", event)
                    check_message("orderCreated", event)
                else:
                    check("events.orders.lifecycle", event)
                    check_message("orderLifecycle", event)
                assert event["order_id"] == order["id"], event
                await message.ack()
                seen.append(kind)
        assert sorted(seen) == ["confirmation_sent", "created", "stock_committed"], seen
        ok(f"read the order's lifecycle through durable `partner`: {seen}")
        print("python client: all checks passed", flush=True)
    finally:
        await nc.drain()


if __name__ == "__main__":
    asyncio.run(main())
