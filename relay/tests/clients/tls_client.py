"""A wallet over WSS (package `websockets`) that a test drives, and a probe of the
certificate a TLS port serves.

Usage:
  tls_client.py cert HOST PORT CA_FILE
      Prints the hex DER of the certificate HOST:PORT serves (verified against CA_FILE,
      for the name 127.0.0.1); exits 1 when the handshake fails.
  tls_client.py session WSS_URL CA_FILE
      Connects (verified against CA_FILE), handshakes with capabilities `publish` and
      `notifications`, prints {"event": "ready", "cert": HEX_DER}. Then for each line
      `publish` on stdin it publishes a notification and prints {"event": "answer",
      "type": ...} with the type of the relay's answer. Exits 0 at the end of stdin
      (closing the connection), 1 when the connection fails. Every wait is bounded.
"""
import asyncio
import json
import socket
import ssl
import sys

import websockets

WAIT_SECS = 10


def context(ca_file):
    ctx = ssl.create_default_context(cafile=ca_file)
    ctx.check_hostname = True
    return ctx


def served_cert(host, port, ca_file):
    with socket.create_connection((host, int(port)), timeout=WAIT_SECS) as raw:
        with context(ca_file).wrap_socket(raw, server_hostname=host) as tls:
            return tls.getpeercert(binary_form=True).hex()


async def session(url, ca_file):
    async with websockets.connect(url, ssl=context(ca_file), open_timeout=WAIT_SECS) as ws:
        hello = {
            "type": "handshake",
            "client_id": "python-tls",
            "version": "1.0.0",
            "capabilities": ["publish", "notifications"],
        }
        await ws.send(json.dumps(hello))
        answer = json.loads(await asyncio.wait_for(ws.recv(), WAIT_SECS))
        if answer.get("type") != "handshake_response" or answer.get("status") != "accepted":
            print(json.dumps({"event": "refused", "answer": answer}), flush=True)
            return 1
        cert = ws.transport.get_extra_info("ssl_object").getpeercert(binary_form=True)
        print(json.dumps({"event": "ready", "cert": cert.hex()}), flush=True)
        loop = asyncio.get_running_loop()
        while True:
            line = await loop.run_in_executor(None, sys.stdin.readline)
            if not line:
                return 0
            if line.strip() != "publish":
                continue
            note = {"type": "notification", "notification_type": "payment",
                    "data": {"amount": 1}}
            await ws.send(json.dumps(note))
            while True:
                reply = json.loads(await asyncio.wait_for(ws.recv(), WAIT_SECS))
                if reply.get("type") in ("notification_ack", "error"):
                    break
            print(json.dumps({"event": "answer", "type": reply["type"]}), flush=True)


def main(argv):
    if len(argv) == 5 and argv[1] == "cert":
        try:
            print(served_cert(argv[2], argv[3], argv[4]), flush=True)
            return 0
        except (OSError, ssl.SSLError) as error:
            print(f"handshake failed: {error}", file=sys.stderr)
            return 1
    if len(argv) == 4 and argv[1] == "session":
        return asyncio.run(session(argv[2], argv[3]))
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
