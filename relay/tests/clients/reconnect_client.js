// A wallet on Node's `ws` that waits for the relay to send it away.
// Usage: node reconnect_client.js WS_URL
// Handshakes, prints every message as one JSON line, then on close prints
// {"event":"closed","code":C} and exits 0 (1 if nothing closed it within 60 s).
const WebSocket = require("ws");

const ws = new WebSocket(process.argv[2]);
const budget = setTimeout(() => {
  console.log(JSON.stringify({ event: "timeout" }));
  process.exit(1);
}, 60000);
ws.on("open", () => {
  ws.send(JSON.stringify({
    type: "handshake", client_id: "node-wallet", version: "1.0.0",
    capabilities: ["notifications"],
  }));
});
ws.on("message", (data) => console.log(data.toString()));
ws.on("close", (code) => {
  clearTimeout(budget);
  console.log(JSON.stringify({ event: "closed", code }));
  process.exit(0);
});
ws.on("error", (error) => {
  console.log(JSON.stringify({ event: "error", message: String(error) }));
});
