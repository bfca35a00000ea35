// XMPP over WebSocket (RFC 7395) with xmpp.js (@xmpp/client 0.14, a client library we did not
// write), on the plain HTTP listener a reverse proxy would use:
//
// 1. alice and bob log in over ws://…/xmpp-websocket (SASL2, Bind2, XEP-0198 enabled inline);
// 2. a message each way between them;
// 3. alice's WebSocket dies without a close; bob writes to her;
// 4. she reconnects over WebSocket and resumes her session: bob's message arrives.
//
// Prints "ok ..." lines and exits 0, or "FAIL reason" and 1.
//
// Usage: node websocket_resume.mjs WS_URL DOMAIN ALICE ALICE_PASSWORD BOB BOB_PASSWORD
// (WS_URL e.g. ws://127.0.0.1:5280/xmpp-websocket).

import { webcrypto } from "node:crypto";
import WebSocket from "ws";
import { client, xml } from "@xmpp/client";

// Node 20 has no global WebSocket (22 has); xmpp.js uses the global one.
globalThis.WebSocket ??= WebSocket;
globalThis.crypto ??= webcrypto;

const [service, domain, alice, alicePassword, bob, bobPassword] = process.argv.slice(2);
if (!bobPassword) {
  console.log("FAIL usage: websocket_resume.mjs WS_URL DOMAIN ALICE ALICE_PASSWORD BOB BOB_PASSWORD");
  process.exit(2);
}

const WAIT_MS = 15000;
const SM = "urn:xmpp:sm:3";

function fail(why) {
  console.log(`FAIL ${why}`);
  process.exit(1);
}

function check(cond, why) {
  if (!cond) fail(why);
}

/** Resolves with the first `event` of `emitter` whose arguments satisfy `pred`. */
function next(emitter, event, pred = () => true, what = event) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      emitter.removeListener(event, on);
      reject(new Error(`timed out waiting for ${what}`));
    }, WAIT_MS);
    function on(...args) {
      if (!pred(...args)) return;
      clearTimeout(timer);
      emitter.removeListener(event, on);
      resolve(args[0]);
    }
    emitter.on(event, on);
  });
}

function message(c, body) {
  return next(c, "stanza", (el) => el.is("message") && el.getChildText("body") === body, `"${body}"`);
}

async function login(username, password, resource) {
  const c = client({ service, domain, username, password, resource });
  // The test decides when to reconnect.
  c.reconnect.stop();
  c.on("error", () => {});
  await c.start();
  // xmpp.js chose its WebSocket transport for the ws:// service (not TCP).
  check(c.socket?.socket instanceof WebSocket, `${username}: not connected over a WebSocket`);
  check(c.streamManagement.enabled && c.streamManagement.id, `${username}: stream management is off`);
  await c.send(xml("presence"));
  return c;
}

async function main() {
  const a = await login(alice, alicePassword, "web");
  const b = await login(bob, bobPassword, "web");
  const aJid = a.jid.toString();
  const bJid = b.jid.toString();
  console.log(`ok ${aJid} and ${bJid} logged in over ${service} with stream management`);

  const toA = message(a, "hello alice");
  await b.send(xml("message", { to: aJid, type: "chat", id: "m1" }, xml("body", {}, "hello alice")));
  await toA;
  const toB = message(b, "hello bob");
  await a.send(xml("message", { to: bJid, type: "chat", id: "m2" }, xml("body", {}, "hello bob")));
  await toB;
  console.log("ok a message each way");

  // The WebSocket dies without a closing handshake (a phone losing its network).
  const down = next(a, "disconnect");
  a.socket.socket.terminate();
  await down;
  await b.send(xml("message", { to: aJid, type: "chat", id: "m3" }, xml("body", {}, "while you were away")));
  // A round trip after the message: it has been routed.
  await b.iqCaller.request(xml("iq", { type: "get", to: domain }, xml("ping", "urn:xmpp:ping")));

  const missed = message(a, "while you were away");
  const resumed = next(a.streamManagement, "resumed", () => true, "the resumption");
  const sent = [];
  a.on("send", (el) => sent.push(el));
  await a.reconnect.reconnect();
  await resumed;
  await missed;
  check(
    sent.some((el) => el.is("resume", SM) || el.getChild?.("resume", SM)),
    "the reconnect did not ask to resume",
  );
  check(a.jid.toString() === aJid, `resumed as ${a.jid}, expected ${aJid}`);
  console.log("ok reconnected over WebSocket and resumed; the missed message arrived");

  await b.stop();
  await a.stop();
}

main().then(
  () => process.exit(0),
  (e) => fail(e?.stack || String(e)),
);
