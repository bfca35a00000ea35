//! tokio-xmpp client helpers shared by the tokio-xmpp test files.
//!
//! Beware: tokio-xmpp 6.0.0's `Client` can stall for good. Its background worker reads the
//! stream through `StanzaReceiver`, whose `poll_next` returns `Pending` without a wake-up
//! when `try_lock` fails, and `send_stanza`/`send_iq` hold that lock while queueing: an event
//! arriving just then leaves every later one (IQ answers included) unread. It showed in ~1
//! run of 20 across two cluster nodes; `tests/cluster.rs` uses the `StanzaStream` instead.

use futures::StreamExt;
use tokio_xmpp::jid::Jid;
use tokio_xmpp::parsers::message::Message;
use tokio_xmpp::parsers::ping::Ping;
use tokio_xmpp::parsers::presence::Presence;
use tokio_xmpp::{Client, Event, IqRequest, IqResponse, Stanza};

use super::common::WAIT;

/// Pings the server; everything the client sent before has been handled when this returns
/// (the server handles a session's stanzas in order).
pub async fn sync(c: &mut Client) {
    let token = c
        .send_iq(
            Some(Jid::new("localhost").unwrap()),
            IqRequest::Get(Ping.into()),
        )
        .await;
    match tokio::time::timeout(WAIT, token)
        .await
        .expect("ping timed out")
    {
        Ok(IqResponse::Result(_)) => {}
        other => panic!("ping to the server failed: {other:?}"),
    }
}

/// Sends initial presence and waits until the server has handled it.
pub async fn available(c: &mut Client) {
    c.send_stanza(Presence::available().into()).await.unwrap();
    sync(c).await;
}

/// Next message with a body, skipping anything else; an `Online` event in between (a
/// reconnect) fails the test.
pub async fn next_message(c: &mut Client) -> Message {
    tokio::time::timeout(WAIT, async {
        loop {
            match c.next().await {
                Some(Event::Stanza(Stanza::Message(m))) if !m.bodies.is_empty() => return m,
                Some(Event::Online { resumed, .. }) => {
                    panic!("unexpected reconnect (resumed: {resumed})")
                }
                Some(Event::Disconnected(e)) => panic!("disconnected: {e:?}"),
                None => panic!("client ended"),
                Some(_) => {}
            }
        }
    })
    .await
    .expect("timed out waiting for a message")
}

/// The body whatever its xml:lang (the stream's default language may be applied to it).
pub fn body(m: &Message) -> &str {
    assert!(m.bodies.len() <= 1, "several bodies: {:?}", m.bodies);
    m.bodies
        .values()
        .next()
        .map(String::as_str)
        .unwrap_or_default()
}
