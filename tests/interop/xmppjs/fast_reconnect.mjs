// A woken phone with xmpp.js (@xmpp/client 0.14, a client library we did not write):
//
// 1. alice logs in over STARTTLS with SASL2 (SCRAM-SHA-1), Bind2 and XEP-0198 enabled inline,
//    and asks for a FAST token — one round trip after TLS;
// 2. her connection dies without a goodbye; bob writes to her;
// 3. she reconnects with the FAST token (HT-SHA-256-NONE, no password) and resumes her
//    session inline in SASL2: bob's message arrives right after <success/>.
//
// The wire is checked, not only the outcome: which mechanism each <authenticate/> used, what
// came back in each <success/>. Prints "ok ..." lines and exits 0, or "FAIL reason" and 1.
//
// Usage: node fast_reconnect.mjs SERVICE DOMAIN ALICE ALICE_PASSWORD BOB BOB_PASSWORD
// (SERVICE e.g. xmpp://127.0.0.1:5222). The server's certificate is self-signed: the runner
// sets NODE_TLS_REJECT_UNAUTHORIZED=0 for this process only.

import { webcrypto } from "node:crypto";
import { client, xml } from "@xmpp/client";

// xmpp.js uses the global Web Crypto (client ids, the HT mechanism's HMAC) when a client is
// made or authenticates, not at import: node 18 (Debian 12) has it only under node:crypto.
globalThis.crypto ??= webcrypto;

const [service, domain, alice, alicePassword, bob, bobPassword] = process.argv.slice(2);
if (!bobPassword) {
  console.log("FAIL usage: fast_reconnect.mjs SERVICE DOMAIN ALICE ALICE_PASSWORD BOB BOB_PASSWORD");
  process.exit(2);
}

const WAIT_MS = 15000;

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

/** Records what goes out and comes in, for checks on the wire. */
function tap(c) {
  const log = { sent: [], received: [] };
  c.on("send", (el) => log.sent.push(el));
  c.on("element", (el) => log.received.push(el));
  return log;
}

function last(list, name, ns) {
  return [...list].reverse().find((el) => el.is(name, ns));
}

const SASL2 = "urn:xmpp:sasl:2";
const SM = "urn:xmpp:sm:3";
const BIND2 = "urn:xmpp:bind:0";
const FAST = "urn:xmpp:fast:0";

async function main() {
  const a = client({ service, domain, username: alice, password: alicePassword, resource: "interop" });
  // The test decides when to reconnect.
  a.reconnect.stop();
  a.on("error", () => {});
  const aLog = tap(a);

  // 1. SASL2 + Bind2 + SM enable + a FAST token, in one round trip after TLS.
  await a.start();
  const auth1 = last(aLog.sent, "authenticate", SASL2);
  check(auth1, "the first login did not use SASL2");
  check(
    auth1.attrs.mechanism === "SCRAM-SHA-1",
    `first login mechanism ${auth1.attrs.mechanism}, expected SCRAM-SHA-1`,
  );
  check(auth1.getChild("request-token", FAST), "no FAST token requested");
  check(auth1.getChild("bind", BIND2), "no Bind2 request");
  const ok1 = last(aLog.received, "success", SASL2);
  check(ok1, "no SASL2 success");
  check(ok1.getChild("bound", BIND2), "no <bound/> in the success");
  check(ok1.getChild("bound", BIND2).getChild("enabled", SM), "XEP-0198 not enabled inline");
  check(ok1.getChild("token", FAST), "no FAST token in the success");
  check(!aLog.sent.some((el) => el.is("iq") && el.getChild("bind")), "legacy binding was used");
  const fullJid = a.jid.toString();
  check(
    fullJid.startsWith(`${alice}@${domain}/interop~`),
    `bound ${fullJid}, expected a resource from the tag and the client id`,
  );
  check(a.streamManagement.enabled && a.streamManagement.id, "stream management is off");
  const token = await a.fast.fetch();
  check(token?.token && token.mechanism === "HT-SHA-256-NONE", "the token was not kept");
  console.log(`ok SASL2 + Bind2 login as ${fullJid} (SCRAM-SHA-1), FAST token until ${token.expiry}`);
  await a.send(xml("presence"));

  // 2. The connection dies (no stream close); bob writes meanwhile.
  const down = next(a, "disconnect");
  // a.socket is xmpp.js's wrapper; after STARTTLS it holds node's TLS socket.
  (a.socket.socket ?? a.socket).destroy();
  await down;
  const b = client({ service, domain, username: bob, password: bobPassword, resource: "sender" });
  b.reconnect.stop();
  b.on("error", () => {});
  await b.start();
  await b.send(xml("message", { to: fullJid, type: "chat", id: "missed-1" }, xml("body", {}, "while you slept")));
  // A round trip to the server after the message: it has been routed.
  await b.iqCaller.request(xml("iq", { type: "get", to: domain }, xml("ping", "urn:xmpp:ping")));
  console.log("ok bob wrote while alice was away");

  // 3. FAST + inline resumption: bob's message right after <success/>.
  const missed = next(
    a,
    "stanza",
    (el) => el.is("message") && el.getChildText("body") === "while you slept",
    "the missed message",
  );
  const resumed = next(a.streamManagement, "resumed", () => true, "the inline resumption");
  aLog.sent.length = 0;
  aLog.received.length = 0;
  await a.reconnect.reconnect();
  await resumed;
  await missed;
  const auth2 = last(aLog.sent, "authenticate", SASL2);
  check(auth2, "the reconnect did not use SASL2");
  check(
    auth2.attrs.mechanism === "HT-SHA-256-NONE",
    `reconnect mechanism ${auth2.attrs.mechanism}, expected the FAST token`,
  );
  check(auth2.getChild("resume", SM), "no inline <resume/>");
  const ok2 = last(aLog.received, "success", SASL2);
  check(ok2?.getChild("resumed", SM), "no <resumed/> in the success");
  const afterSuccess = aLog.received.slice(aLog.received.indexOf(ok2) + 1);
  check(
    afterSuccess.find((el) => el.is("message"))?.getChildText("body") === "while you slept",
    "the missed message did not come right after the success",
  );
  check(a.jid.toString() === fullJid, `resumed as ${a.jid}, expected ${fullJid}`);
  console.log("ok reconnected with FAST (HT-SHA-256-NONE) and resumed inline; the missed message arrived");

  await b.stop();
  await a.stop();
}

main().then(
  () => process.exit(0),
  (e) => fail(e?.stack || String(e)),
);
