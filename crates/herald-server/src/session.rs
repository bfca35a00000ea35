//! The session task: owns one bound c2s session for its whole life — its connection (an
//! attachable transport), presence, and the per-session state of the feature modules. Other
//! tasks talk to it only through its inbox.

use std::sync::Arc;

use herald_proto::error::{StanzaErrorCondition, StreamError, StreamErrorCondition};
use herald_proto::jid::{BareJid, FullJid, Jid};
use herald_proto::ns;
use herald_proto::stream::StreamEvent;
use herald_proto::Element;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::Instrument;

use crate::conn::{Conn, ConnError};
use crate::negotiate::{self, Outcome};
use crate::router::{ResourceEntry, SessionMsg};
use crate::stanza::{self, Kind};
use crate::{iq, routing, Shared};

/// Internal requests to a session.
#[derive(Debug)]
pub enum Command {
    /// Write these elements to the client as they are (e.g. roster pushes).
    Send(Vec<Element>),
}

/// Called when a message for `bare` finds no available resource.
pub async fn no_available_resource(shared: &Arc<Shared>, _bare: &str, el: Element) {
    match stanza::typ(&el) {
        "headline" | "error" | "groupchat" => {}
        _ => routing::bounce(shared, &el, StanzaErrorCondition::ServiceUnavailable).await,
    }
}

/// Drives a negotiated connection: binds and runs the session.
pub async fn start(shared: Arc<Shared>, outcome: Outcome) {
    match outcome {
        Outcome::Closed => {}
        Outcome::Bind {
            user,
            request,
            mut conn,
        } => {
            let jid = match negotiate::bind_jid(&user, &request) {
                Ok(j) => j,
                Err(cond) => {
                    if let Some(r) = stanza::error(&request, cond, None) {
                        let _ = conn.send(&r).await;
                    }
                    conn.close().await;
                    return;
                }
            };
            let span = tracing::info_span!("session", jid = %jid);
            run_new(shared, user, jid, request, conn)
                .instrument(span)
                .await
        }
        Outcome::Resume {
            request, mut conn, ..
        } => {
            // Stream management is not enabled on this server build yet: XEP-0198 §5.
            let mut f = Element::bare("failed", ns::SM);
            f.append_child(Element::bare("item-not-found", ns::STANZAS_ERR));
            let _ = request;
            let _ = conn.send(&f).await;
            conn.close().await;
        }
    }
}

async fn run_new(
    shared: Arc<Shared>,
    user: BareJid,
    jid: FullJid,
    request: Element,
    mut conn: Conn,
) {
    let (tx, rx) = mpsc::channel(shared.cfg.limits.session_inbox);
    let id = shared.next_id();
    let bare = user.to_string();
    let entry = ResourceEntry {
        resource: jid.resource().to_string(),
        session_id: id,
        tx,
        priority: 0,
        available: false,
    };
    if let Some(old) = shared.router.bind(&bare, entry) {
        // RFC 6120 §7.7.2.2: the new session takes over the resource; the old one is told why.
        let _ = old.tx.try_send(SessionMsg::Kick(StreamError::new(
            StreamErrorCondition::Conflict,
            Some("replaced by a new connection".to_string()),
        )));
    }
    if conn
        .send(&negotiate::bind_result(&request, &jid))
        .await
        .is_err()
    {
        shared.router.unbind(&bare, jid.resource().as_str(), id);
        return;
    }
    tracing::info!("session bound");
    let now = Instant::now();
    let mut s = Session {
        shared,
        id,
        jid,
        bare,
        conn: Some(conn),
        rx,
        available: false,
        priority: 0,
        last_read: now,
        last_write: now,
    };
    s.run().await;
    s.end().await;
}

/// One bound session.
pub struct Session {
    shared: Arc<Shared>,
    id: u64,
    jid: FullJid,
    bare: String,
    conn: Option<Conn>,
    rx: mpsc::Receiver<SessionMsg>,
    available: bool,
    priority: i8,
    last_read: Instant,
    last_write: Instant,
}

enum Ev {
    Msg(Option<SessionMsg>),
    Read(Result<(), ConnError>),
    Timer,
    Shutdown,
}

async fn read_opt(conn: &mut Option<Conn>) -> Result<(), ConnError> {
    match conn {
        Some(c) => c.read_some().await,
        None => std::future::pending().await,
    }
}

/// What the session loop should do next.
enum Flow {
    Continue,
    Stop,
}

impl Session {
    fn deadline(&self) -> Instant {
        let c = &self.shared.cfg.c2s;
        (self.last_read + c.read_timeout.0).min(self.last_write + c.keepalive_interval.0)
    }

    async fn run(&mut self) {
        let mut shutdown = self.shared.shutdown_signal();
        loop {
            let deadline = self.deadline();
            let ev = {
                let conn = &mut self.conn;
                let rx = &mut self.rx;
                tokio::select! {
                    m = rx.recv() => Ev::Msg(m),
                    r = read_opt(conn) => Ev::Read(r),
                    _ = tokio::time::sleep_until(deadline) => Ev::Timer,
                    _ = shutdown.changed() => Ev::Shutdown,
                }
            };
            let flow = match ev {
                Ev::Msg(Some(m)) => self.on_msg(m).await,
                Ev::Msg(None) => Flow::Stop,
                Ev::Read(Ok(())) => {
                    self.last_read = Instant::now();
                    self.on_readable().await
                }
                Ev::Read(Err(e)) => self.on_transport_error(e).await,
                Ev::Timer => self.on_timer().await,
                Ev::Shutdown => {
                    let e = StreamError::new(StreamErrorCondition::SystemShutdown, None);
                    self.fail(&e).await;
                    Flow::Stop
                }
            };
            if let Flow::Stop = flow {
                return;
            }
        }
    }

    async fn on_msg(&mut self, m: SessionMsg) -> Flow {
        match m {
            SessionMsg::Stanza(el) => self.deliver(vec![el]).await,
            SessionMsg::Command(Command::Send(els)) => self.deliver(els).await,
            SessionMsg::Kick(e) => {
                self.fail(&e).await;
                Flow::Stop
            }
        }
    }

    /// Writes stanzas to the client.
    async fn deliver(&mut self, els: Vec<Element>) -> Flow {
        let Some(conn) = self.conn.as_mut() else {
            return Flow::Continue;
        };
        match conn.send_all(els.iter()).await {
            Ok(()) => {
                self.last_write = Instant::now();
                Flow::Continue
            }
            Err(e) => self.on_transport_error(e).await,
        }
    }

    async fn on_readable(&mut self) -> Flow {
        loop {
            let ev = match self.conn.as_mut() {
                Some(c) => c.buffered_event(),
                None => return Flow::Continue,
            };
            match ev {
                Ok(None) => break,
                Ok(Some(StreamEvent::Stanza(el))) => {
                    if let Err(e) = self.on_client_element(el).await {
                        self.fail(&e).await;
                        return Flow::Stop;
                    }
                }
                Ok(Some(StreamEvent::End)) => {
                    // RFC 6120 §4.4: answer the close and end.
                    if let Some(c) = self.conn.as_mut() {
                        c.close().await;
                    }
                    self.conn = None;
                    return Flow::Stop;
                }
                Ok(Some(StreamEvent::Header(_))) => {
                    let e = StreamError::new(
                        StreamErrorCondition::NotWellFormed,
                        Some("unexpected stream header".to_string()),
                    );
                    self.fail(&e).await;
                    return Flow::Stop;
                }
                Err(e) => return self.on_transport_error(e).await,
            }
        }
        if let Some(c) = self.conn.as_mut() {
            c.shrink();
        }
        Flow::Continue
    }

    async fn on_transport_error(&mut self, e: ConnError) -> Flow {
        match e {
            ConnError::Stream(se) => {
                self.fail(&se).await;
            }
            other => {
                tracing::info!(error = %other, "connection lost");
                self.conn = None;
            }
        }
        Flow::Stop
    }

    async fn on_timer(&mut self) -> Flow {
        let now = Instant::now();
        let c = &self.shared.cfg.c2s;
        if now >= self.last_read + c.read_timeout.0 {
            tracing::info!("read timeout");
            let e = StreamError::new(StreamErrorCondition::ConnectionTimeout, None);
            self.fail(&e).await;
            return Flow::Stop;
        }
        if now >= self.last_write + c.keepalive_interval.0 {
            // RFC 6120 §4.6.1: whitespace keepalive.
            if let Some(conn) = self.conn.as_mut() {
                if let Err(e) = conn.write_raw(b" ").await {
                    return self.on_transport_error(e).await;
                }
            }
            self.last_write = now;
        }
        Flow::Continue
    }

    async fn fail(&mut self, e: &StreamError) {
        if let Some(mut c) = self.conn.take() {
            c.fail(&self.shared.cfg.domain, e).await;
        }
    }

    /// The session is over: leave the router and tell presence subscribers.
    async fn end(&mut self) {
        self.shared
            .router
            .unbind(&self.bare, self.jid.resource().as_str(), self.id);
        if self.available {
            let mut p = stanza::new(
                "presence",
                herald_proto::stream::INTERNAL_NS,
                &[("type", "unavailable")],
            );
            stanza::set(&mut p, "from", self.jid.to_string());
            self.broadcast_presence(p).await;
        }
        tracing::info!("session ended");
    }

    async fn on_client_element(&mut self, mut el: Element) -> Result<(), StreamError> {
        let Some(kind) = stanza::kind(&el) else {
            return Err(StreamError::new(
                StreamErrorCondition::UnsupportedStanzaType,
                Some(format!("<{}/> is not supported here", el.name())),
            ));
        };
        // RFC 6120 §8.1.2.1: the server stamps 'from'; a client may only claim itself.
        match stanza::from(&el) {
            Ok(None) => {}
            Ok(Some(f))
                if f == Jid::from(self.jid.clone()) || f.to_bare().to_string() == self.bare => {}
            _ => {
                return Err(StreamError::new(
                    StreamErrorCondition::InvalidFrom,
                    Some("'from' does not match this session".to_string()),
                ))
            }
        }
        stanza::set(&mut el, "from", self.jid.to_string());
        let to = match stanza::to(&el) {
            Ok(t) => t,
            Err(()) => {
                if let Some(r) = stanza::error(&el, StanzaErrorCondition::JidMalformed, None) {
                    self.to_client(r).await;
                }
                return Ok(());
            }
        };
        match kind {
            Kind::Iq => self.on_iq(el, to).await,
            Kind::Presence => {
                if to.is_none() {
                    self.on_own_presence(el).await;
                } else {
                    routing::route(&self.shared, el).await;
                }
            }
            Kind::Message => {
                if to.is_none() {
                    // RFC 6121 §8.1.1.1: no 'to' means the sender's bare JID.
                    stanza::set(&mut el, "to", self.bare.clone());
                }
                routing::route(&self.shared, el).await;
            }
        }
        Ok(())
    }

    async fn to_client(&mut self, el: Element) {
        let _ = self.deliver(vec![el]).await;
    }

    async fn on_iq(&mut self, el: Element, to: Option<Jid>) {
        let own = match &to {
            None => true,
            Some(j) => j.is_bare() && j.to_string() == self.bare,
        };
        if !own {
            routing::route(&self.shared, el).await;
            return;
        }
        match stanza::typ(&el) {
            "get" | "set" => {
                let reply = iq::handle_own_iq(&self.shared, &self.jid, &el).await;
                if let Some(r) = reply {
                    self.to_client(r).await;
                }
            }
            // Results and errors addressed to the account itself have nobody to go to.
            _ => {}
        }
    }

    async fn on_own_presence(&mut self, el: Element) {
        match stanza::typ(&el) {
            "" => {
                let prio = el
                    .get_child("priority", herald_proto::stream::INTERNAL_NS)
                    .and_then(|p| p.text().trim().parse::<i8>().ok())
                    .unwrap_or(0);
                self.available = true;
                self.priority = prio;
                self.shared
                    .router
                    .set_presence(&self.bare, self.id, true, prio);
                self.broadcast_presence(el).await;
            }
            "unavailable" => {
                self.available = false;
                self.shared
                    .router
                    .set_presence(&self.bare, self.id, false, 0);
                self.broadcast_presence(el).await;
            }
            _ => {
                // Subscription management is handled by the roster module (not in this build).
                routing::route(&self.shared, el).await;
            }
        }
    }

    /// Sends our presence to our other available resources (RFC 6121 §4.2.2).
    async fn broadcast_presence(&mut self, el: Element) {
        for r in self.shared.router.resources(&self.bare) {
            if r.session_id != self.id && r.available {
                let mut p = el.clone();
                stanza::set(&mut p, "to", format!("{}/{}", self.bare, r.resource));
                let _ = routing::send_to(&self.shared, &r, p);
            }
        }
    }
}
