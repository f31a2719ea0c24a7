// The specification's JavaScript client (class as in the API reference), on Node with
// the `ws` package. Usage: node spec_client.js WS_URL
// Prints each received message as one JSON line; exits 0 once `handshake_response`
// (accepted) and then a `health` message arrived, 1 otherwise (10 s budget).
const WebSocket = require('ws');

class SdkRelayClient {
  constructor(url) {
    this.ws = new WebSocket(url);
    this.seen = [];
    this.setupEventHandlers();
  }

  setupEventHandlers() {
    this.ws.onopen = () => this.onConnect();
    this.ws.onmessage = (event) => this.onMessage(event);
    this.ws.onerror = (error) => this.onError(error);
    this.ws.onclose = (event) => this.onClose(event);
  }

  onConnect() {
    this.sendHandshake();
  }

  sendHandshake() {
    const handshake = {
      type: 'handshake',
      client_id: 'js-client',
      version: '1.0.0',
      capabilities: ['sync', 'notifications'],
    };
    this.ws.send(JSON.stringify(handshake));
  }

  onMessage(event) {
    const message = JSON.parse(event.data);
    console.log(JSON.stringify(message));
    this.seen.push(message.type);
    if (this.seen[0] !== 'handshake_response' || (message.status && message.status !== 'accepted' && message.type === 'handshake_response')) {
      process.exit(1);
    }
    if (message.type === 'health') {
      this.ws.close(1000);
      process.exit(0);
    }
  }

  onError(error) {
    console.error('WebSocket error:', error.message);
    process.exit(1);
  }

  onClose(event) {
    console.error('closed:', event.code, event.reason);
    process.exit(1);
  }
}

setTimeout(() => process.exit(1), 10000);
new SdkRelayClient(process.argv[2]);
