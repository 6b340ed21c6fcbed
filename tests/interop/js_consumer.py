#!/usr/bin/env python3
"""A Python service joining Switchyard's event log: its own durable pull consumer on ORDERS.

It proves another language can consume the same events with nothing but the documented stream,
subjects and JSON: it creates the durable consumer `python-reader` on `events.orders.created.*`,
fetches, checks each event's fields, acks, and prints one line per order.

    python js_consumer.py --url nats://127.0.0.1:<port> --expect 3
"""

import argparse
import asyncio
import json
import sys

import nats
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy


async def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--expect", type=int, required=True, help="created events to read")
    args = parser.parse_args()

    nc = await nats.connect(args.url, name="python-reader")
    js = nc.jetstream()
    try:
        info = await js.stream_info("ORDERS")
        print(f"stream ORDERS: {info.state.messages} messages")
        sub = await js.pull_subscribe(
            "events.orders.created.*",
            durable="python-reader",
            stream="ORDERS",
            config=ConsumerConfig(ack_policy=AckPolicy.EXPLICIT, deliver_policy=DeliverPolicy.ALL, max_deliver=5),
        )
        seen = []
        while len(seen) < args.expect:
            for msg in await sub.fetch(args.expect - len(seen), timeout=5):
                event = json.loads(msg.data)
                for field in ("event_id", "order_id", "user_id", "items", "created_at"):
                    if field not in event:
                        print(f"FAIL: event lacks {field}: {event}", file=sys.stderr)
                        sys.exit(1)
                if msg.subject != f"events.orders.created.{event['order_id']}":
                    print(f"FAIL: the order id is not the last subject token: {msg.subject}", file=sys.stderr)
                    sys.exit(1)
                if msg.headers is None or msg.headers.get("Nats-Msg-Id") != event["event_id"]:
                    print(f"FAIL: Nats-Msg-Id is not the event id: {msg.headers}", file=sys.stderr)
                    sys.exit(1)
                if "traceparent" not in (msg.headers or {}):
                    print("FAIL: no traceparent header", file=sys.stderr)
                    sys.exit(1)
                await msg.ack()
                seen.append(event["order_id"])
                print(f"created {event['order_id']} items={json.dumps(event['items'])} seq={msg.metadata.sequence.stream}")
        consumer = await js.consumer_info("ORDERS", "python-reader")
        print(f"python-reader: delivered {consumer.delivered.consumer_seq}, pending {consumer.num_pending}")
    finally:
        await nc.drain()
    print("python consumer: all checks passed")


if __name__ == "__main__":
    asyncio.run(main())
