//! The session task: owns one bound c2s session for its whole life — its connection (an
//! attachable transport: when it dies a resumable session hibernates and keeps queueing;
//! `<resume/>` re-attaches a new one), presence, the XEP-0198 machine, the XEP-0352 buffer
//! and the carbons flag. Other tasks talk to it only through its inbox. The protocol rules are
//! herald-session's and herald-push's; this folder wires them to the socket and the router:
//! `sm` (XEP-0198: nonzas, acks, timers, hibernation, resumption), `csi` (XEP-0352) and
//! `backlog` (stored stanzas after initial presence) are `impl Session` blocks of their own;
//! feature handlers get only `ctx` (a `SessionCtx`) and return `Effect`s.

use std::str::FromStr;
use std::sync::Arc;

use herald_proto::error::{ErrorType, StanzaErrorCondition, StreamError, StreamErrorCondition};
use herald_proto::jid::{BareJid, FullJid, Jid};
use herald_proto::ns;
use herald_proto::sm as sm_wire;
use herald_proto::stream::{StreamEvent, StreamNs};
use herald_proto::Element;
use herald_session::csi::CsiBuffer;
use herald_session::sm::{SmEvent, StreamManagement};
use herald_session::sm_nonza;
use herald_store::roles;
use tokio::time::Instant;
use tracing::Instrument;

mod backlog;
mod csi;
mod sm;

use crate::c2s::negotiate;
use crate::features::ctx::{Effect, SessionCtx, SessionPresence};
use crate::routing::durable;
use crate::routing::msg::PushEvent;
use crate::routing::msg::{Command, Origin, Resumable, Routed, SessionMsg, SessionTx};
use crate::routing::router::{Bound, ResourceEntry};
use crate::stanza::{self, Kind};
use crate::transport::conn::{Conn, ConnError};
use crate::xep::delay;
use crate::{
    c2s::persist, features::iq, features::offline, features::presence, routing, routing::hooks,
    Shared,
};

/// Binds a negotiated stream and starts its session in a task of its own, or resumes a
/// hibernated one. The connection's task ends here: a task keeps the size of its largest
/// state for its whole life, and negotiation's is large; the session's task starts small.
pub async fn start(shared: Arc<Shared>, outcome: negotiate::Outcome) {
    match outcome {
        negotiate::Outcome::Closed | negotiate::Outcome::Resumed => {}
        negotiate::Outcome::Bind {
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
            // One span per connection; the session fills in who it is.
            let span = tracing::Span::current();
            span.record("jid", tracing::field::display(&jid));
            match Session::bind(shared, user, jid.clone(), conn, false) {
                Ok(session) => {
                    crate::admin::accounts::on_bind(
                        &session.ctx.shared,
                        &session.ctx.bare,
                        &session.tx,
                    );
                    let reply = Box::new(negotiate::bind_result(&request, &jid));
                    drop(request);
                    tokio::spawn(session.main(reply, None).instrument(span));
                }
                Err(mut conn) => {
                    // RFC 6120 §7.6.2.2: the account has its most sessions, all connected.
                    tracing::info!("bind refused: too many sessions");
                    let cond = StanzaErrorCondition::ResourceConstraint;
                    if let Some(r) = stanza::error_typed(&request, cond, ErrorType::Wait, None) {
                        let _ = conn.send(&r).await;
                    }
                    conn.close().await;
                }
            }
        }
        negotiate::Outcome::Bind2 {
            user,
            resource,
            bind,
            success,
            client_id,
            mut conn,
        } => {
            let derived = resource.and_then(|r| user.with_resource_str(&r).ok());
            let by_client_id = derived.is_some();
            let jid = match derived.map_or_else(|| negotiate::random_jid(&user), Ok) {
                Ok(j) => j,
                Err(_) => {
                    conn.close().await;
                    return;
                }
            };
            let span = tracing::Span::current();
            span.record("jid", tracing::field::display(&jid));
            tracing::debug!(client = ?client_id, "Bind2");
            match Session::bind(shared, user.clone(), jid, conn, by_client_id) {
                Ok(session) => {
                    crate::admin::accounts::on_bind(
                        &session.ctx.shared,
                        &session.ctx.bare,
                        &session.tx,
                    );
                    tokio::spawn(session.main_bind2(success, bind).instrument(span));
                }
                Err(mut conn) => {
                    // RFC 6120 §7.6.2.2 as for a bind IQ: the account has its most sessions,
                    // all connected. Authenticated but unbound, the stream ends (XEP-0386's
                    // <failed/> carries the error).
                    tracing::info!("Bind2 refused: too many sessions");
                    let failed = herald_session::sasl2::bind_failed(
                        StanzaErrorCondition::ResourceConstraint,
                        ErrorType::Wait,
                    );
                    let el = success.into_element(user.as_str(), vec![failed]);
                    let _ = conn.send(&el).await;
                    conn.close().await;
                }
            }
        }
    }
}

/// One bound session.
pub struct Session {
    /// What feature handlers see: identity, per-resource flags, presence bookkeeping.
    pub(crate) ctx: SessionCtx,
    conn: Option<Conn>,
    tx: SessionTx,
    rx: crate::transport::inbox::Receiver<SessionMsg>,
    sm: StreamManagement<Routed>,
    csi: CsiBuffer<Routed>,
    sm_id: Option<String>,
    /// Stanzas the session took but could not queue because it is ending (SM queue
    /// overflow, a stream that failed in the middle of a CSI flush): handed on by `end`.
    spilled: Vec<Routed>,
    last_read: Instant,
    last_write: Instant,
    /// Archive commits for this client's messages, settled before any ack.
    deferred: durable::Deferred,
    /// Set while stanzas from the inbox are handled as one batch: writes collect in `wbuf`.
    batching: bool,
    /// Stored stanzas still to deliver (boxed: almost always empty).
    backlog: Option<Box<backlog::Backlog>>,
    /// The store holds this hibernated session (`sm_id`): stanzas queued while it sleeps are
    /// written through, so a crash loses none of them (see `persist`).
    persisted: bool,
    /// Queued while hibernated, not yet written through (written after each event).
    write_through: Vec<herald_store::SmQueued>,
    /// Senders' acks waiting for `write_through` (released when dropped).
    write_through_tickets: Vec<Arc<durable::Durable>>,
    /// Saved for the next start at shutdown: the session task ends without ending the
    /// session (no unavailable broadcast, nothing handed on).
    parked: bool,
    wbuf: Vec<u8>,
    /// `[limits] c2s_*`: what the client may still send before reading pauses.
    inbound: herald_session::rate::InboundRate,
    /// Elements written in answer to the element being handled (MAM results), charged to
    /// `inbound` with it.
    answers: u64,
    /// The client went over its rate: its socket is not read before then (what is routed
    /// to it still flows).
    paused: Option<Instant>,
}

enum Ev {
    Msg(SessionMsg),
    Read(Result<(), ConnError>),
    Timer,
    Shutdown,
    /// The pause of an over-rate client is over: handle what its decoder already holds.
    Unpaused,
}

async fn read_opt(conn: &mut Option<Conn>) -> Result<(), ConnError> {
    match conn {
        Some(c) => c.read_some().await,
        None => std::future::pending().await,
    }
}

/// A new session's inbox, with its byte budget within its account's.
fn session_inbox(
    shared: &Shared,
    bare: &str,
) -> (SessionTx, crate::transport::inbox::Receiver<SessionMsg>) {
    let l = &shared.cfg.limits;
    let account = shared.router.account_budget(bare, l.account_queue_bytes);
    SessionTx::inbox(l.session_inbox, l.session_queue_bytes, Some(account))
}

/// Most inbox stanzas written to the client in one write.
const MSG_BATCH: usize = 32;

/// What the session loop should do next.
pub(crate) enum Flow {
    Continue,
    Stop,
}

fn std_now() -> std::time::Instant {
    std::time::Instant::now()
}

impl Session {
    /// Registers a freshly bound resource (it takes over a previous session of the same
    /// resource, RFC 6120 §7.7.2.2) and builds its session. `by_client_id`: bound through
    /// Bind2 with the resource derived from the client id (push registrations follow it).
    /// Err(conn) when the account already has its most sessions, all connected.
    fn bind(
        shared: Arc<Shared>,
        user: BareJid,
        jid: FullJid,
        conn: Box<Conn>,
        by_client_id: bool,
    ) -> Result<Box<Session>, Box<Conn>> {
        let id = shared.next_id();
        let bare = user.to_string();
        let (tx, rx) = session_inbox(&shared, &bare);
        let entry = ResourceEntry {
            resource: jid.resource().to_string(),
            session_id: id,
            tx: tx.clone(),
            priority: 0,
            available: false,
            carbons: false,
            hibernated: false,
            transport: conn.transport,
        };
        let max = shared.cfg.limits.max_sessions_per_account;
        let (old, why) = match shared.router.bind(&bare, entry, max) {
            Ok(Bound::Added) => (None, ""),
            Ok(Bound::Replaced(old)) => (Some(old), "replaced by a new connection"),
            Ok(Bound::Evicted(old)) => (
                Some(old),
                "too many sessions: the oldest hibernated one ended",
            ),
            Err(_) => return Err(conn),
        };
        if let Some(old) = old {
            let _ = old.tx.send_control(SessionMsg::Kick(StreamError::new(
                StreamErrorCondition::Conflict,
                Some(why.to_string()),
            )));
        }
        let ev = hooks::SessionStarted {
            user: bare.clone(),
            session: id,
            resource: jid.resource().to_string(),
            tx: tx.clone(),
            by_client_id,
        };
        hooks::notify(&shared.hooks.session_started, &shared, ev);
        let now = Instant::now();
        let shared_rate = shared.cfg.c2s_rate();
        shared.session_started();
        Ok(Box::new(Session {
            sm: StreamManagement::new(shared.cfg.sm()),
            csi: CsiBuffer::new(shared.cfg.csi.max_buffer)
                .with_max_bytes(shared.cfg.csi.max_buffer_bytes),
            ctx: SessionCtx::new(shared, id, jid),
            // Moved out of its box, which is freed when `bind` returns (not kept by the task).
            conn: Some(*conn),
            tx,
            rx,
            sm_id: None,
            spilled: Vec::new(),
            last_read: now,
            last_write: now,
            deferred: durable::Deferred::default(),
            batching: false,
            wbuf: Vec::new(),
            backlog: None,
            persisted: false,
            write_through: Vec::new(),
            write_through_tickets: Vec::new(),
            parked: false,
            inbound: herald_session::rate::InboundRate::new(shared_rate, std_now()),
            answers: 0,
            paused: None,
        }))
    }

    /// A hibernated session saved at the last clean shutdown, registered again (router,
    /// resumption table, push) and started in a task of its own, waiting for `<resume/>`.
    pub(crate) fn restore(
        shared: Arc<Shared>,
        saved: Box<crate::c2s::persist::Restored>,
    ) -> Result<(), Box<crate::c2s::persist::Restored>> {
        let crate::c2s::persist::Restored {
            record,
            queue,
            state,
            jid,
        } = *saved;
        let id = shared.next_id();
        let bare = jid.to_bare().to_string();
        let (tx, rx) = session_inbox(&shared, &bare);
        let entry = ResourceEntry {
            resource: jid.resource().to_string(),
            session_id: id,
            tx: tx.clone(),
            priority: state.priority,
            available: state.available,
            carbons: state.carbons,
            hibernated: true,
            // Restored after a restart without a connection (which listener it had is not
            // saved); it counts as hibernated until it resumes.
            transport: herald_transport::conn::TRANSPORT_TCP,
        };
        let max = shared.cfg.limits.max_sessions_per_account;
        // Cluster mode: the node that handed the session over may still show in this node's
        // view of the account; its session is gone.
        let bound = match shared.router.bind(&bare, entry, max) {
            Ok(Bound::Added) => true,
            Ok(Bound::Replaced(old)) => !old.tx.is_local(),
            _ => false,
        };
        if !bound {
            return Err(Box::new(crate::c2s::persist::Restored {
                record,
                queue,
                state,
                jid,
            }));
        }
        let now = std_now();
        let left_ms = record.expires_at.saturating_sub(persist::unix_millis());
        let expiry = now + std::time::Duration::from_millis(u64::try_from(left_ms).unwrap_or(0));
        // What the saved queue holds counts against the budgets like anything queued.
        let queue = queue
            .into_iter()
            .map(|mut o| {
                let bytes = stanza::mem_cost(&o.el);
                o.charge = Some(tx.budget().charge(bytes));
                (o, bytes)
            })
            .collect();
        let sm = StreamManagement::restore_hibernating_sized(
            shared.cfg.sm(),
            record.inbound_h,
            record.outbound_h,
            queue,
            expiry,
            now,
        );
        shared.resumable_insert(
            record.id.clone(),
            Resumable {
                bare: bare.clone(),
                tx: tx.clone(),
            },
        );
        shared.push.send(PushEvent::Restore {
            user: bare.clone(),
            session: id,
            tx: tx.clone(),
            push: state.push_state(),
            expiry,
        });
        let mut presence = SessionPresence {
            last: state
                .presence
                .as_deref()
                .and_then(stanza::Frozen::from_saved),
            initial_sent: state.available,
            interested: state.interested,
            ..Default::default()
        };
        presence.directed.extend(state.directed);
        let t = Instant::now();
        shared.session_started();
        let mut ctx = SessionCtx::new(shared.clone(), id, jid.clone());
        ctx.presence = presence;
        ctx.restore_flags(state.available, state.priority, state.carbons);
        let session = Box::new(Session {
            sm,
            csi: CsiBuffer::new(shared.cfg.csi.max_buffer)
                .with_max_bytes(shared.cfg.csi.max_buffer_bytes),
            ctx,
            conn: None,
            tx,
            rx,
            sm_id: Some(record.id),
            spilled: Vec::new(),
            last_read: t,
            last_write: t,
            deferred: durable::Deferred::default(),
            batching: false,
            wbuf: Vec::new(),
            backlog: None,
            persisted: true,
            write_through: Vec::new(),
            write_through_tickets: Vec::new(),
            parked: false,
            inbound: herald_session::rate::InboundRate::new(shared.cfg.c2s_rate(), std_now()),
            answers: 0,
            paused: None,
        });
        let span = tracing::info_span!("conn", kind = "c2s", jid = %jid);
        tokio::spawn(session.main_restored().instrument(span));
        Ok(())
    }

    /// A restored session's task: it waits hibernated, like any other after its link died.
    async fn main_restored(mut self: Box<Self>) {
        tracing::debug!(
            unacked = self.sm.unacked_len(),
            "session restored, hibernated"
        );
        self.run().await;
        if !self.parked {
            Box::pin(self.end()).await;
        }
    }

    /// XEP-0386: the inline features asked for in `<bind/>` (carbons, CSI state, XEP-0198
    /// `<enable/>`, answered inside `<bound/>`), then the `<success/>` with the full JID and
    /// the features left (no resource binding), then the session as after a bind IQ.
    async fn main_bind2(
        mut self: Box<Self>,
        success: Box<herald_session::sasl2::Success>,
        bind: Box<herald_session::sasl2::BindRequest>,
    ) {
        let mut results = Vec::new();
        if bind.carbons {
            self.ctx.set_carbons(true);
            results.push(Element::bare("enabled", ns::CARBONS));
        }
        if bind.csi_active == Some(false) {
            self.csi.set_inactive();
        }
        if let Some(enable) = &bind.sm_enable {
            if let Some(answer) = self.enable_inline(enable) {
                results.push(answer);
            }
        }
        if let Some(enable) = &bind.push_enable {
            results.push(iq::push::enable_inline(&mut self.ctx, enable).await);
        }
        let jid = self.ctx.jid.to_string();
        let reply =
            Box::new(success.into_element(&jid, vec![herald_session::sasl2::bound(results)]));
        let features = herald_session::sasl2::features_after_bind(self.sm.is_enabled());
        self.main(reply, Some(Box::new(features))).await
    }

    /// The session's task: answers the bind request (followed by `features` after a Bind2
    /// success), serves the session, ends it.
    async fn main(mut self: Box<Self>, reply: Box<Element>, features: Option<Box<Element>>) {
        let sent = match self.conn.as_mut() {
            Some(c) => {
                let mut bytes = Vec::new();
                herald_proto::stream::encode(&reply, c.ns, &mut bytes);
                if let Some(f) = &features {
                    crate::transport::conn::push_features(&mut bytes, c.ns, f);
                }
                Box::pin(c.write_raw(&bytes)).await.is_ok()
            }
            None => false,
        };
        drop(reply);
        drop(features);
        if sent {
            tracing::debug!("session bound");
            self.run().await;
        } else {
            self.conn = None;
        }
        if !self.parked {
            Box::pin(self.end()).await;
        }
    }

    fn deadline(&self) -> Option<Instant> {
        let c = &self.ctx.shared.cfg.c2s;
        let io = self.conn.as_ref().map(|_| {
            (self.last_read + c.read_timeout.0).min(self.last_write + c.keepalive_interval.0)
        });
        let sm = self.sm.next_deadline().map(Instant::from_std);
        match (io, sm) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    async fn run(&mut self) {
        let mut shutdown = self.ctx.shared.shutdown_signal();
        // A client may pipeline stanzas right behind its bind request: they are already in
        // the decoder and no further read would surface them.
        let deferred = self.deferred.clone();
        if let Flow::Stop = durable::DEFERRED
            .scope(deferred, Box::pin(self.on_readable()))
            .await
        {
            return;
        }
        loop {
            let deadline = self.deadline();
            let paused = self.paused;
            let ev = {
                let conn = &mut self.conn;
                let rx = &mut self.rx;
                tokio::select! {
                    m = rx.recv() => Ev::Msg(m),
                    r = read_opt(conn), if paused.is_none() => Ev::Read(r),
                    _ = async { match paused { Some(p) => tokio::time::sleep_until(p).await, None => std::future::pending().await } }, if paused.is_some() => Ev::Unpaused,
                    _ = async { match deadline { Some(d) => tokio::time::sleep_until(d).await, None => std::future::pending().await } } => Ev::Timer,
                    _ = shutdown.changed() => Ev::Shutdown,
                }
            };
            // The handlers are boxed: their futures exist only while they run, so the
            // future an idle session waits in stays a few hundred bytes.
            let flow = match ev {
                Ev::Msg(m) => Box::pin(self.on_msgs(m)).await,
                Ev::Read(Ok(())) => {
                    self.last_read = Instant::now();
                    let deferred = self.deferred.clone();
                    durable::DEFERRED
                        .scope(deferred, Box::pin(self.on_readable()))
                        .await
                }
                Ev::Read(Err(e)) => Box::pin(self.on_transport_error(e)).await,
                Ev::Timer => Box::pin(self.on_timer()).await,
                Ev::Shutdown => Box::pin(self.on_shutdown()).await,
                Ev::Unpaused => {
                    self.paused = None;
                    let deferred = self.deferred.clone();
                    durable::DEFERRED
                        .scope(deferred, Box::pin(self.on_readable()))
                        .await
                }
            };
            if !self.write_through.is_empty() {
                Box::pin(self.flush_write_through()).await;
            }
            if let Flow::Stop = flow {
                return;
            }
        }
    }

    /// Handles `first` and the stanzas queued right behind it, written to the client in one
    /// write (a burst costs a few syscalls, not one per stanza). Only stanzas are batched:
    /// anything else waits in the inbox and meets the wire as it was.
    async fn on_msgs(&mut self, first: SessionMsg) -> Flow {
        let batch = matches!(first, SessionMsg::Stanza(_)) && self.conn.is_some();
        if !batch {
            return self.on_msg(first).await;
        }
        self.batching = true;
        let mut flow = self.on_msg(first).await;
        let mut n = 1;
        while let Flow::Continue = flow {
            if n == MSG_BATCH {
                break;
            }
            let next = self.rx.try_recv_if(|m| matches!(m, SessionMsg::Stanza(_)));
            let Some(m) = next else { break };
            flow = self.on_msg(m).await;
            n += 1;
        }
        self.batching = false;
        match flow {
            Flow::Continue => self.flush_batch().await,
            Flow::Stop => Flow::Stop,
        }
    }

    /// Writes what a batch collected.
    async fn flush_batch(&mut self) -> Flow {
        let out = std::mem::take(&mut self.wbuf);
        if out.is_empty() {
            return Flow::Continue;
        }
        self.write_raw(&out).await
    }

    async fn on_msg(&mut self, m: SessionMsg) -> Flow {
        match m {
            SessionMsg::Stanza(r) => self.deliver(*r).await,
            SessionMsg::Command(Command::Send(els)) => self.write_now(els).await,
            SessionMsg::Command(Command::CheckOffline) => {
                if self.ctx.reachable() {
                    self.start_backlog(false, true).await
                } else {
                    Flow::Continue
                }
            }
            SessionMsg::Command(Command::RosterPush(iq)) => {
                if self.ctx.presence.interested {
                    self.write_now(vec![*iq]).await
                } else {
                    Flow::Continue
                }
            }
            SessionMsg::Command(Command::RebroadcastPresence) => {
                presence::rebroadcast(&mut self.ctx).await;
                Flow::Continue
            }
            SessionMsg::Kick(e) => {
                self.fail(&e).await;
                Flow::Stop
            }
            SessionMsg::HandOff(done) => self.on_hand_off(done).await,
            SessionMsg::SetExpiry(at) => {
                self.sm.set_hibernation_deadline(at.max(std_now()));
                Flow::Continue
            }
            SessionMsg::Resume {
                conn,
                h,
                previd,
                sasl2,
            } => self.on_resume(conn, h, previd, sasl2).await,
        }
    }

    /// Writes elements straight to the transport (not counted by SM: nonzas and IQ replies
    /// are counted by `emit`, which callers use for stanzas).
    pub(crate) async fn write_now(&mut self, els: Vec<Element>) -> Flow {
        for el in els {
            let mut out = Routed::server(el);
            out.at = delay::now_micros();
            if let Flow::Stop = self.emit(out, false).await {
                return Flow::Stop;
            }
        }
        Flow::Continue
    }

    async fn write_raw(&mut self, data: &[u8]) -> Flow {
        let Some(conn) = self.conn.as_mut() else {
            return Flow::Continue;
        };
        if self.batching {
            self.wbuf.extend_from_slice(data);
            return Flow::Continue;
        }
        match conn.write_raw(data).await {
            Ok(()) => {
                self.last_write = Instant::now();
                Flow::Continue
            }
            Err(e) => self.on_transport_error(e).await,
        }
    }

    /// Delivers a routed stanza: through CSI, into the SM queue, onto the transport.
    pub(crate) async fn deliver(&mut self, mut r: Routed) -> Flow {
        let ticket = r.durable.take();
        let queued = self.write_through.len();
        let flow = self.deliver_now(r).await;
        // Written through after this event: the sender's ack waits until then.
        if let Some(t) = ticket {
            if self.write_through.len() > queued {
                self.write_through_tickets.push(t);
            }
        }
        flow
    }

    async fn deliver_now(&mut self, mut out: Routed) -> Flow {
        out.at = delay::now_micros();
        if let Some(flow) = self.intercept_incoming(&out.el).await {
            return flow;
        }
        let hold = self.ctx.shared.push.classifier().csi_may_hold(&out.el);
        let bytes = self.weigh(&mut out);
        // Only the offered stanza may push (stanzas flushed from the CSI buffer never do),
        // and only as herald-push's CSI rule allows.
        let pushes =
            herald_push::delivery::csi_lets_push(hold, self.csi.is_active()).then_some(out.origin);
        let ready = self.csi.offer_sized(out, bytes, !hold);
        self.emit_all(ready, pushes).await
    }

    /// Emits stanzas in order (the one with id `pushes` may cause a push); if the session
    /// must stop half-way, the ones not emitted are kept for `end` to hand on.
    async fn emit_all(&mut self, items: Vec<Routed>, pushes: Option<Origin>) -> Flow {
        let mut items = items.into_iter();
        while let Some(o) = items.next() {
            let may_push = pushes == Some(o.origin);
            if let Flow::Stop = self.emit(o, may_push).await {
                self.spilled.extend(items);
                return Flow::Stop;
            }
        }
        Flow::Continue
    }

    /// Carries out what a feature handler asked of the session (`SessionCtx::effects`), in
    /// order.
    async fn apply_effects(&mut self) -> Flow {
        for e in std::mem::take(&mut self.ctx.effects) {
            let flow = match e {
                Effect::Write(els) => {
                    // What the client asked the server to read and send (MAM results) is
                    // charged to its inbound rate as well (`InboundRate::take_answered`).
                    self.answers += els.len() as u64;
                    self.write_now(els).await
                }
                Effect::StopBacklog => {
                    self.stop_backlog();
                    Flow::Continue
                }
                Effect::StartBacklog { requests, offline } => {
                    self.start_backlog(requests, offline).await
                }
            };
            if let Flow::Stop = flow {
                return Flow::Stop;
            }
        }
        Flow::Continue
    }

    /// Stanzas a session consumes itself instead of passing to the client.
    async fn intercept_incoming(&mut self, el: &Element) -> Option<Flow> {
        if stanza::kind(el) == Some(Kind::Presence) && stanza::typ(el) == "probe" {
            presence::answer_probe(&mut self.ctx, el).await;
            // Boxed: applying effects may deliver, which comes back here.
            return Some(Box::pin(self.apply_effects()).await);
        }
        None
    }

    /// The stanza's weight against the session's byte budget, charging it if routing did
    /// not (the server's own stanzas, stored ones): whatever the session holds is counted.
    pub(crate) fn weigh(&self, o: &mut Routed) -> usize {
        match &o.charge {
            Some(c) => c.bytes(),
            None => {
                let bytes = stanza::mem_cost(&o.el);
                o.charge = Some(self.tx.budget().charge(bytes));
                bytes
            }
        }
    }

    /// Puts one stanza on the wire (and in the SM queue when enabled); `may_push` lets a
    /// sleeping session's queue fire push rule a for it.
    async fn emit(&mut self, mut o: Routed, may_push: bool) -> Flow {
        // Without XEP-0198 the stanza is written now and dropped: nothing to weigh.
        let size = if self.sm.is_enabled() {
            self.weigh(&mut o)
        } else {
            0
        };
        if self.sm.is_full_for(size) {
            // XEP-0198 §4: a client that never acks cannot grow our memory without bound,
            // in count (`max_queue`) or in bytes (`session_queue_bytes`). The stanza that
            // does not fit is handed on with the queue when the session ends.
            let what = if self.sm.is_full() {
                "too many unacknowledged stanzas"
            } else {
                "unacknowledged stanzas exceed the session's byte budget"
            };
            tracing::warn!(
                unacked = self.sm.unacked_len(),
                bytes = self.sm.unacked_bytes(),
                "stream management queue overflow"
            );
            self.spilled.push(o);
            let se = StreamError::new(StreamErrorCondition::PolicyViolation, Some(what.into()));
            self.fail(&se).await;
            return Flow::Stop;
        }
        let mut bytes = Vec::new();
        if self.conn.is_some() {
            let ns = self
                .conn
                .as_ref()
                .map(|c| c.ns)
                .unwrap_or(herald_proto::stream::StreamNs::Client);
            herald_proto::stream::encode(&o.el, ns, &mut bytes);
        }
        if !self.sm.is_enabled() {
            return self.write_raw(&bytes).await;
        }
        let now = std_now();
        let id = o.origin.id();
        let fires = herald_push::delivery::queued_may_push(
            may_push,
            id.is_some(),
            self.conn.is_some(),
            self.sm.ack_overdue(),
        );
        let info = id.filter(|_| fires).map(|id| {
            self.ctx
                .shared
                .push
                .info_for(id, &o.el, self.ctx.jid.as_str(), o.at)
        });
        if self.persisted && self.conn.is_none() {
            self.write_through.extend(crate::c2s::persist::queued(&o));
        }
        match self.sm.push_outbound_sized(o, size, now) {
            Ok(request) => {
                if let Some(info) = info {
                    self.ctx.shared.push.send(PushEvent::StanzaQueued {
                        session: self.ctx.id,
                        stanza: info,
                    });
                }
                if self.conn.is_some() {
                    if request {
                        herald_proto::stream::encode(&sm_wire::r(), StreamNs::Client, &mut bytes);
                        self.sm.request_sent(now);
                    }
                    return self.write_raw(&bytes).await;
                }
                Flow::Continue
            }
            Err(e) => {
                // Unreachable: enabled and not full were checked above.
                tracing::error!(error = %e, "stream management refused a stanza");
                let se = StreamError::new(StreamErrorCondition::InternalServerError, None);
                self.fail(&se).await;
                Flow::Stop
            }
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
                    let cost = crate::stanza::mem_cost(&el);
                    match self.on_client_element(el).await {
                        Ok(Flow::Continue) => {}
                        Ok(Flow::Stop) => return Flow::Stop,
                        Err(e) => {
                            self.fail(&e).await;
                            return Flow::Stop;
                        }
                    }
                    // Over its rate, the client waits: the rest of what it sent stays in
                    // the decoder and the socket until the debt is paid.
                    let answers = std::mem::take(&mut self.answers);
                    if let Some(until) = self.inbound.take_answered(cost, answers, std_now()) {
                        self.ctx
                            .shared
                            .metrics
                            .c2s_throttled
                            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let wait = until.saturating_duration_since(std_now());
                        self.paused = Some(Instant::now() + wait);
                        tracing::debug!(?wait, "client over its inbound rate: reading paused");
                        break;
                    }
                }
                Ok(Some(StreamEvent::End)) => {
                    // RFC 6120 §4.4: answer the close and end (no hibernation: the client left).
                    if let Some(mut c) = self.conn.take() {
                        c.close().await;
                    }
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

    /// The connection failed: a stream error ends the session, anything else hibernates a
    /// resumable one (XEP-0198 §5) and ends the others.
    async fn on_transport_error(&mut self, e: ConnError) -> Flow {
        match e {
            ConnError::Stream(se) => {
                self.fail(&se).await;
                Flow::Stop
            }
            other => {
                tracing::info!(error = %other, "connection lost");
                self.conn = None;
                self.hibernate_or_stop().await
            }
        }
    }

    async fn fail(&mut self, e: &StreamError) {
        // What a batch collected goes out before the error (without SM it has no other copy).
        // This is the only way a batch stops early: another `Flow::Stop` while batching must
        // flush `wbuf` too.
        let out = std::mem::take(&mut self.wbuf);
        self.batching = false;
        if let Some(mut c) = self.conn.take() {
            if !out.is_empty() {
                let _ = c.write_raw(&out).await;
            }
            c.fail(self.ctx.jid.domain().as_str(), e).await;
        }
    }

    /// The session is over. Undelivered stanzas are handed on while the session is still
    /// registered, so that anything routed meanwhile lands in its inbox and is handed on after
    /// them (order kept) and a reconnecting client's offline load finds them; then it leaves
    /// the router, drains its inbox, and tells subscribers.
    async fn end(&mut self) {
        self.deferred.settle().await;
        let mut left: Vec<Routed> = self.sm.take_unacked();
        left.append(&mut self.spilled);
        left.extend(self.csi.take_held());
        // Read from offline storage and not yet had by the client: the row is still stored.
        left.retain(|o| o.origin.offline_row().is_none());
        if !left.is_empty() {
            tracing::info!(count = left.len(), "re-routing undelivered stanzas");
        }
        for o in left {
            offline::undelivered(&self.ctx.shared, &self.ctx.bare, o, self.ctx.id).await;
        }
        self.ctx.shared.router.unbind(
            &self.ctx.bare,
            self.ctx.jid.resource().as_str(),
            self.ctx.id,
        );
        self.stop_backlog();
        let last_h = self.sm.inbound_h();
        self.unsave().await;
        if let Some(id) = self.sm_id.take() {
            self.ctx.shared.resumable_remove(&id);
            self.ctx
                .shared
                .tombstone_insert(&id, &self.ctx.bare, last_h);
            if !self.ctx.shared.account_gone(&self.ctx.bare) {
                let t = vec![(self.ctx.bare.clone(), id, last_h, persist::unix_millis())];
                if let Err(e) = self
                    .ctx
                    .shared
                    .db(move |s: &roles::Sessions| s.save_tombstones(&t))
                    .await
                {
                    tracing::warn!(error = %e, "saving the tombstone failed");
                }
            }
        }
        self.rx.close();
        while let Some(m) = self.rx.try_recv() {
            match m {
                SessionMsg::Stanza(r) => {
                    let mut o = *r;
                    o.at = delay::now_micros();
                    o.durable = None;
                    offline::undelivered(&self.ctx.shared, &self.ctx.bare, o, self.ctx.id).await;
                }
                SessionMsg::Resume { conn, sasl2, .. } => {
                    // XEP-0198 §5: too late, the session is gone (inline in SASL2: the
                    // `<failed/>` inside the `<success/>`, and the client starts afresh).
                    let mut conn = *conn;
                    let f = sm_nonza::resume_unknown(Some(last_h));
                    let f = match sasl2 {
                        Some(s) => s.into_element(&self.ctx.bare, vec![f]),
                        None => f,
                    };
                    let _ = conn.send(&f).await;
                    conn.close().await;
                }
                _ => {}
            }
        }
        let ev = hooks::SessionEnded {
            session: self.ctx.id,
        };
        hooks::notify(&self.ctx.shared.hooks.session_ended, &self.ctx.shared, ev);
        if self.ctx.available() {
            presence::broadcast_unavailable(&mut self.ctx).await;
            // Ending: nothing more goes to this client.
            self.ctx.effects.clear();
        } else if !self.ctx.presence.directed.is_empty() {
            // Never available, yet present somewhere (a group chat joined without initial
            // presence): those places learn it left.
            presence::unavailable_to_directed(&mut self.ctx).await;
            self.ctx.effects.clear();
        }
        tracing::debug!("session ended");
    }

    async fn on_client_element(&mut self, mut el: Element) -> Result<Flow, StreamError> {
        let Some(kind) = stanza::kind(&el) else {
            return self.on_nonza(el).await;
        };
        if self.sm.is_enabled() {
            self.sm.on_inbound_stanza();
        }
        // RFC 6120 §8.1.2.1: the server stamps 'from'; a client may only claim itself.
        match stanza::from(&el) {
            Ok(None) => {}
            Ok(Some(f)) if f == self.ctx.jid || f.to_bare().as_str() == self.ctx.bare => {}
            _ => {
                return Err(StreamError::new(
                    StreamErrorCondition::InvalidFrom,
                    Some("'from' does not match this session".to_string()),
                ))
            }
        }
        stanza::set(&mut el, "from", self.ctx.jid.to_string());
        let to = match stanza::to(&el) {
            Ok(t) => t,
            Err(_) => {
                if let Some(r) = stanza::error(&el, StanzaErrorCondition::JidMalformed, None) {
                    return Ok(self.write_now(vec![r]).await);
                }
                return Ok(Flow::Continue);
            }
        };
        // XEP-0359 §3, XEP-0203: only this server stamps stanza-ids and delays of its own.
        let shared = &self.ctx.shared;
        stanza::strip_spoofed(&mut el, |d| shared.stamps_ours(d));
        Ok(match kind {
            Kind::Iq => self.on_iq(el, to).await,
            Kind::Presence => {
                presence::outbound(&mut self.ctx, el, to).await;
                self.apply_effects().await
            }
            Kind::Message => {
                if to.is_none() {
                    // RFC 6121 §8.1.1.1: no 'to' means the sender's bare JID.
                    stanza::set(&mut el, "to", self.ctx.bare.clone());
                }
                crate::features::message::outbound(&mut self.ctx, el).await;
                self.apply_effects().await
            }
        })
    }

    async fn on_iq(&mut self, el: Element, to: Option<Jid>) -> Flow {
        let own = match &to {
            None => true,
            Some(j) => {
                (j.is_bare() && j.to_string() == self.ctx.bare)
                    || iq::own_at_server(&el, j, self.ctx.jid.domain().as_str())
            }
        };
        if !own {
            // A MAM query to a room (or any other archive) is charged for the page it asks
            // for, as the results from our own archive are (`take_answered`): they come back
            // as routed messages this session cannot tell apart.
            let max_page = self.ctx.shared.cfg.mam.max_page;
            if let Some(page) = crate::xep::mam::page_asked(&el, max_page) {
                self.answers += page as u64;
            }
            routing::route(&self.ctx.shared, el).await;
            return Flow::Continue;
        }
        match stanza::typ(&el) {
            "get" | "set" => {
                let reply = iq::handle_own_iq(&mut self.ctx, &el).await;
                // What the handler asked for (e.g. MAM results) goes before its answer.
                if let Flow::Stop = self.apply_effects().await {
                    return Flow::Stop;
                }
                match reply {
                    Some(r) => self.write_now(vec![r]).await,
                    None => Flow::Continue,
                }
            }
            // Results and errors addressed to the account itself have nobody to go to.
            _ => Flow::Continue,
        }
    }

    /// The session's full JID.
    pub fn jid(&self) -> &FullJid {
        &self.ctx.jid
    }

    /// The session id.
    pub fn id(&self) -> u64 {
        self.ctx.id
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        // `end` left the router and forgot the resumption id. A task that did not get there
        // (it panicked, or was aborted) must not leave a zombie behind that routing keeps
        // queueing to and `<resume/>` keeps finding. A parked session stays for the stop.
        if !self.parked {
            let shared = self.ctx.shared.clone();
            release_leftovers(
                &shared.router,
                |id| shared.resumable_remove(id),
                &self.ctx.bare,
                self.ctx.jid.resource().as_str(),
                self.ctx.id,
                self.sm_id.take(),
            );
        }
        self.ctx.shared.session_finished();
    }
}

/// What a session still holds when its task ends without `end`: its router entry (removed
/// only if it is still this session's, [`Router::unbind`](crate::routing::router::Router::unbind)
/// checks the id) and its XEP-0198 resumption id. A no-op after `end`.
fn release_leftovers(
    router: &crate::routing::router::Router,
    forget_resumable: impl FnOnce(&str),
    bare: &str,
    resource: &str,
    session_id: u64,
    sm_id: Option<String>,
) {
    router.unbind(bare, resource, session_id);
    if let Some(id) = sm_id {
        forget_resumable(&id);
    }
}

fn unsupported(el: &Element) -> StreamError {
    StreamError::new(
        StreamErrorCondition::UnsupportedStanzaType,
        Some(format!("<{}/> is not supported here", el.name())),
    )
}

#[cfg(test)]
mod drop_tests {
    use super::*;
    use crate::routing::router::Router;

    use crate::routing::router::test_entry as entry;

    #[test]
    fn leftovers_are_released_only_if_still_ours() {
        let r = Router::default();
        r.bind("u@d", entry("a", 1), 10).unwrap();
        let mut forgotten = Vec::new();
        release_leftovers(
            &r,
            |id| forgotten.push(id.to_string()),
            "u@d",
            "a",
            1,
            Some("sm1".into()),
        );
        assert!(r.resources("u@d").is_empty(), "the zombie entry is gone");
        assert_eq!(forgotten, ["sm1"]);

        // A newer session took the resource over: the old one's drop leaves it alone.
        r.bind("u@d", entry("a", 2), 10).unwrap();
        release_leftovers(&r, |_| {}, "u@d", "a", 1, None);
        let left: Vec<u64> = r.resources("u@d").iter().map(|e| e.session_id).collect();
        assert_eq!(left, [2]);
    }
}
