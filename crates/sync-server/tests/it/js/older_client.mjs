// The topic server's older JavaScript client's shapes, spoken by Node's own WebSocket:
// `?token=` on the URL of /ws/sync, `connect` → `connected`, `auth {token}`, `sync` as
// publish, and a `data` push. Prints one JSON line of what it saw; exits 1 on anything
// unexpected or after 10 s.
//
// Usage: node [--experimental-websocket] older_client.mjs ws://host:port <jwt>

const [base, token] = process.argv.slice(2);
const fail = (why) => {
  console.error(`older_client: ${why}`);
  process.exit(1);
};
setTimeout(() => fail("timed out"), 10_000);

/** A socket and a queue of the messages it received, so each can be awaited in order. */
function open(url) {
  const ws = new WebSocket(url);
  const queue = [];
  let wake = null;
  ws.addEventListener("message", (event) => {
    queue.push(JSON.parse(event.data));
    if (wake) wake();
  });
  ws.addEventListener("error", () => fail(`socket error on ${url}`));
  const next = async () => {
    while (queue.length === 0) await new Promise((resolve) => (wake = resolve));
    return queue.shift();
  };
  const opened = new Promise((resolve) => ws.addEventListener("open", resolve));
  return { ws, next, opened };
}

function expect(message, type) {
  if (message.type !== type) fail(`expected ${type}, got ${JSON.stringify(message)}`);
  return message;
}

const listener = open(`${base}/ws/sync?token=${encodeURIComponent(token)}`);
const welcome = expect(await listener.next(), "auth_success");
listener.ws.send(JSON.stringify({ type: "connect", data: { client: "older-js", version: "1.0" } }));
const connected = expect(await listener.next(), "connected");
listener.ws.send(JSON.stringify({ type: "subscribe", topic: "room.lobby" }));
expect(await listener.next(), "subscribed");

const talker = open(`${base}/ws/sync`);
await talker.opened;
talker.ws.send(JSON.stringify({ type: "auth", token }));
expect(await talker.next(), "auth_success");
talker.ws.send(JSON.stringify({ type: "sync", topic: "room.lobby", data: { text: "hello from node" } }));
const published = expect(await talker.next(), "published");
const data = expect(await listener.next(), "data");

console.log(JSON.stringify({ welcome, connected, published, data }));
listener.ws.close();
talker.ws.close();
process.exit(0);
