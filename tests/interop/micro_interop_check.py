#!/usr/bin/env python3
"""A test of the suite, not a tool: a Python client (nats-py) discovers inventory-service over
the micro protocol and calls it, and checks the answers against a test stack whose stock it knows.

It proves a service written in Rust is discoverable and callable from another language with
nothing but the documented JSON contract. The suite runs it against a fresh inventory-service:

    python micro_interop_check.py --url nats://127.0.0.1:<port> --sku A-1 --available 5

Exits 0 when every check passes; prints what it saw either way. To look at a running stack, use
the nats CLI (see the README).
"""

import argparse
import asyncio
import json
import sys

import nats


async def micro_ls(nc, wait=0.5):
    """`nats micro ls`: every instance that answers $SRV.PING."""
    inbox = nc.new_inbox()
    sub = await nc.subscribe(inbox)
    await nc.publish("$SRV.PING", b"", reply=inbox)
    found = []
    try:
        while True:
            msg = await sub.next_msg(timeout=wait)
            found.append(json.loads(msg.data))
    except nats.errors.TimeoutError:
        pass
    await sub.unsubscribe()
    return found


async def micro_info(nc, name):
    """`nats micro info <name>`."""
    msg = await nc.request(f"$SRV.INFO.{name}", b"", timeout=2)
    return json.loads(msg.data)


async def req(nc, subject, body):
    """`nats req <subject> <body>`: returns (headers, parsed body)."""
    msg = await nc.request(subject, body.encode(), timeout=2)
    return (msg.headers or {}), json.loads(msg.data) if msg.data else None


def check(condition, message):
    if not condition:
        print(f"FAIL: {message}", file=sys.stderr)
        sys.exit(1)
    print(f"ok: {message}")


async def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True, help="NATS URL of the running stack")
    parser.add_argument("--sku", default="A-1", help="a SKU the inventory holds")
    parser.add_argument("--available", type=int, required=True, help="units of --sku available")
    args = parser.parse_args()

    nc = await nats.connect(args.url, name="micro-cli-py")
    try:
        pings = await micro_ls(nc)
        print("micro ls:", json.dumps([{"name": p["name"], "id": p["id"], "version": p["version"]} for p in pings]))
        check(any(p["name"] == "inventory" and p["type"] == "io.nats.micro.v1.ping_response" for p in pings),
              "inventory answers $SRV.PING")

        info = await micro_info(nc, "inventory")
        subjects = sorted(e["subject"] for e in info["endpoints"])
        print("micro info inventory:", json.dumps({"id": info["id"], "endpoints": subjects}))
        check(info["type"] == "io.nats.micro.v1.info_response", "$SRV.INFO.inventory is an info response")
        check("inventory.check" in subjects and "inventory.reserve" in subjects, "inventory lists its endpoints")
        check(all(e["queue_group"] == "q" for e in info["endpoints"]), "endpoints share the queue group q")

        body = json.dumps({"items": [{"sku": args.sku, "quantity": args.available}]})
        headers, reply = await req(nc, "inventory.check", body)
        print(f"req inventory.check {body}:", json.dumps(reply))
        check("Nats-Service-Error-Code" not in headers, "a valid check gets no error header")
        check(reply == {"all_available": True, "unavailable_ids": []}, "all available")

        body = json.dumps({"items": [{"sku": args.sku, "quantity": args.available + 1}, {"sku": "NO-SUCH", "quantity": 1}]})
        _, reply = await req(nc, "inventory.check", body)
        print(f"req inventory.check {body}:", json.dumps(reply))
        check(
            reply == {"all_available": False, "unavailable_ids": [args.sku, "NO-SUCH"], "unknown_ids": ["NO-SUCH"]},
            "short and unknown SKUs are unavailable, and the unknown one is named",
        )

        headers, reply = await req(nc, "inventory.check", "{not json")
        print("req inventory.check '{not json':", dict(headers), json.dumps(reply))
        check(headers.get("Nats-Service-Error-Code") == "400", "bad input gets micro error code 400")
        check(reply is not None and reply["code"] == 400 and reply["error"].startswith("invalid json"),
              "the error body is JSON naming the problem")

        headers, reply = await req(nc, "inventory.check", json.dumps({"items": [{"sku": "A", "quantity": 0}]}))
        check(headers.get("Nats-Service-Error-Code") == "400" and "quantity" in reply["error"],
              "a zero quantity is refused naming the field")
    finally:
        await nc.drain()
    print("interop: all checks passed")


if __name__ == "__main__":
    asyncio.run(main())
