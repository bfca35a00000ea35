//! The messages between tasks, and the handles that send them: what a session task is asked
//! to do ([`SessionMsg`]), the stanza it is given and queues ([`Routed`], whose [`Origin`] says what its id is), and what
//! the push task hears ([`PushEvent`] through [`PushHandle`]). A leaf: it names no feature,
//! session or router module, so every module may use it without an import circle; sockets
//! appear only as the opaque connection a resumption hands over.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use herald_proto::error::{ErrorType, StreamError};
use herald_proto::Element;
use herald_push::engine::{Registration, Reply, SessionId, SessionPush, StanzaInfo};
use herald_push::Classifier;
use herald_session::budget::{Charge, QueueBudget};
use herald_store::StoreError;
use herald_transport::inbox::TrySendError;
use tokio::sync::{mpsc, oneshot};

// Session tasks.

/// Where a stanza for a client comes from, which says what its id is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    /// Routed to the session, with the process-unique id it keeps on every path (session
    /// queue, offline storage, archive, push dedup).
    Routed(u64),
    /// Read from offline storage: this row, deleted once the client has the stanza and never
    /// stored again (the row is still there) when the session ends without that.
    Offline(i64),
    /// Made by the server for this client alone (an IQ's answer, a MAM result, a roster
    /// push): never pushed for, never handed on when the session ends.
    Server,
}

impl Origin {
    /// The id push dedup knows the stanza by; None for the server's own. An offline row's is
    /// the row id with the top bit set, so a stanza read twice (redelivery after a lost
    /// connection) is the same stanza.
    pub fn id(self) -> Option<u64> {
        match self {
            Origin::Routed(id) => Some(id),
            Origin::Offline(row) => Some(OFFLINE_ID_BIT | row.unsigned_abs()),
            Origin::Server => None,
        }
    }

    /// The offline-storage row it was read from.
    pub fn offline_row(self) -> Option<i64> {
        match self {
            Origin::Offline(row) => Some(row),
            _ => None,
        }
    }
}

/// A stanza on its way to a client: the one envelope from routing through the session's
/// inbox, its XEP-0198 queue and CSI buffer, to offline storage or the saved session.
#[derive(Debug)]
pub struct Routed {
    /// Where it comes from.
    pub origin: Origin,
    /// The stanza, addressed and stamped.
    pub el: Element,
    /// When the session queued it (XEP-0203 stamp on retransmission), unix micros; 0 before.
    pub at: i64,
    /// For a message to a sleeping session whose queue is saved: released once the stanza is
    /// written through, so the sender's XEP-0198 ack waits for it (see `durable`). The
    /// session takes it out as it queues the stanza.
    pub durable: Option<Arc<crate::routing::durable::Durable>>,
    /// Its weight against the session's and the account's byte budgets while it is held
    /// (`limits.session_queue_bytes`), given back when it is dropped: acknowledged, written
    /// without XEP-0198, stored offline, bounced.
    pub charge: Option<Charge>,
}

/// A copy carries no charge: the original, still queued, holds the memory; copies are
/// short-lived (a retransmission, a push summary).
impl Clone for Routed {
    fn clone(&self) -> Routed {
        Routed {
            origin: self.origin,
            el: self.el.clone(),
            at: self.at,
            durable: self.durable.clone(),
            charge: None,
        }
    }
}

impl Routed {
    /// A stanza routed under id `id`.
    pub fn new(id: u64, el: Element) -> Routed {
        Routed::from_origin(Origin::Routed(id), el)
    }

    /// The server's own stanza for this client.
    pub fn server(el: Element) -> Routed {
        Routed::from_origin(Origin::Server, el)
    }

    /// A stanza of the given origin, not yet queued.
    pub fn from_origin(origin: Origin, el: Element) -> Routed {
        Routed {
            origin,
            el,
            at: 0,
            durable: None,
            charge: None,
        }
    }
}

/// What a session task can be asked to do.
pub enum SessionMsg {
    /// Deliver this stanza to the client. Boxed, like every large payload here: each
    /// session's inbox allocates its slots up front, and a small message keeps that small.
    Stanza(Box<Routed>),
    /// Push moved the hibernation deadline (extended hibernation, XEP-0357 glue).
    SetExpiry(std::time::Instant),
    /// XEP-0198 resumption: take over this connection.
    Resume {
        /// The new connection.
        conn: Box<herald_transport::conn::Conn>,
        /// The client's h.
        h: u32,
        /// The resumption id.
        previd: String,
        /// SASL2 inline resumption (XEP-0388): the `<success/>` to complete and send instead
        /// of a bare `<resumed/>`.
        sasl2: Option<Box<herald_session::sasl2::Success>>,
    },
    /// End the stream with this error (e.g. `conflict` when another login takes the resource).
    Kick(StreamError),
    /// Cluster mode: the client resumes on another node; save the session and let it go
    /// (true once saved).
    HandOff(oneshot::Sender<bool>),
    /// Run this internal command inside the session (roster pushes, admin actions).
    Command(Command),
}

/// Internal requests to a session.
#[derive(Debug)]
pub enum Command {
    /// Write these elements to the client as they are (e.g. roster pushes, offline messages).
    Send(Vec<Element>),
    /// Deliver the user's stored offline messages, if this resource is reachable and no other
    /// resource is delivering them (another resource handing the backlog on).
    CheckOffline,
    /// A roster push (RFC 6121 §2.1.6): written only if this client asked for the roster.
    RosterPush(Box<Element>),
    /// The user's avatar hash changed (a vCard set, XEP-0153): broadcast the last available
    /// presence again, which now carries the new hash.
    RebroadcastPresence,
}

/// The bit that tells an offline row's id from a routing id (see [`Origin::id`]).
pub const OFFLINE_ID_BIT: u64 = 1 << 63;

/// A resumable session's registration in the resumption table.
#[derive(Clone, Debug)]
pub struct Resumable {
    /// The account.
    pub bare: String,
    /// The session's inbox.
    pub tx: SessionTx,
}

/// A session task's inbox (bounded by `limits.session_inbox`; see `inbox` for why not mpsc)
/// with the session's byte budget (`limits.session_queue_bytes`, within the account's), which
/// routing charges as it queues a stanza. In cluster mode the router also holds the other
/// nodes' sessions ([`SessionTx::remote`]): what is sent to those goes out on their node's
/// delivery stream, so every feature reaches a session the same way wherever it is.
#[derive(Clone, Debug)]
pub struct SessionTx(TxInner);

#[derive(Clone, Debug)]
enum TxInner {
    Local {
        inbox: herald_transport::inbox::Sender<SessionMsg>,
        budget: QueueBudget,
        drained: Arc<Drained>,
    },
    Remote(Arc<RemoteTx>),
}

/// A session bound on another cluster node.
#[derive(Debug)]
pub struct RemoteTx {
    /// Its full JID.
    pub full: String,
    /// Its node's outgoing queue.
    pub link: Arc<NodeLink>,
}

/// The queue of what this node sends to one other node's sessions, written to that node's
/// delivery stream by the cluster forwarder task. Bounded like a session's inbox: in count
/// (`limit` stanzas; control messages such as kicks pass, as they do on an inbox) and in
/// bytes (its budget, charged by routing exactly as a local session's).
#[derive(Debug)]
pub struct NodeLink {
    /// The other node's name.
    pub node: String,
    queue: mpsc::UnboundedSender<Outgoing>,
    queued: Arc<AtomicUsize>,
    limit: usize,
    budget: QueueBudget,
    closed: std::sync::atomic::AtomicBool,
}

/// One thing for a session on another node.
#[derive(Debug)]
pub struct Outgoing {
    /// What to do.
    pub op: herald_cluster::Op,
    /// The session's full JID.
    pub to: String,
    /// Serialized by the forwarder, off the routing path.
    pub payload: Payload,
    /// Given back once written to the stream.
    pub charge: Option<Charge>,
    counted: Option<Arc<AtomicUsize>>,
}

impl Drop for Outgoing {
    fn drop(&mut self) {
        if let Some(c) = self.counted.take() {
            c.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

/// The argument of an [`Outgoing`].
#[derive(Debug)]
pub enum Payload {
    /// None.
    Empty,
    /// A stream error condition (for a kick).
    Text(String),
    /// One stanza.
    Element(Box<Element>),
    /// Several stanzas, written as they are.
    Batch(Vec<Element>),
}

tokio::task_local! {
    /// Set while a node handles what another node sent it: a stanza that finds its session
    /// gone there is routed again, and must then not be sent on to a third node (or back),
    /// which could loop while the nodes' views of an account disagree.
    pub static FROM_CLUSTER: ();
    /// Set while a node routes what another node routed to it because it serves its
    /// destination (the group chat service): it is served here whatever this node
    /// believes, never sent back (what serving it sends to other nodes' sessions goes).
    pub static ROUTED_HERE: ();
}

impl NodeLink {
    /// A link to `node` holding at most `limit` stanzas and `bytes` bytes; the receiver is
    /// the forwarder's.
    pub fn new(
        node: &str,
        limit: usize,
        bytes: usize,
    ) -> (Arc<NodeLink>, mpsc::UnboundedReceiver<Outgoing>) {
        let (queue, rx) = mpsc::unbounded_channel();
        (
            Arc::new(NodeLink {
                node: node.to_string(),
                queue,
                queued: Arc::new(AtomicUsize::new(0)),
                limit,
                budget: QueueBudget::new(bytes, None),
                closed: Default::default(),
            }),
            rx,
        )
    }

    /// The node is gone (its lease expired): sending fails as to an ended session.
    pub fn close(&self) {
        self.closed.store(true, Ordering::Release);
    }

    /// Whether [`NodeLink::close`] was called or the forwarder ended.
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire) || self.queue.is_closed()
    }

    /// Stanzas waiting to be written.
    pub fn queued(&self) -> usize {
        self.queued.load(Ordering::Acquire)
    }

    /// Queues an operation between the nodes themselves (a resumption hand-off and its
    /// answer): a control message, past the count limit; false if the node is gone.
    pub fn send_op(&self, op: herald_cluster::Op, to: &str, payload: String) -> bool {
        self.queue_op(op, to, payload, false)
    }

    /// Queues an operation that traffic causes (a push event handed to the account's push
    /// owner): counted against the limit like a stanza, so a flood to accounts owned by
    /// another node cannot grow the queue; false when it is full or the node gone (the
    /// caller then handles it here).
    pub fn try_send_op(&self, op: herald_cluster::Op, to: &str, payload: String) -> bool {
        self.queued() < self.limit && self.queue_op(op, to, payload, true)
    }

    fn queue_op(&self, op: herald_cluster::Op, to: &str, payload: String, count: bool) -> bool {
        if self.is_closed() {
            return false;
        }
        let counted = count.then(|| {
            self.queued.fetch_add(1, Ordering::AcqRel);
            self.queued.clone()
        });
        let out = Outgoing {
            op,
            to: to.to_string(),
            payload: Payload::Text(payload),
            charge: None,
            counted,
        };
        self.queue.send(out).is_ok()
    }

    /// Queues `el` to be routed on the other node (which serves `to`'s domain); Err(el)
    /// when the queue is full or the node gone.
    pub fn send_route(&self, to: &str, el: Element) -> Result<(), Element> {
        self.send_element(herald_cluster::Op::Route, to, el)
    }

    /// Queues `el` for the component of `domain` attached to the other node; Err(el) when
    /// the queue is full or the node gone.
    pub fn send_component(&self, domain: &str, el: Element) -> Result<(), Element> {
        self.send_element(herald_cluster::Op::Component, domain, el)
    }

    fn send_element(
        &self,
        op: herald_cluster::Op,
        domain: &str,
        el: Element,
    ) -> Result<(), Element> {
        if self.is_closed() || FROM_CLUSTER.try_with(|_| ()).is_ok() || self.queued() >= self.limit
        {
            return Err(el);
        }
        self.queued.fetch_add(1, Ordering::AcqRel);
        let out = Outgoing {
            op,
            to: domain.to_string(),
            payload: Payload::Element(Box::new(el)),
            charge: None,
            counted: Some(self.queued.clone()),
        };
        self.queue.send(out).map_err(|e| {
            let mut o = e.0;
            match std::mem::replace(&mut o.payload, Payload::Empty) {
                Payload::Element(el) => *el,
                // Not reached: the payload was made an element above.
                _ => Element::builder("message", "jabber:client").build(),
            }
        })
    }

    fn push(
        &self,
        full: &str,
        msg: SessionMsg,
        control: bool,
    ) -> Result<(), TrySendError<SessionMsg>> {
        if self.is_closed() || FROM_CLUSTER.try_with(|_| ()).is_ok() {
            return Err(TrySendError::Closed(msg));
        }
        if !control && self.queued() >= self.limit {
            return Err(TrySendError::Full(msg));
        }
        let (op, payload, charge) = match msg {
            SessionMsg::Stanza(mut r) => {
                // The sender's XEP-0198 ack no longer waits for this stanza: it is handed to
                // Redis, and the receiving node makes its own ticket if its session sleeps.
                r.durable = None;
                let charge = r.charge.take();
                (
                    herald_cluster::Op::Stanza,
                    Payload::Element(Box::new(r.el)),
                    charge,
                )
            }
            SessionMsg::Kick(e) => (
                herald_cluster::Op::Kick,
                // `condition` or `condition\ntext`.
                Payload::Text(match e.text {
                    Some(t) => format!("{}\n{t}", e.condition.as_str()),
                    None => e.condition.as_str().to_string(),
                }),
                None,
            ),
            SessionMsg::Command(Command::Send(els)) => {
                (herald_cluster::Op::Send, Payload::Batch(els), None)
            }
            SessionMsg::Command(Command::RosterPush(el)) => {
                (herald_cluster::Op::RosterPush, Payload::Element(el), None)
            }
            SessionMsg::Command(Command::CheckOffline) => {
                (herald_cluster::Op::CheckOffline, Payload::Empty, None)
            }
            SessionMsg::Command(Command::RebroadcastPresence) => {
                (herald_cluster::Op::Rebroadcast, Payload::Empty, None)
            }
            // A deadline or a connection belongs to the node that holds the session; nothing
            // on this node sends them to another node's session.
            other @ (SessionMsg::SetExpiry(_)
            | SessionMsg::Resume { .. }
            | SessionMsg::HandOff(_)) => {
                tracing::warn!(to = full, node = %self.node, "a deadline or a resumption is not sent to another node");
                return Err(TrySendError::Closed(other));
            }
        };
        let counted = if control {
            None
        } else {
            self.queued.fetch_add(1, Ordering::AcqRel);
            Some(self.queued.clone())
        };
        let out = Outgoing {
            op,
            to: full.to_string(),
            payload,
            charge,
            counted,
        };
        self.queue.send(out).map_err(|e| {
            tracing::debug!(node = %self.node, "forwarder gone");
            drop(e);
            TrySendError::Closed(SessionMsg::Command(Command::CheckOffline))
        })
    }
}

/// Heard each time the session gives a stanza's bytes back (written, acknowledged, stored,
/// dropped), for a producer that paces itself by the session ([`SessionTx::wait_for_room`]).
#[derive(Debug, Default)]
struct Drained {
    notify: tokio::sync::Notify,
    /// Producers waiting: without any, a release costs one atomic load.
    waiting: AtomicUsize,
}

impl SessionTx {
    /// A session's inbox (`limits.session_inbox` messages) and budget (`bytes`, within the
    /// account's `account`).
    pub fn inbox(
        capacity: usize,
        bytes: usize,
        account: Option<Arc<herald_session::budget::Budget>>,
    ) -> (SessionTx, herald_transport::inbox::Receiver<SessionMsg>) {
        let (inbox, rx) = herald_transport::inbox::bounded(capacity);
        let drained = Arc::new(Drained::default());
        let d = drained.clone();
        let hook = herald_session::budget::ReleaseHook(Arc::new(move || {
            if d.waiting.load(Ordering::Acquire) > 0 {
                d.notify.notify_waiters();
            }
        }));
        let budget = QueueBudget::with_release_hook(bytes, account, hook);
        (
            SessionTx(TxInner::Local {
                inbox,
                budget,
                drained,
            }),
            rx,
        )
    }

    /// The session `full` on the other node of `link`.
    pub fn remote(full: String, link: Arc<NodeLink>) -> SessionTx {
        SessionTx(TxInner::Remote(Arc::new(RemoteTx { full, link })))
    }

    /// The other node's session this stands for; None for this node's own.
    pub fn as_remote(&self) -> Option<&RemoteTx> {
        match &self.0 {
            TxInner::Remote(r) => Some(r),
            TxInner::Local { .. } => None,
        }
    }

    /// Whether this is a session of this node.
    pub fn is_local(&self) -> bool {
        matches!(self.0, TxInner::Local { .. })
    }

    /// Waits until the session holds at most `max_bytes` of stanzas and at most `max_held`
    /// of them (what routing gave it and it has not written, or not had acknowledged), its
    /// inbox is closed, or `deadline` passes: a producer of a long burst (a large room's
    /// occupant list) goes at the pace the client reads and acknowledges, instead of
    /// overrunning the session's budget. Another node's session is not waited for: its
    /// node's queue bounds what is sent to it.
    pub async fn wait_for_room(
        &self,
        max_bytes: usize,
        max_held: usize,
        deadline: tokio::time::Instant,
    ) {
        let TxInner::Local {
            inbox,
            budget,
            drained,
        } = &self.0
        else {
            return;
        };
        let fits =
            || inbox.is_closed() || (budget.used() <= max_bytes && budget.held() <= max_held);
        loop {
            if fits() {
                return;
            }
            let notified = drained.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            drained.waiting.fetch_add(1, Ordering::AcqRel);
            // A release between the check above and `enable` would not be heard: check again.
            let r = if fits() {
                Ok(())
            } else {
                tokio::time::timeout_at(deadline, notified).await
            };
            drained.waiting.fetch_sub(1, Ordering::AcqRel);
            if r.is_err() {
                return;
            }
        }
    }

    /// Queues `msg` unless the inbox is full or closed (the byte budget is the caller's:
    /// see `routing::send_to_routed`).
    pub fn try_send(&self, msg: SessionMsg) -> Result<(), TrySendError<SessionMsg>> {
        match &self.0 {
            TxInner::Local { inbox, .. } => inbox.try_send(msg),
            TxInner::Remote(r) => r.link.push(&r.full, msg, false),
        }
    }

    /// Queues a control message past the inbox's capacity (see
    /// [`herald_transport::inbox::Sender::send_control`]).
    pub fn send_control(&self, msg: SessionMsg) -> Result<(), SessionMsg> {
        match &self.0 {
            TxInner::Local { inbox, .. } => inbox.send_control(msg),
            TxInner::Remote(r) => r.link.push(&r.full, msg, true).map_err(|e| match e {
                TrySendError::Full(m) | TrySendError::Closed(m) => m,
            }),
        }
    }

    /// Whether the session closed its inbox.
    pub fn is_closed(&self) -> bool {
        match &self.0 {
            TxInner::Local { inbox, .. } => inbox.is_closed(),
            TxInner::Remote(r) => r.link.is_closed(),
        }
    }

    /// The session's byte budget (another node's: its link's).
    pub fn budget(&self) -> &QueueBudget {
        match &self.0 {
            TxInner::Local { budget, .. } => budget,
            TxInner::Remote(r) => &r.link.budget,
        }
    }
}

/// Sends to a component connection (`limits.component_queue_bytes`).
pub type ComponentTx = BoundedTx;

/// The sending side of a connection's queue (a component's, an outgoing s2s pair's),
/// bounded in count and in bytes: each element is charged its memory
/// (`herald_xep::stanza::mem_cost`) until the connection's task takes it out.
#[derive(Clone, Debug)]
pub struct BoundedTx {
    tx: mpsc::Sender<(Element, Charge)>,
    budget: QueueBudget,
}

/// The receiving side of a [`BoundedTx`]: taking an element out gives its bytes back.
pub struct BoundedRx(mpsc::Receiver<(Element, Charge)>);

/// A queue of at most `count` elements and `bytes` bytes (an empty queue takes one element
/// of any size).
pub fn bounded_queue(count: usize, bytes: usize) -> (BoundedTx, BoundedRx) {
    let (tx, rx) = mpsc::channel(count.max(1));
    let budget = QueueBudget::new(bytes, None);
    (BoundedTx { tx, budget }, BoundedRx(rx))
}

impl BoundedTx {
    /// Queues `el`; `Full` when the count or the byte bound would be passed.
    pub fn try_send(&self, el: Element) -> Result<(), mpsc::error::TrySendError<Element>> {
        let charge = match self.budget.try_charge(crate::stanza::mem_cost(&el)) {
            Ok(c) => c,
            Err(_) if self.tx.is_closed() => return Err(mpsc::error::TrySendError::Closed(el)),
            Err(_) => return Err(mpsc::error::TrySendError::Full(el)),
        };
        self.tx.try_send((el, charge)).map_err(|e| match e {
            mpsc::error::TrySendError::Full((el, _)) => mpsc::error::TrySendError::Full(el),
            mpsc::error::TrySendError::Closed((el, _)) => mpsc::error::TrySendError::Closed(el),
        })
    }

    /// Whether the receiving side is gone.
    pub fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }

    /// Whether both are the same queue.
    pub fn same_channel(&self, other: &BoundedTx) -> bool {
        self.tx.same_channel(&other.tx)
    }

    /// Bytes queued now.
    pub fn queued_bytes(&self) -> usize {
        self.budget.used()
    }
}

impl BoundedRx {
    /// The next element, waiting for one; None once every sender is gone.
    pub async fn recv(&mut self) -> Option<Element> {
        self.0.recv().await.map(|(el, _)| el)
    }

    /// The next element without waiting.
    pub fn try_recv(&mut self) -> Result<Element, mpsc::error::TryRecvError> {
        self.0.try_recv().map(|(el, _)| el)
    }

    /// Refuses further sends; what is queued can still be taken.
    pub fn close(&mut self) {
        self.0.close()
    }
}

// The push task.

/// Where a `herald push test` answer goes (its results, or why there are none); the push
/// task keeps it in `herald_push::diag::PushTests` until the run finishes.
pub type TestReply = oneshot::Sender<herald_push::diag::TestAnswer>;

/// Events for the push task.
#[derive(Debug)]
pub enum PushEvent {
    /// A session was bound (resets counts of the device's registrations).
    SessionStarted {
        /// Account.
        user: String,
        /// Session id.
        session: SessionId,
        /// Its resource.
        resource: String,
        /// Its inbox (for hibernation deadlines).
        tx: SessionTx,
        /// Bound by client id (Bind2): the device's registrations are attached to it.
        by_client_id: bool,
    },
    /// The session is gone for good.
    SessionEnded {
        /// Session id.
        session: SessionId,
    },
    /// `<enable/>`: persist first, then attach.
    Enable {
        /// Account.
        user: String,
        /// Enabling session.
        session: SessionId,
        /// The registration.
        reg: Registration,
        /// Ok once stored.
        reply: oneshot::Sender<Result<(), StoreError>>,
    },
    /// `<disable/>`.
    Disable {
        /// Account.
        user: String,
        /// App server JID.
        jid: String,
        /// Only this node.
        node: Option<String>,
        /// Ok once stored.
        reply: oneshot::Sender<Result<(), StoreError>>,
    },
    /// The admin removed registrations from the store: detach them from live sessions.
    Detach {
        /// Account.
        user: String,
        /// App server JID.
        jid: String,
        /// Only this node.
        node: Option<String>,
        /// Done.
        reply: oneshot::Sender<()>,
    },
    /// Rule a: an `<r/>` went unanswered.
    AckDelayed {
        /// Session.
        session: SessionId,
        /// Its unacked queue.
        unacked: Vec<StanzaInfo>,
    },
    /// The overdue ack arrived.
    Acked {
        /// Session.
        session: SessionId,
    },
    /// Rule a: the connection died and the session hibernates.
    HibernationStarted {
        /// Session.
        session: SessionId,
        /// Its unacked queue.
        unacked: Vec<StanzaInfo>,
    },
    /// Rule a: a stanza was queued while hibernated (or while the ack is overdue).
    StanzaQueued {
        /// Session.
        session: SessionId,
        /// The stanza.
        stanza: StanzaInfo,
    },
    /// XEP-0490: the user displayed `chat` up to `upto` (unix micros) on some device.
    Displayed {
        /// Account.
        user: String,
        /// The chat's JID (the displayed item's id).
        chat: String,
        /// Displayed up to this server time.
        upto: i64,
    },
    /// Rule a: resumed.
    Resumed {
        /// Session.
        session: SessionId,
    },
    /// Rule b: a message was archived for `user`.
    Archived {
        /// Account.
        user: String,
        /// The stanza.
        stanza: StanzaInfo,
    },
    /// Rule c: a message was stored offline for `user`.
    StoredOffline {
        /// Account.
        user: String,
        /// The stanza.
        stanza: StanzaInfo,
    },
    /// A groupchat message to `user`'s bare JID found no session online.
    GroupchatUnrouted {
        /// Account.
        user: String,
        /// The stanza.
        stanza: StanzaInfo,
    },
    /// Admin (`herald push test`): one publish to each registration of `user` (only app
    /// server `jid`, only `node`, when given), answered with each app server's answer.
    Test {
        /// Account.
        user: String,
        /// Only this app server JID.
        jid: Option<String>,
        /// Only this node.
        node: Option<String>,
        /// The per-registration results (or why there are none).
        reply: TestReply,
    },
    /// Admin: wake every device of `user`.
    Ping {
        /// Account.
        user: String,
        /// Number of registrations pinged.
        reply: oneshot::Sender<usize>,
    },
    /// Cluster mode: another node changed `user`'s registrations in the store.
    Reload {
        /// Account.
        user: String,
    },
    /// Operator/test view of the engine (answered after every event queued before it).
    Stats {
        /// The engine's counters.
        reply: oneshot::Sender<PushStats>,
    },
    /// A hibernated session's push state, to save it at shutdown.
    SessionPush {
        /// Session.
        session: SessionId,
        /// None when not hibernated or without registrations.
        reply: oneshot::Sender<Option<SessionPush>>,
    },
    /// A hibernated session restored at start-up (after a clean restart).
    Restore {
        /// Account.
        user: String,
        /// Session id (of this process).
        session: SessionId,
        /// Its inbox (for hibernation deadlines).
        tx: SessionTx,
        /// What it had.
        push: SessionPush,
        /// Its resumption deadline.
        expiry: Instant,
    },
    /// After a crash: wake every device of `user` (one push each, unimportant), so it
    /// reconnects and catches up.
    Wake {
        /// Account.
        user: String,
    },
    /// Shutdown: write the statistics and stop.
    Stop {
        /// Done.
        reply: oneshot::Sender<()>,
    },
    /// The app server answered a publish.
    Reply {
        /// The publish's id.
        iq_id: String,
        /// Who answered (the reply's stamped `from`).
        from: String,
        /// Its outcome.
        reply: Reply,
        /// The `<error type>` as received (`reply` keeps only whether it was `wait`), for
        /// `herald push test`; None for a result.
        error_type: Option<ErrorType>,
    },
    /// Rule d (RULES.md §4a): a room broadcast a groupchat message; `members` are its local
    /// members with no session joined in it.
    RoomMessage {
        /// The room's bare JID.
        room: String,
        /// The room is members-only (XEP-0492's default setting).
        members_only: bool,
        /// The sender's real bare JID.
        sender: String,
        /// The message as broadcast (no `to`).
        message: Element,
        /// What the engine needs of it (one id for every member: dedup is per registration).
        stanza: StanzaInfo,
        /// The members to decide for, with what their bookmarks say.
        members: Vec<RoomMember>,
    },
}

/// A room member rule d decides for, as its XEP-0402 bookmark of the room describes it.
#[derive(Clone, Debug)]
pub struct RoomMember {
    /// Bare JID.
    pub bare: String,
    /// The member keeps a XEP-0402 bookmark of the room.
    pub bookmarked: bool,
    /// The bookmark's nick (mentions).
    pub nick: Option<String>,
    /// The bookmark's XEP-0492 setting.
    pub setting: Option<herald_push::groupchat::NotifySetting>,
}

/// What the push engine holds right now.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PushStats {
    /// Publishes awaiting a reply or waiting for a retry (bounded; 0 when the app servers
    /// have answered or timed out for good).
    pub pending: usize,
    /// How publishes ended so far.
    pub outcomes: herald_push::engine::Outcomes,
}

/// Stanza events (which may be dropped under overload) queued for the push task at most.
const MAX_QUEUED_STANZA_EVENTS: usize = 65_536;

impl PushEvent {
    /// When the stanza this event is about reached the push path (unix micros), for the
    /// event → publish latency; None for events that are not about a new stanza (lifecycle,
    /// replies, and the unacked queues of rule a, whose wait is the ack timeout's).
    pub fn stanza_at(&self) -> Option<i64> {
        match self {
            PushEvent::Archived { stanza, .. }
            | PushEvent::StoredOffline { stanza, .. }
            | PushEvent::GroupchatUnrouted { stanza, .. }
            | PushEvent::StanzaQueued { stanza, .. } => Some(stanza.at).filter(|at| *at > 0),
            _ => None,
        }
    }

    /// Events about one stanza (or a reply) may be dropped when the push task is
    /// overwhelmed: a push is lost, nothing else. Session lifecycle events, requests a
    /// client or operator waits for, and state transfers are never dropped: losing one
    /// would leave engine state (a session, a registration attachment) behind for good.
    fn droppable(&self) -> bool {
        matches!(
            self,
            PushEvent::AckDelayed { .. }
                | PushEvent::StanzaQueued { .. }
                | PushEvent::Archived { .. }
                | PushEvent::StoredOffline { .. }
                | PushEvent::GroupchatUnrouted { .. }
                | PushEvent::Reply { .. }
                | PushEvent::RoomMessage { .. }
        )
    }
}

/// Sends events to the push task, never blocks. The channel is unbounded so that lifecycle
/// events are never lost; the droppable stanza events in it are counted and bounded
/// (`MAX_QUEUED_STANZA_EVENTS`); lifecycle events are bounded by the sessions themselves
/// (a few per session state change).
#[derive(Clone)]
pub struct PushHandle {
    tx: mpsc::UnboundedSender<PushEvent>,
    queued: Arc<AtomicUsize>,
    /// Stanza events dropped because `MAX_QUEUED_STANZA_EVENTS` were queued (`/metrics`).
    dropped: Arc<std::sync::atomic::AtomicU64>,
    prefix: String,
    classifier: Arc<Classifier>,
}

impl PushHandle {
    /// Stanza events dropped so far because the push task was overwhelmed.
    pub fn events_dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Queues an event.
    pub fn send(&self, ev: PushEvent) {
        let droppable = ev.droppable();
        if droppable && self.queued.fetch_add(1, Ordering::Relaxed) >= MAX_QUEUED_STANZA_EVENTS {
            self.queued.fetch_sub(1, Ordering::Relaxed);
            self.dropped.fetch_add(1, Ordering::Relaxed);
            tracing::warn!("push task overwhelmed; stanza event dropped");
            return;
        }
        if self.tx.send(ev).is_err() {
            // Shutdown: the push task stopped before the sessions it hears from.
            if droppable {
                self.queued.fetch_sub(1, Ordering::Relaxed);
            }
            tracing::debug!("push task stopped; event dropped");
        }
    }

    /// Queues an event; false when the push task is gone.
    pub async fn send_wait(&self, ev: PushEvent) -> bool {
        let droppable = ev.droppable();
        if droppable {
            self.queued.fetch_add(1, Ordering::Relaxed);
        }
        let ok = self.tx.send(ev).is_ok();
        if !ok && droppable {
            self.queued.fetch_sub(1, Ordering::Relaxed);
        }
        ok
    }

    /// The push task took an event off the channel.
    pub fn received(&self, ev: &PushEvent) {
        if ev.droppable() {
            self.queued.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// The engine's counters, once every event queued before this call has been handled
    /// (so also a barrier: publishes those events caused have been routed). None when the
    /// push task is gone.
    pub async fn stats(&self) -> Option<PushStats> {
        let (reply, rx) = oneshot::channel();
        if !self.send_wait(PushEvent::Stats { reply }).await {
            return None;
        }
        rx.await.ok()
    }

    /// A hibernated session's push state (None without registrations or push task).
    pub async fn session_push(&self, session: SessionId) -> Option<SessionPush> {
        let (reply, rx) = oneshot::channel();
        if !self
            .send_wait(PushEvent::SessionPush { session, reply })
            .await
        {
            return None;
        }
        rx.await.ok().flatten()
    }

    /// Stops the push task once every event queued before has been handled, its statistics
    /// written.
    pub async fn stop(&self) {
        let (reply, rx) = oneshot::channel();
        if self.send_wait(PushEvent::Stop { reply }).await {
            let _ = rx.await;
        }
    }

    /// The prefix of every publish id (so replies can be told from other IQs).
    pub fn id_prefix(&self) -> &str {
        &self.prefix
    }

    /// Whether an IQ reply id belongs to one of our publishes.
    pub fn owns_id(&self, id: &str) -> bool {
        id.starts_with(&self.prefix)
    }

    /// The shared importance classification (also used by CSI).
    pub fn classifier(&self) -> &Classifier {
        &self.classifier
    }

    /// What the push rules need to know of a stanza (for rules b and c: nobody's own echo).
    pub fn info(&self, id: u64, el: &Element) -> StanzaInfo {
        StanzaInfo {
            id,
            importance: self.classifier.classify(el),
            summary: herald_push::summarize(el),
            own: false,
            at: herald_xep::delay::now_micros(),
        }
    }

    /// What the push rules need to know of a stanza queued for the session `full_jid`:
    /// whether that device caused it itself (its own presence echo, its IQ's answer), or it
    /// is a PEP notification: neither wakes the device; and when it was queued (`queued_at`,
    /// unix micros; 0: now), which displayed markers are compared with.
    pub fn info_for(&self, id: u64, el: &Element, full_jid: &str, queued_at: i64) -> StanzaInfo {
        let info = self.info(id, el);
        StanzaInfo {
            own: herald_push::never_wakes(el, full_jid),
            at: if queued_at > 0 { queued_at } else { info.at },
            ..info
        }
    }

    /// Routes an IQ result/error addressed to the server if it answers a publish.
    pub fn on_reply(&self, el: &Element) -> bool {
        let (Some(id), Some(from)) = (el.attr("id"), el.attr("from")) else {
            return false;
        };
        if !self.owns_id(id) {
            return false;
        }
        let Some((reply, error_type)) = herald_push::reply::read(el) else {
            return false;
        };
        self.send(PushEvent::Reply {
            iq_id: id.to_string(),
            from: from.to_string(),
            reply,
            error_type,
        });
        true
    }
}

/// The classifier from the configuration (`[csi] important`).
pub fn classifier(important: &[String]) -> Classifier {
    Classifier {
        extra_important: important
            .iter()
            .filter_map(|s| {
                let mut it = s.split_whitespace();
                Some((it.next()?.to_string(), it.next()?.to_string()))
            })
            .collect(),
    }
}

/// Creates the handle and the task's receiving end.
pub fn channel(important: &[String]) -> (PushHandle, mpsc::UnboundedReceiver<PushEvent>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let prefix = format!("push-{}", &herald_transport::conn::new_stream_id()[..8]);
    (
        PushHandle {
            tx,
            queued: Arc::new(AtomicUsize::new(0)),
            dropped: Default::default(),
            prefix,
            classifier: Arc::new(classifier(important)),
        },
        rx,
    )
}

#[cfg(test)]
mod tests {
    use super::NodeLink;
    use herald_cluster::Op;

    #[test]
    fn traffic_ops_count_against_the_link_limit_and_control_ops_do_not() {
        let (link, mut rx) = NodeLink::new("n2", 2, 1 << 20);
        assert!(link.try_send_op(Op::Push, "a@d", "{}".into()));
        assert!(link.try_send_op(Op::Push, "a@d", "{}".into()));
        // Full: the caller handles the event itself.
        assert!(!link.try_send_op(Op::Push, "a@d", "{}".into()));
        assert_eq!(link.queued(), 2);
        // A resumption hand-off still passes.
        assert!(link.send_op(Op::HandOff, "x", "a@d".into()));
        assert_eq!(link.queued(), 2);
        // Written out, the slot is free again.
        drop(rx.try_recv());
        assert_eq!(link.queued(), 1);
        assert!(link.try_send_op(Op::Push, "a@d", "{}".into()));
        link.close();
        assert!(!link.try_send_op(Op::Push, "a@d", "{}".into()));
    }
}
