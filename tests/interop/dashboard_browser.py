#!/usr/bin/env python3
"""The dashboard in a real headless browser (Playwright driving the system's Chromium).

Against a stack `switchyard up --dashboard-actions` started by the Rust test
(cli/tests/cli/dashboard.rs), it checks what an operator sees:
- the page loads with no console error and shows every service up;
- orders placed here move the page's numbers within 2 s; an order lookup shows the order's
  lifecycle, live;
- a screenshot of the page while orders flow (--screenshot);
- inventory-service killed (SIGKILL): its card turns red, and after failed orders the orders
  service's breaker shows open;
- a poison event appears in the dead-letter list; "show" shows it; "replay" from the page removes
  it (it fails again: a new letter replaces it, as the message says); "purge all" empties the list.

    python dashboard_browser.py --dashboard http://127.0.0.1:8090 --http http://127.0.0.1:8080 \
        --nats nats://127.0.0.1:<port> --inventory-pid 1234 --screenshot page.png

Prints one line per step; exits 1 at the first check that fails.
"""

import argparse
import asyncio
import json
import os
import shutil
import signal
import sys
import threading
import time
import urllib.error
import urllib.request

import nats
from playwright.sync_api import sync_playwright


def post_order(http, sku="DEMO-A", quantity=1):
    body = json.dumps(
        {"user_id": "browser", "email": "browser@example.com", "items": [{"sku": sku, "quantity": quantity}]}
    ).encode()
    request = urllib.request.Request(
        f"{http}/orders", data=body, headers={"content-type": "application/json"}, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read() or b"{}")


async def publish_poison(url):
    nc = await nats.connect(url, user="ops", password="dev-ops", inbox_prefix=b"_INBOX_ops")
    js = nc.jetstream()
    await js.publish("events.orders.created.poison", b"{not json")
    await nc.drain()


def step(text):
    print(f"ok: {text}", flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dashboard", required=True)
    parser.add_argument("--http", required=True)
    parser.add_argument("--nats", required=True)
    parser.add_argument("--inventory-pid", type=int, required=True)
    parser.add_argument("--screenshot", required=True)
    args = parser.parse_args()

    chromium = os.environ.get("SWITCHYARD_CHROMIUM") or shutil.which("chromium")
    if not chromium:
        sys.exit("error: no Chromium (scripts/lib/tools.sh ensure_browser installs the Debian package)")
    errors = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1500, "height": 1100})
        try:
            check(page, args, errors)
        except Exception:
            failure = args.screenshot + ".failure.png"
            page.screenshot(path=failure, full_page=True)
            print(f"failed; the page as it was: {failure}", flush=True)
            raise
        browser.close()


def check(page, args, errors):
    """Every step against the page; raises at the first check that fails."""
    page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.on("dialog", lambda dialog: dialog.accept())

    page.goto(args.dashboard)
    page.wait_for_selector('body[data-nats="up"]', timeout=10_000)
    for service in ["inventory", "orders", "email", "audit"]:
        page.wait_for_selector(f'[data-service="{service}"][data-up="1"]', timeout=10_000)
    page.wait_for_selector('#streams tr[data-stream="ORDERS"]', timeout=5_000)
    page.wait_for_selector('#consumers tr[data-consumer="inventory"] canvas', timeout=5_000)
    assert not errors, f"console errors on load: {errors}"
    step("the page loads with every service up and no console error")

    # Orders placed here move the numbers within 2 s.
    page.wait_for_function("document.getElementById('orders-accepted-total').textContent !== ''")
    before = int(page.inner_text("#orders-accepted-total").replace(",", ""))
    placed = []
    for _ in range(5):
        status, order = post_order(args.http)
        assert status == 201, (status, order)
        placed.append(order["id"])
    sent = time.monotonic()
    page.wait_for_function(
        f"Number(document.getElementById('orders-accepted-total').textContent.replace(/,/g, '')) >= {before + 5}",
        timeout=2_000,
    )
    step(f"5 orders moved 'accepted' from {before} to {before + 5} within {time.monotonic() - sent:.2f} s")

    # The lookup shows the lifecycle as the consumers work.
    page.fill("#order-id", placed[0])
    page.click("#lookup button")
    for kind in ["created", "stock_committed", "confirmation_sent"]:
        page.wait_for_selector(f'#lifecycle tr[data-kind="{kind}"]', timeout=10_000)
    assert page.inner_text("#order-status") == "accepted"
    step("the order lookup shows created, stock_committed and confirmation_sent")

    # A screenshot while a demo's orders flow.
    flowing = threading.Event()

    def keep_ordering():
        while not flowing.is_set():
            post_order(args.http)
            time.sleep(0.02)

    feeder = threading.Thread(target=keep_ordering, daemon=True)
    feeder.start()
    time.sleep(4)
    page.screenshot(path=args.screenshot, full_page=True)
    flowing.set()
    feeder.join()
    step(f"screenshot written to {args.screenshot}")

    # inventory-service killed: red, then the caller's breaker opens after failed orders.
    os.kill(args.inventory_pid, signal.SIGKILL)
    page.wait_for_selector('[data-service="inventory"][data-up="0"].down', timeout=5_000)
    step("the killed inventory-service turned red")
    # The breaker opens once failures are half of its 10 s window (which still holds the
    # orders that just succeeded): order until the page shows it open.
    failed = []
    deadline = time.monotonic() + 25
    state = None
    while time.monotonic() < deadline:
        failed.append(post_order(args.http)[0])
        state = page.eval_on_selector('[data-breaker="inventory"]', "e => e.textContent")
        if state == "open":
            break
        time.sleep(0.2)
    assert state == "open", f"breaker {state} after {len(failed)} orders"
    assert all(status == 503 for status in failed), failed
    step(f"after {len(failed)} failed orders (503) the orders service's breaker shows open")

    # A poison event: in the list, shown, replayed from the page, purged.
    # (Playwright's sync API holds this thread's event loop: nats-py runs on another thread.)
    publisher = threading.Thread(target=lambda: asyncio.run(publish_poison(args.nats)))
    publisher.start()
    publisher.join()
    page.wait_for_function("document.querySelectorAll('#dlq tr[data-seq]').length >= 2", timeout=15_000)
    rows = page.query_selector_all("#dlq tr[data-seq]")
    seq = rows[0].get_attribute("data-seq")
    page.click(f'button[data-show="{seq}"]')
    page.wait_for_function("document.getElementById('letter').textContent.includes('poison')", timeout=5_000)
    step(f"the poison event is in the dead-letter list ({len(rows)} letters) and 'show' shows letter {seq}")
    page.click(f'button[data-replay="{seq}"]')
    page.wait_for_function(
        f"document.getElementById('message').textContent.includes('dead letter {seq} replayed')", timeout=15_000
    )
    page.wait_for_function(f"!document.querySelector('#dlq tr[data-seq=\"{seq}\"]')", timeout=5_000)
    step(f"replay from the page removed letter {seq}: {page.inner_text('#message')}")
    page.click("#dlq-purge")
    page.wait_for_function("document.getElementById('message').textContent.startsWith('purged')", timeout=10_000)
    page.wait_for_function("document.querySelectorAll('#dlq tr[data-seq]').length === 0", timeout=5_000)
    step(f"purge from the page emptied the list: {page.inner_text('#message')}")

    assert not errors, f"console errors: {errors}"
    step("no console error during the whole run")


if __name__ == "__main__":
    main()
