#!/usr/bin/env python3
"""The dashboard in a real browser, against a real three-relay mesh.

Starts three `sdk_relay` processes (the binary given, ephemeral loopback ports, each
configured with the other two as peers), opens relay-1's `GET /dashboard` in Debian's
headless chromium through chromium-driver (Selenium), and checks what an operator sees:

1. the graph shows all three relays, healthy, and the three links between them;
2. notifications published over a WebSocket to relay-1 move the chart (its peak rate,
   which the page writes on the canvas as `data-peak`, goes above zero);
3. relay-3 killed (SIGKILL) turns unreachable on the page, and an alert names it;
4. the page laid out on a phone-sized window still shows the three relays;
5. the browser's console holds no error, all along.

Screenshots of each step go to the artefact directory (default
target/browser-artifacts/). Every wait has a deadline and the whole run an alarm, so it
ends by itself; the relays are killed whatever happens.

    scripts/browser-test.py path/to/sdk_relay [--artifacts DIR] [--docs DIR]

`--docs DIR` also writes the small screenshots the README shows.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import websockets
from selenium import webdriver
from selenium.webdriver.chrome.service import Service

RUN_BUDGET_SECS = 240
WAIT_SECS = 45
RELAYS = 3


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Relay:
    def __init__(self, binary: str, index: int, root: Path):
        self.binary = binary
        self.id = f"relay-{index}"
        self.ws = f"127.0.0.1:{free_port()}"
        self.http = f"127.0.0.1:{free_port()}"
        self.dir = root / self.id
        self.dir.mkdir()
        self.process: subprocess.Popen | None = None

    def start(self, peers: list[str]) -> None:
        config = self.dir / "relay.toml"
        # Short sync intervals so a killed relay turns unreachable within seconds.
        config.write_text(
            "[sync]\ninterval = 1\nhealth_interval = 2\n"
            f"[mesh]\npeers = {json.dumps(peers)}\n"
        )
        self.log = open(self.dir / "relay.log", "wb")
        self.process = subprocess.Popen(
            [
                self.binary,
                "--config", str(config),
                "--relay-id", self.id,
                "--ws-addr", self.ws,
                "--http-addr", self.http,
                "--data-dir", str(self.dir / "data"),
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )

    def kill(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)

    def get(self, path: str) -> dict:
        with urllib.request.urlopen(f"http://{self.http}{path}", timeout=5) as response:
            return json.load(response)


def wait_for(what: str, check, seconds: float = WAIT_SECS):
    """Polls `check` until it returns a true value; fails naming `what` at the deadline."""
    deadline = time.monotonic() + seconds
    last_error = None
    while time.monotonic() < deadline:
        try:
            value = check()
            if value:
                return value
        except Exception as error:  # a page mid-render, a relay not up yet
            last_error = error
        time.sleep(0.25)
    raise AssertionError(f"timed out after {seconds} s waiting for {what} (last error: {last_error})")


def browser() -> webdriver.Chrome:
    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium") or "/usr/bin/chromium"
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                 "--disable-gpu", "--window-size=1100,860", "--hide-scrollbars"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    service = Service(executable_path=shutil.which("chromedriver") or "/usr/bin/chromedriver")
    driver = webdriver.Chrome(options=options, service=service)
    driver.set_page_load_timeout(30)
    driver.set_script_timeout(30)
    return driver


class Console:
    """Every browser console record seen so far; errors fail the run at the end."""

    def __init__(self, driver):
        self.driver = driver
        self.errors: list[str] = []

    def collect(self) -> None:
        for record in self.driver.get_log("browser"):
            if record.get("level") == "SEVERE":
                self.errors.append(record.get("message", str(record)))


# Reads run as one script in the page, so a re-render between two element lookups
# cannot leave a stale reference.
def nodes(driver) -> dict[str, str]:
    pairs = driver.execute_script(
        "return [...document.querySelectorAll('#graph g.node')]"
        ".map(g => [g.dataset.relay, g.dataset.health])")
    return dict(pairs)


def live_links(driver) -> set[str]:
    return set(driver.execute_script(
        "return [...document.querySelectorAll('#graph line.live')].map(l => l.dataset.link)"))


def query(driver, script: str):
    return driver.execute_script(script)


async def publish(ws_addr: str, count: int, per_second: float) -> None:
    async with websockets.connect(f"ws://{ws_addr}", open_timeout=10) as ws:
        await ws.send(json.dumps({"type": "handshake", "client_id": "browser-test",
                                  "version": "1.0.0", "capabilities": ["publish"]}))
        answer = json.loads(await asyncio.wait_for(ws.recv(), 10))
        assert answer.get("status") == "accepted", answer
        for i in range(count):
            await ws.send(json.dumps({"type": "notification",
                                      "notification_type": "payment_detected",
                                      "data": {"i": i}}))
            await asyncio.sleep(1 / per_second)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("binary")
    parser.add_argument("--artifacts", default="target/browser-artifacts")
    parser.add_argument("--docs", default=None)
    args = parser.parse_args()
    artifacts = Path(args.artifacts)
    artifacts.mkdir(parents=True, exist_ok=True)
    signal.signal(signal.SIGALRM, lambda *_: (_ for _ in ()).throw(TimeoutError("run budget spent")))
    signal.alarm(RUN_BUDGET_SECS)

    root = Path(tempfile.mkdtemp(prefix="sdk_relay_browser_"))
    relays = [Relay(args.binary, i, root) for i in range(1, RELAYS + 1)]
    driver = None
    try:
        for relay in relays:
            relay.start([r.ws for r in relays if r is not relay])
        for relay in relays:
            wait_for(f"{relay.id} linked to both peers",
                     lambda relay=relay: sum(r["connected"] and not r["self"] for r in relay.get("/relays")["relays"]) == 2)

        driver = browser()
        console = Console(driver)
        first = relays[0]
        driver.get(f"http://{first.http}/dashboard")
        wait_for("the page's first render",
                 lambda: query(driver, "return document.body.dataset.ready") == "true")

        # 1. Three relays, healthy, fully linked.
        wanted = {r.id for r in relays}
        wait_for("three healthy relays on the graph",
                 lambda: nodes(driver) == {i: "healthy" for i in wanted})
        expected_links = {"relay-1|relay-2", "relay-1|relay-3", "relay-2|relay-3"}
        wait_for("the three links on the graph", lambda: live_links(driver) == expected_links)
        self_marked = query(driver, "return document.querySelectorAll("
                            "'#graph g.node[data-relay=\"relay-1\"] circle.self').length")
        assert self_marked == 1, "relay-1, the relay serving the page, is marked as this relay"
        cards = query(driver, "return [...document.querySelectorAll('#cards .card')].map(c => c.dataset.relay)")
        assert set(cards) == wanted, f"a card per relay: {cards}"
        driver.save_screenshot(str(artifacts / "1-mesh.png"))
        console.collect()

        # 2. Publications move the chart.
        peak = float(query(driver, "return document.getElementById('chart').dataset.peak"))
        assert peak == 0, f"nothing published yet, but the chart peaks at {peak}"
        asyncio.run(asyncio.wait_for(publish(first.ws, 120, 30), 60))
        wait_for("the chart to show published notifications",
                 lambda: float(query(driver, "return document.getElementById('chart').dataset.peak")) > 0)
        # Peers report their own totals with their MetricsSync: their lines move too.
        wait_for("a peer's series on the chart",
                 lambda: query(driver, "return document.querySelectorAll('#legend span').length") >= 2)
        time.sleep(2.5)  # one more poll, so the screenshot shows the line
        driver.save_screenshot(str(artifacts / "2-chart.png"))
        console.collect()

        # 3. A relay killed turns unreachable, and an alert names it.
        relays[2].kill()
        wait_for("relay-3 unreachable on the graph",
                 lambda: nodes(driver).get("relay-3") == "unreachable")
        alerts = query(driver, "return [...document.querySelectorAll('#alerts li.critical')].map(a => a.textContent)")
        assert any("relay-3" in a and "unreachable" in a for a in alerts), alerts
        assert nodes(driver)["relay-2"] == "healthy", "relay-2 stays healthy"
        assert "relay-1|relay-3" not in live_links(driver), "relay-1's link to relay-3 is gone"
        driver.save_screenshot(str(artifacts / "3-unreachable.png"))
        console.collect()

        # 4. A phone-sized window.
        driver.set_window_size(390, 844)
        time.sleep(2.5)
        assert set(nodes(driver)) == wanted
        width = driver.execute_script("return document.documentElement.scrollWidth")
        assert width <= 400, f"the page scrolls sideways on a phone ({width} px wide)"
        driver.save_screenshot(str(artifacts / "4-phone.png"))
        console.collect()

        assert not console.errors, "browser console errors:\n" + "\n".join(console.errors)
        if args.docs:
            docs = Path(args.docs)
            shutil.copy(artifacts / "2-chart.png", docs / "dashboard.png")
            shutil.copy(artifacts / "4-phone.png", docs / "dashboard-phone.png")
        print(f"browser test passed; screenshots in {artifacts}/")
        return 0
    except BaseException:
        if driver is not None:
            try:
                driver.save_screenshot(str(artifacts / "failure.png"))
                (artifacts / "failure.html").write_text(driver.page_source)
            except Exception:
                pass
        for relay in relays:
            if (relay.dir / "relay.log").exists():
                shutil.copy(relay.dir / "relay.log", artifacts / f"{relay.id}.log")
        raise
    finally:
        signal.alarm(0)
        if driver is not None:
            driver.quit()
        for relay in relays:
            relay.kill()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
