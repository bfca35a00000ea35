//! Cluster mode's edge: what this node keeps in Redis and reads from it. The decisions
//! (key layout, entry and delivery encodings, leases) are the pure `herald-cluster` crate's.
//!
//! How a node takes part:
//!
//! * **Heartbeat and sweep** (`heartbeat`): every third of the lease it writes its beat
//!   (time and session count) with the lease as TTL, reads the other nodes' beats, and
//!   treats a node whose beat expired as dead: it forgets the sessions mirrored from it,
//!   closes its link (a stanza for it is then handled as for an ended session) and removes
//!   its registry entries and delivery stream.
//! * **Registry writer** (`writer`): the router marks each account whose sessions on this
//!   node changed (bind, presence, carbons, hibernation, end); the writer copies the account's
//!   local sessions to `herald:sess:{bare}` in one script (the later bind wins a resource
//!   two nodes hold) and announces `node|bare` on the registry channel.
//! * **Mirror** (`subscriber`, `refresher`): every node listens on that channel and
//!   re-reads the account's hash, so its router holds the other nodes' sessions as entries
//!   whose inbox is the other node's link (`SessionTx::remote`). All routing decisions —
//!   RFC 6121 resource choice, carbons, presence broadcast, offline storage, rule b of
//!   push — therefore see the whole cluster with the single-node code. After (re)subscribing,
//!   a node re-reads every account of every live node.
//! * **Deliveries** (`forward`, `reader`): what the router gives another node's session
//!   is queued on that node's [`NodeLink`] and written by a forwarder task to the node's
//!   stream (`XADD MAXLEN ~ stream_max`); each node reads its own stream and hands each entry
//!   to its session (`deliver`).
//!
//! Redis must be a single instance (or a primary with replicas): the scripts touch keys
//! they do not declare, which Redis Cluster refuses.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::StreamExt;
use herald_cluster::{keys, lease, Beat, Delivery, Entry, Op, State};
use herald_proto::error::{StanzaErrorCondition, StreamError, StreamErrorCondition};
use herald_proto::jid::Jid;
use herald_proto::Element;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tokio::sync::mpsc;

use crate::routing::msg::{Command, NodeLink, Outgoing, Payload, SessionMsg, FROM_CLUSTER};
use crate::routing::router::Dirty;
use crate::stanza::{self, Kind};
use crate::{routing, Shared};

/// Deliveries a forwarder writes in one pipeline.
const BATCH: usize = 256;
/// Accounts written, read or announced at once (concurrently over one connection).
const ACCOUNTS_AT_ONCE: usize = 512;
/// Stream entries read at once.
const READ_COUNT: usize = 256;
/// How long one XREAD blocks (the reader's connection has no response timeout).
const READ_BLOCK_MS: u64 = 5_000;
/// How long an account's newest observed registry time is kept: longer than any answer can
/// take (the connection's response timeout is 5 s).
const OBSERVED_TTL: Duration = Duration::from_secs(30);
/// State changes waiting to be shared.
const STATE_QUEUE: usize = 10_000;
/// The longest an offline-store claim lasts: a backlog that takes longer may be started by a
/// second resource too.
const OFFLINE_CLAIM: Duration = Duration::from_secs(600);
/// How long a delivery batch waits for the registry writes marked before it.
const SETTLE_WAIT: Duration = Duration::from_secs(2);
/// How long a component's holder read from Redis is trusted: a component that moves to
/// another node is reached there at most this much later (meanwhile its stanzas bounce).
const COMPONENT_CACHE: Duration = Duration::from_secs(2);
/// How long a resumption waits for the other node to hand its session over.
const HANDOFF_WAIT: Duration = Duration::from_secs(5);
/// Wait before reconnecting after a Redis error.
const RETRY: Duration = Duration::from_secs(1);

/// Writes the local sessions of one account (`ARGV[3..]`: resourcepart, encoded entry
/// pairs) into its registry hash (`KEYS[1]`) unless another node bound the same resource
/// later (the entry's last field, `since`); removes this node's fields that are no longer
/// local; keeps the node's account set (`KEYS[2]`) and announces the change on the
/// registry channel (`KEYS[3]`). Returns Redis's time and the hash as it is now, so the
/// writer updates its own mirror of the other nodes' sessions too (it does not hear its own
/// announcements).
const WRITE_SCRIPT: &str = r"
local node = ARGV[1]
local keep = {}
for i = 3, #ARGV, 2 do
  local res, val = ARGV[i], ARGV[i + 1]
  keep[res] = true
  local cur = redis.call('HGET', KEYS[1], res)
  local write = true
  if cur then
    local cnode = string.match(cur, '^v1|([^|]*)|')
    local csince = tonumber(string.match(cur, '|(%d+)$') or '0')
    local since = tonumber(string.match(val, '|(%d+)$') or '0')
    if cnode ~= node and csince > since then write = false end
  end
  if write then redis.call('HSET', KEYS[1], res, val) end
end
local all = redis.call('HGETALL', KEYS[1])
local mine = 0
for i = 1, #all, 2 do
  if string.match(all[i + 1], '^v1|([^|]*)|') == node then
    if keep[all[i]] then mine = mine + 1 else redis.call('HDEL', KEYS[1], all[i]) end
  end
end
if mine > 0 then redis.call('SADD', KEYS[2], ARGV[2]) else redis.call('SREM', KEYS[2], ARGV[2]) end
redis.call('PUBLISH', KEYS[3], node .. '|' .. ARGV[2])
local t = redis.call('TIME')
local out = redis.call('HGETALL', KEYS[1])
table.insert(out, 1, t[2])
table.insert(out, 1, t[1])
return out
";

/// An account's registry hash (`KEYS[1]`) after Redis's clock (seconds, microseconds): the
/// time orders what nodes observe of the account, see [`Cluster::apply`].
const READ_SCRIPT: &str = r"
local t = redis.call('TIME')
local out = redis.call('HGETALL', KEYS[1])
table.insert(out, 1, t[2])
table.insert(out, 1, t[1])
return out
";

/// Removes every registry field of node `ARGV[1]` from the accounts in its account set
/// (`KEYS[1]`, then deleted) and announces each account; `ARGV[2]` is the hash key prefix.
const SWEEP_SCRIPT: &str = r"
local bares = redis.call('SMEMBERS', KEYS[1])
for _, b in ipairs(bares) do
  local k = ARGV[2] .. b
  local all = redis.call('HGETALL', k)
  for i = 1, #all, 2 do
    if string.match(all[i + 1], '^v1|([^|]*)|') == ARGV[1] then redis.call('HDEL', k, all[i]) end
  end
  redis.call('PUBLISH', KEYS[2], ARGV[1] .. '|' .. b)
end
redis.call('DEL', KEYS[1])
return #bares
";

/// Sets `KEYS[1]` (a component's holder) to node `ARGV[1]` unless another node holds it and
/// its heartbeat (`ARGV[2]` prefix) is alive: 1 if set, 0 if held elsewhere.
const CLAIM_SCRIPT: &str = r"
local cur = redis.call('GET', KEYS[1])
if cur and cur ~= ARGV[1] and redis.call('EXISTS', ARGV[2] .. cur) == 1 then return 0 end
redis.call('SET', KEYS[1], ARGV[1])
return 1
";

/// Deletes `KEYS[1]` if node `ARGV[1]` holds it.
const RELEASE_SCRIPT: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
return 0
";

/// This node's membership: its Redis connection, its links to the other nodes, and what
/// it knows of them.
pub struct Cluster {
    /// This node's name.
    pub node: String,
    /// The heartbeat lease.
    pub lease: Duration,
    /// The pub/sub channels (registry, push, state): Redis pub/sub is not per database, so
    /// their names carry the database number, and clusters on different databases of one
    /// Redis do not hear each other.
    channels: Channels,
    client: redis::Client,
    conn: ConnectionManager,
    links: Mutex<HashMap<String, Arc<NodeLink>>>,
    /// Other nodes taken as alive: their beat was fresh at the last sweep, or has been
    /// missing for less than a lease.
    alive: Mutex<HashSet<String>>,
    /// Since when each node taken as alive has had no fresh beat.
    missing: Mutex<HashMap<String, std::time::Instant>>,
    /// Nodes that announced a clean stop, swept without waiting.
    left: Mutex<HashSet<String>>,
    /// Accounts to re-read from the registry (announced by other nodes).
    refresh: Arc<Dirty>,
    /// Accounts whose push registrations this node changed, to announce.
    push_dirty: Arc<Dirty>,
    /// Which node holds each component domain, as last read (see [`Cluster::component_link`]).
    component_holders: Mutex<HashMap<String, (Option<String>, std::time::Instant)>>,
    /// The node serving the group chat service, as last read.
    muc_home: Mutex<Option<String>>,
    /// Starts a saved session in a task of its own (`c2s::session`'s, given at start so
    /// this module does not name the session module, which names it).
    restore: std::sync::OnceLock<crate::c2s::persist::Restore>,
    /// The router's accounts to write to the registry (set at start): the forwarder waits
    /// for what was marked before a batch, see [`forward`].
    registry_dirty: std::sync::OnceLock<Arc<Dirty>>,
    /// Changes to share with the other nodes (bounded; beyond it the others miss some).
    state_out: mpsc::Sender<String>,
    state_rx: Mutex<Option<mpsc::Receiver<String>>>,
    /// Resumption ids this node asked another node to hand over, with who waits.
    handoffs: Mutex<HashMap<String, tokio::sync::oneshot::Sender<bool>>>,
    /// When each local session was bound (ms), by account: the registry's `since`.
    since: Mutex<HashMap<String, Vec<(u64, u64)>>>,
    write: redis::Script,
    read: redis::Script,
    sweep: redis::Script,
    /// Per account, the Redis time of the newest registry state applied to the mirror: a
    /// read answered later but observed earlier (the writer, the refresher and the stream
    /// reader read concurrently) is older and dropped. Entries go after [`OBSERVED_TTL`].
    observed: Mutex<HashMap<String, (u64, std::time::Instant)>>,
    max_queue: usize,
    max_queue_bytes: usize,
    stream_max: usize,
    max_stanza: usize,
}

struct Channels {
    registry: String,
    push: String,
    state: String,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Cluster {
    /// Connects to Redis (`[cluster] redis`) and checks it answers.
    pub async fn connect(cfg: &herald_config::Config) -> anyhow::Result<Arc<Cluster>> {
        use anyhow::Context;
        let c = cfg.cluster.as_ref().context("no [cluster] table")?;
        let node = c
            .node_name()
            .map_err(|e| anyhow::anyhow!("[cluster] node: {e}"))?;
        // Not the URL in errors: it may hold a password.
        let client = redis::Client::open(c.redis.as_str()).context("[cluster] redis: bad URL")?;
        let mcfg = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(3)))
            .set_response_timeout(Some(Duration::from_secs(5)));
        let mut conn = client
            .get_connection_manager_with_config(mcfg)
            .await
            .context("connecting to Redis ([cluster] redis)")?;
        let _: String = redis::cmd("PING")
            .query_async(&mut conn)
            .await
            .context("Redis did not answer PING ([cluster] redis)")?;
        let (state_out, state_rx) = mpsc::channel(STATE_QUEUE);
        let db = client.get_connection_info().redis_settings().db();
        let channels = Channels {
            registry: format!("{}:{db}", keys::REGISTRY_CHANNEL),
            push: format!("{}:{db}", keys::PUSH_CHANNEL),
            state: format!("{}:{db}", keys::STATE_CHANNEL),
        };
        Ok(Arc::new(Cluster {
            registry_dirty: Default::default(),
            channels,
            restore: Default::default(),
            muc_home: Default::default(),
            component_holders: Default::default(),
            state_out,
            state_rx: Mutex::new(Some(state_rx)),
            node,
            lease: c.lease.0,
            client,
            conn,
            links: Default::default(),
            alive: Default::default(),
            missing: Default::default(),
            left: Default::default(),
            refresh: Default::default(),
            push_dirty: Default::default(),
            handoffs: Default::default(),
            since: Default::default(),
            write: redis::Script::new(WRITE_SCRIPT),
            read: redis::Script::new(READ_SCRIPT),
            observed: Default::default(),
            sweep: redis::Script::new(SWEEP_SCRIPT),
            max_queue: c.max_queue,
            max_queue_bytes: c.max_queue_bytes,
            stream_max: c.stream_max,
            max_stanza: cfg.limits.max_stanza_bytes,
        }))
    }

    /// How this node starts a saved session (set once at start).
    pub fn set_restore(&self, f: crate::c2s::persist::Restore) {
        let _ = self.restore.set(f);
    }

    /// How this node starts a saved session, once set.
    pub fn restore(&self) -> Option<crate::c2s::persist::Restore> {
        self.restore.get().copied()
    }

    fn conn(&self) -> ConnectionManager {
        self.conn.clone()
    }

    /// Before this node binds anything: removes what a previous run of the same node name
    /// left in Redis (a crash leaves its entries until the lease of a node that no longer
    /// beats would have expired) and its old deliveries, which were for sessions that are
    /// gone. Then beats once and learns which other nodes are alive.
    pub async fn join(self: &Arc<Self>, shared: &Arc<Shared>) -> redis::RedisResult<()> {
        let mut c = self.conn();
        let removed: usize = self
            .sweep
            .key(keys::node_accounts(&self.node))
            .key(&self.channels.registry)
            .arg(&self.node)
            .arg(keys::sessions(""))
            .invoke_async(&mut c)
            .await?;
        let _: () = redis::cmd("DEL")
            .arg(keys::inbox(&self.node))
            .query_async(&mut c)
            .await?;
        if removed > 0 {
            tracing::info!(
                accounts = removed,
                "removed the registry entries of this node's previous run"
            );
        }

        self.beat(shared).await?;
        self.sweep_nodes(shared).await?;
        // Before the rooms are loaded (start-up loads them after joining).
        self.check_muc_home(shared, false).await
    }

    /// Makes sure a live node serves the group chat service: claims it when none does (or
    /// its node was lost). A node that takes it over (`reload`) loads the rooms anew from
    /// the store: what it loaded at its own start is stale, and the occupants the lost node
    /// held are gone (clients find out with XEP-0410 self-pings and join again).
    async fn check_muc_home(
        self: &Arc<Self>,
        shared: &Arc<Shared>,
        reload: bool,
    ) -> redis::RedisResult<()> {
        if shared.muc_domain.is_none() {
            return Ok(());
        }
        let mut c = self.conn();
        let _: i64 = redis::Script::new(CLAIM_SCRIPT)
            .key(keys::MUC_HOME)
            .arg(&self.node)
            .arg(keys::node(""))
            .invoke_async(&mut c)
            .await?;
        let holder: Option<String> = redis::cmd("GET")
            .arg(keys::MUC_HOME)
            .query_async(&mut c)
            .await?;
        let before = std::mem::replace(
            &mut *self.muc_home.lock().unwrap_or_else(|e| e.into_inner()),
            holder.clone(),
        );
        if holder.as_deref() == Some(self.node.as_str()) && before != holder {
            tracing::info!("this node serves the group chat service now");
            if reload {
                match crate::features::muc::reload(shared).await {
                    Ok(n) => tracing::info!(rooms = n, "group chat rooms loaded anew"),
                    Err(e) => tracing::error!(error = %e, "loading the group chat rooms failed"),
                }
            }
        }
        Ok(())
    }

    /// The node owning `user`'s push state (rules b and c, their counts, dedup and
    /// coalescing): the live node [`herald_cluster::push_owner`] picks, this one included.
    pub fn push_owner_of(&self, user: &str) -> String {
        let alive = self.alive.lock().unwrap_or_else(|e| e.into_inner());
        let nodes = alive
            .iter()
            .map(String::as_str)
            .chain(std::iter::once(self.node.as_str()));
        herald_cluster::push_owner(user, nodes)
            .unwrap_or(self.node.as_str())
            .to_string()
    }

    /// The link to the node owning `user`'s push state, None when it is this one.
    pub fn push_owner_link(self: &Arc<Self>, user: &str) -> Option<Arc<NodeLink>> {
        let owner = self.push_owner_of(user);
        (owner != self.node).then(|| self.link(&owner))
    }

    /// Whether this node serves the group chat service now.
    pub fn serves_muc(&self) -> bool {
        self.muc_home
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_deref()
            == Some(self.node.as_str())
    }

    /// The link to the node serving the group chat service when another node does. When
    /// that node is no longer alive, the service is claimed first (it may come here).
    pub async fn muc_home_link(self: &Arc<Self>, shared: &Arc<Shared>) -> Option<Arc<NodeLink>> {
        for _ in 0..2 {
            let home = self
                .muc_home
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone()?;
            if home == self.node {
                return None;
            }
            let alive = self
                .alive
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .contains(&home);
            if alive {
                return Some(self.link(&home));
            }
            if let Err(e) = self.sweep_nodes(shared).await {
                tracing::warn!(error = %e, "cluster node sweep failed");
            }
            if let Err(e) = self.check_muc_home(shared, true).await {
                tracing::warn!(error = %e, "cluster: checking the group chat node failed");
            }
        }
        None
    }

    async fn beat(&self, shared: &Shared) -> redis::RedisResult<()> {
        let beat = Beat {
            ms: now_ms(),
            sessions: shared.router.local_count(),
        };
        let mut c = self.conn();
        let (listed,): (bool,) = redis::pipe()
            .cmd("SET")
            .arg(keys::node(&self.node))
            .arg(beat.encode())
            .arg("PX")
            .arg(self.lease.as_millis() as u64)
            .ignore()
            .cmd("SADD")
            .arg(keys::NODES)
            .arg(&self.node)
            .ignore()
            .cmd("EXISTS")
            .arg(keys::node_accounts(&self.node))
            .query_async(&mut c)
            .await?;
        // This node holds sessions but Redis lists none of its accounts: Redis lost its
        // data (restarted empty, flushed) or another node swept this one. Everything is
        // written again.
        if !listed && beat.sessions > 0 {
            tracing::warn!(
                "this node's registry entries are missing from Redis; writing them again"
            );
            let dirty = shared.router.track_changes();
            for b in shared.router.local_accounts() {
                dirty.mark(&b);
            }
        }
        Ok(())
    }

    /// The beats of every node that ever joined: (name, beat if its key has not expired).
    pub async fn beats(&self) -> redis::RedisResult<Vec<(String, Option<Beat>)>> {
        node_beats(&mut self.conn()).await
    }

    /// Reads every node's beat; a node newly alive has its accounts read into the mirror, a
    /// node newly dead is forgotten here and its registry entries removed.
    async fn sweep_nodes(self: &Arc<Self>, shared: &Arc<Shared>) -> redis::RedisResult<()> {
        let now = now_ms();
        let beats = self.beats().await?;
        let live: HashSet<String> = beats
            .iter()
            .filter(|(n, b)| n != &self.node && lease::alive(b.map(|b| b.ms), now, self.lease))
            .map(|(n, _)| n.clone())
            .collect();
        let (born, died) = {
            let mut alive = self.alive.lock().unwrap_or_else(|e| e.into_inner());
            let mut missing = self.missing.lock().unwrap_or_else(|e| e.into_inner());
            let mut left = self.left.lock().unwrap_or_else(|e| e.into_inner());
            let born: Vec<String> = live.difference(&alive).cloned().collect();
            // A node whose beat is gone is lost once it stays gone for another lease (or at
            // once when it said it left): every beat vanishes at once when Redis restarts
            // empty, and the nodes beat again within a third of a lease.
            let at = std::time::Instant::now();
            let mut died = Vec::new();
            for n in alive.difference(&live) {
                let since = *missing.entry(n.clone()).or_insert(at);
                if left.contains(n) || at.duration_since(since) >= self.lease {
                    died.push(n.clone());
                }
            }
            missing.retain(|n, _| !live.contains(n) && !died.contains(n));
            for n in &died {
                left.remove(n);
            }
            // A node that was never seen alive here but left a link (its entries were read
            // in the same instant it died) is lost too.
            let links = self.links.lock().unwrap_or_else(|e| e.into_inner());
            let orphans: Vec<String> = links
                .keys()
                .filter(|n| !live.contains(*n) && !alive.contains(*n) && !died.contains(n))
                .cloned()
                .collect();
            died.extend(orphans);
            alive.retain(|n| live.contains(n) || missing.contains_key(n));
            alive.extend(live.iter().cloned());
            (born, died)
        };
        for node in died {
            self.node_lost(shared, &node).await?;
        }
        for node in born {
            tracing::info!(node, "cluster node up");
            self.reread_node(&node).await?;
        }
        Ok(())
    }

    /// `node` is gone (its beat stayed away, or it left): forget its sessions here, remove
    /// its registry entries, and — on the one node that wins the takeover — adopt its saved
    /// sessions and hand on what was still waiting in its delivery stream.
    async fn node_lost(
        self: &Arc<Self>,
        shared: &Arc<Shared>,
        node: &str,
    ) -> redis::RedisResult<()> {
        let link = self
            .links
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(node);
        if let Some(l) = link {
            l.close();
        }
        let n = shared.router.drop_node(node);
        tracing::warn!(node, sessions = n, "cluster node gone");
        let mut c = self.conn();
        let _: usize = self
            .sweep
            .key(keys::node_accounts(node))
            .key(&self.channels.registry)
            .arg(node)
            .arg(keys::sessions(""))
            .invoke_async(&mut c)
            .await?;
        let won: Option<String> = redis::cmd("SET")
            .arg(keys::takeover(node))
            .arg(&self.node)
            .arg("NX")
            .arg("PX")
            .arg(4 * self.lease.as_millis() as u64)
            .query_async(&mut c)
            .await?;
        if won.is_none() {
            return Ok(());
        }
        // Its hibernated sessions (saved in the store as they hibernated) run here now, so
        // their phones can resume on any node and are pushed.
        let Some(restore) = self.restore() else {
            return Ok(());
        };
        let adopted = crate::c2s::persist::adopt(shared, node, restore).await;
        tracing::warn!(
            node,
            sessions = adopted,
            "adopted the lost node's hibernated sessions"
        );
        // What other nodes sent it that it never read: for an adopted session, delivered to
        // it here; for one that is gone, handled as for any ended session (a message is
        // delivered to the account's other sessions or stored offline).
        let key = keys::inbox(node);
        let mut from = "-".to_string();
        let mut handed = 0usize;
        loop {
            let page: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
                .arg(&key)
                .arg(&from)
                .arg("+")
                .arg("COUNT")
                .arg(READ_COUNT)
                .query_async(&mut c)
                .await?;
            if page.ids.is_empty() {
                break;
            }
            for id in &page.ids {
                from = format!("({}", id.id);
                if let Ok(d) = Delivery::from_fields(&entry_fields(id), self.max_stanza) {
                    handed += 1;
                    deliver(shared, d).await;
                }
            }
        }
        let _: () = redis::cmd("DEL").arg(&key).query_async(&mut c).await?;
        if handed > 0 {
            tracing::warn!(
                node,
                deliveries = handed,
                "handed on the lost node's unread deliveries"
            );
        }
        Ok(())
    }

    /// A node announced it left (a clean stop): it is swept at once.
    fn node_left(&self, node: &str) {
        self.left
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(node.to_string());
    }

    /// Marks every account with sessions on `node` for re-reading.
    async fn reread_node(&self, node: &str) -> redis::RedisResult<()> {
        let bares: Vec<String> = redis::cmd("SMEMBERS")
            .arg(keys::node_accounts(node))
            .query_async(&mut self.conn())
            .await?;
        for b in bares {
            self.refresh.mark(&b);
        }
        Ok(())
    }

    /// The link to `node`, made (with its forwarder task) on first use.
    fn link(self: &Arc<Self>, node: &str) -> Arc<NodeLink> {
        let mut links = self.links.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(l) = links.get(node) {
            return l.clone();
        }
        let (link, rx) = NodeLink::new(node, self.max_queue, self.max_queue_bytes);
        links.insert(node.to_string(), link.clone());
        tokio::spawn(forward(self.clone(), node.to_string(), rx));
        link
    }

    /// Copies `bare`'s local sessions to the registry and mirrors the other nodes' ones.
    async fn write(self: &Arc<Self>, shared: &Shared, bare: &str) -> redis::RedisResult<()> {
        let local = shared.router.local_resources(bare);
        let now = now_ms();
        let stamps: Vec<(u64, u64)> = {
            let mut since = self.since.lock().unwrap_or_else(|e| e.into_inner());
            let old = since.remove(bare).unwrap_or_default();
            let stamps: Vec<(u64, u64)> = local
                .iter()
                .map(|r| {
                    let t = old
                        .iter()
                        .find(|(id, _)| *id == r.session_id)
                        .map_or(now, |(_, t)| *t);
                    (r.session_id, t)
                })
                .collect();
            if !stamps.is_empty() {
                since.insert(bare.to_string(), stamps.clone());
            }
            stamps
        };
        let mut inv = self.write.prepare_invoke();
        inv.key(keys::sessions(bare))
            .key(keys::node_accounts(&self.node))
            .key(&self.channels.registry)
            .arg(&self.node)
            .arg(bare);
        for (r, (_, t)) in local.iter().zip(&stamps) {
            let e = Entry {
                node: self.node.clone(),
                state: if r.hibernated {
                    State::Hibernated
                } else {
                    State::Live
                },
                priority: r.priority,
                available: r.available,
                carbons: r.carbons,
                since: *t,
            };
            inv.arg(&r.resource).arg(e.encode());
        }
        let reply: Vec<String> = inv.invoke_async(&mut self.conn()).await?;
        self.apply(shared, bare, reply).await
    }

    /// Reads `bare`'s registry hash into the router's mirror.
    async fn read(self: &Arc<Self>, shared: &Shared, bare: &str) -> redis::RedisResult<()> {
        let reply: Vec<String> = self
            .read
            .key(keys::sessions(bare))
            .invoke_async(&mut self.conn())
            .await?;
        self.apply(shared, bare, reply).await
    }

    /// Makes the router's mirror of `bare` the other nodes' entries of a registry hash as
    /// [`READ_SCRIPT`] returns it (Redis time, then field/value pairs), unless a newer
    /// state of the account was applied already.
    async fn apply(
        self: &Arc<Self>,
        shared: &Shared,
        bare: &str,
        reply: Vec<String>,
    ) -> redis::RedisResult<()> {
        let mut it = reply.into_iter();
        let secs: u64 = it.next().and_then(|s| s.parse().ok()).unwrap_or(0);
        let micros: u64 = it.next().and_then(|s| s.parse().ok()).unwrap_or(0);
        let at = secs * 1_000_000 + micros;
        {
            let mut observed = self.observed.lock().unwrap_or_else(|e| e.into_inner());
            let now = std::time::Instant::now();
            match observed.get_mut(bare) {
                Some((t, _)) if *t > at => return Ok(()),
                Some(o) => *o = (at, now),
                None => {
                    observed.insert(bare.to_string(), (at, now));
                }
            }
        }
        let mut fields = Vec::new();
        while let (Some(f), Some(v)) = (it.next(), it.next()) {
            fields.push((f, v));
        }
        let entries: Vec<(String, Entry)> = fields
            .into_iter()
            .filter_map(|(res, v)| match Entry::decode(&v) {
                Ok(e) => Some((res, e)),
                Err(err) => {
                    tracing::warn!(bare, error = %err, "unreadable cluster registry entry");
                    None
                }
            })
            .filter(|(_, e)| e.node != self.node)
            .collect();
        // A node that joined since the last sweep is not known alive yet: its beat is read
        // now rather than its sessions ignored until the next sweep.
        let unknown: HashSet<String> = {
            let alive = self.alive.lock().unwrap_or_else(|e| e.into_inner());
            entries
                .iter()
                .filter(|(_, e)| !alive.contains(&e.node))
                .map(|(_, e)| e.node.clone())
                .collect()
        };
        for n in unknown {
            let beat: Option<String> = redis::cmd("GET")
                .arg(keys::node(&n))
                .query_async(&mut self.conn())
                .await?;
            let ms = beat.as_deref().and_then(Beat::decode).map(|b| b.ms);
            if lease::alive(ms, now_ms(), self.lease) {
                tracing::info!(node = n, "cluster node up");
                self.alive
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(n);
            }
        }
        let remote = {
            let alive = self.alive.lock().unwrap_or_else(|e| e.into_inner());
            entries
                .into_iter()
                .filter(|(_, e)| alive.contains(&e.node))
                .collect::<Vec<_>>()
        };
        let remote = remote
            .into_iter()
            .map(|(res, e)| {
                let link = self.link(&e.node);
                (res, e, link)
            })
            .collect();
        shared.router.sync_remote(bare, remote);
        Ok(())
    }

    /// A stanza from a session of another node may arrive before that session's registry
    /// entry was announced (the announcement and the delivery travel separately): an
    /// answer to it (a probe's, an IQ result) must find the session, so an unknown sender
    /// of this cluster's domain is read from the registry first. Its node wrote the entry
    /// before the delivery on the same connection, so the read sees it.
    async fn know_sender(self: &Arc<Self>, shared: &Shared, d: &Delivery) {
        if !matches!(d.op, Op::Stanza | Op::Route) {
            return;
        }
        let Some(from) = sender(&d.payload) else {
            return;
        };
        let Ok(jid) = from.parse::<Jid>() else {
            return;
        };
        let (Some(_), Some(res)) = (jid.node(), jid.resource()) else {
            return;
        };
        if !shared.cfg.is_local(jid.domain().as_str()) {
            return;
        }
        let bare = jid.to_bare().to_string();
        if shared.router.resource(&bare, res.as_str()).is_some() {
            return;
        }
        if let Err(e) = self.read(shared, &bare).await {
            tracing::warn!(error = %e, "cluster registry read failed");
        }
    }

    /// Shares a change of what every node keeps in memory (see `apply_state`).
    pub fn share_state(&self, msg: String) {
        if self.state_out.try_send(msg).is_err() {
            tracing::warn!("cluster: shared state queue full; another node may miss a change");
        }
    }

    /// `user`'s push registrations changed in the store: the other nodes' push engines
    /// reload them (announced by `push_announcer`).
    pub fn push_changed(&self, user: &str) {
        self.push_dirty.mark(user);
    }

    /// XEP-0198 resumption of `previd` (of account `user`), hibernated on the node its id
    /// names: asks that node to save the session to the store and let it go. True once it
    /// did (the caller restores it from the store); false if the node is not alive, has no
    /// such session, or does not answer within `HANDOFF_WAIT`.
    pub async fn hand_off(
        self: &Arc<Self>,
        shared: &Arc<Shared>,
        user: &str,
        previd: &str,
    ) -> bool {
        let Some(origin) = herald_cluster::sm_id_node(previd) else {
            return false;
        };
        // The view of which nodes live is up to a third of a lease old: the origin's beat
        // is read now, and a lost origin is swept at once (which may adopt its sessions
        // here) rather than waited for.
        if origin != self.node {
            let beat: redis::RedisResult<Option<String>> = redis::cmd("GET")
                .arg(keys::node(origin))
                .query_async(&mut self.conn())
                .await;
            let ms = beat
                .ok()
                .flatten()
                .as_deref()
                .and_then(Beat::decode)
                .map(|b| b.ms);
            if !lease::alive(ms, now_ms(), self.lease) {
                if let Err(e) = self.sweep_nodes(shared).await {
                    tracing::warn!(error = %e, "cluster node sweep failed");
                }
                if shared.resumable_get(previd).is_some() {
                    return true;
                }
            }
        }
        let alive = |n: &str| {
            self.alive
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .contains(n)
        };
        // The node that made the id holds the session, unless it was lost: then the node
        // that adopted its sessions does, one of those holding a hibernated session of
        // the account.
        let candidates: Vec<String> = if origin != self.node && alive(origin) {
            vec![origin.to_string()]
        } else {
            let mut nodes: Vec<String> = shared
                .router
                .resources(user)
                .iter()
                .filter(|r| r.hibernated)
                .filter_map(|r| r.tx.as_remote().map(|t| t.link.node.clone()))
                .collect();
            nodes.sort();
            nodes.dedup();
            nodes
        };
        for node in candidates {
            let (tx, rx) = tokio::sync::oneshot::channel();
            self.handoffs
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(previd.to_string(), tx);
            let sent = self
                .link(&node)
                .send_op(Op::HandOff, previd, user.to_string());
            let ok = sent && matches!(tokio::time::timeout(HANDOFF_WAIT, rx).await, Ok(Ok(true)));
            self.handoffs
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(previd);
            if ok {
                return true;
            }
        }
        false
    }

    /// Which of `sessions` (account, resource) another live node holds in the registry: saved
    /// sessions of this node that another node adopted while this one was down. One round
    /// trip per `ACCOUNTS_AT_ONCE` sessions (a node restarting with many saved sessions would
    /// otherwise wait one per session); Redis unreachable counts as held by nobody.
    pub async fn held_elsewhere(&self, sessions: &[(&str, &str)]) -> Vec<bool> {
        let mut held = Vec::with_capacity(sessions.len());
        for chunk in sessions.chunks(ACCOUNTS_AT_ONCE) {
            let mut pipe = redis::pipe();
            for (account, resource) in chunk {
                pipe.cmd("HGET").arg(keys::sessions(account)).arg(resource);
            }
            let found: Vec<Option<String>> =
                pipe.query_async(&mut self.conn()).await.unwrap_or_default();
            let alive = self.alive.lock().unwrap_or_else(|e| e.into_inner());
            held.extend((0..chunk.len()).map(|i| {
                found
                    .get(i)
                    .and_then(|v| Entry::decode(v.as_deref()?).ok())
                    .is_some_and(|e| e.node != self.node && alive.contains(&e.node))
            }));
        }
        held
    }

    /// XEP-0160 across the cluster: lets `session` of this node deliver `bare`'s offline
    /// store unless a session on another node does (see `features::offline::claim`). A
    /// claim lasts at most `OFFLINE_CLAIM`; Redis unreachable counts as claimed (the
    /// messages wait in the store rather than go twice).
    pub async fn claim_offline(&self, bare: &str, session: u64) -> bool {
        let me = format!("{}:{session}", self.node);
        let mut c = self.conn();
        let set: redis::RedisResult<Option<String>> = redis::cmd("SET")
            .arg(keys::offline_claim(bare))
            .arg(&me)
            .arg("NX")
            .arg("PX")
            .arg(OFFLINE_CLAIM.as_millis() as u64)
            .query_async(&mut c)
            .await;
        match set {
            Ok(Some(_)) => true,
            Ok(None) => {
                let cur: redis::RedisResult<Option<String>> = redis::cmd("GET")
                    .arg(keys::offline_claim(bare))
                    .query_async(&mut c)
                    .await;
                matches!(cur, Ok(Some(v)) if v == me)
            }
            Err(e) => {
                tracing::warn!(error = %e, "cluster: offline claim failed");
                false
            }
        }
    }

    /// `session` stops delivering `bare`'s offline store: the cluster's claim is given back,
    /// then the store is handed on to another reachable resource (on any node), which can
    /// then claim it.
    pub fn release_offline(self: &Arc<Self>, shared: &Arc<Shared>, bare: &str, session: u64) {
        let (c, shared, bare) = (self.clone(), shared.clone(), bare.to_string());
        tokio::spawn(async move {
            let r: redis::RedisResult<i64> = redis::Script::new(RELEASE_SCRIPT)
                .key(keys::offline_claim(&bare))
                .arg(format!("{}:{session}", c.node))
                .invoke_async(&mut c.conn())
                .await;
            if let Err(e) = r {
                tracing::warn!(error = %e, "cluster: offline claim release failed");
            }
            crate::features::offline::release_claim(&shared, &bare, session);
        });
    }

    /// Registers this node as the one serving the component `domain`; false if another
    /// live node does.
    pub async fn claim_component(&self, domain: &str) -> redis::RedisResult<bool> {
        let n: i64 = redis::Script::new(CLAIM_SCRIPT)
            .key(keys::component(domain))
            .arg(&self.node)
            .arg(keys::node(""))
            .invoke_async(&mut self.conn())
            .await?;
        Ok(n == 1)
    }

    /// The component `domain` left this node.
    pub async fn release_component(&self, domain: &str) {
        let r: redis::RedisResult<i64> = redis::Script::new(RELEASE_SCRIPT)
            .key(keys::component(domain))
            .arg(&self.node)
            .invoke_async(&mut self.conn())
            .await;
        if let Err(e) = r {
            tracing::warn!(domain, error = %e, "cluster: could not unregister the component");
        }
    }

    /// The link to the live node serving the component `domain`, if another node does.
    /// The holder is read from Redis at most every `COMPONENT_CACHE` per domain: every push
    /// publish of a node without the app server comes this way.
    pub async fn component_link(self: &Arc<Self>, domain: &str) -> Option<Arc<NodeLink>> {
        let cached = self
            .component_holders
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(domain)
            .filter(|(_, at)| at.elapsed() < COMPONENT_CACHE)
            .map(|(h, _)| h.clone());
        let holder = match cached {
            Some(h) => h,
            None => {
                let h: Option<String> = match redis::cmd("GET")
                    .arg(keys::component(domain))
                    .query_async(&mut self.conn())
                    .await
                {
                    Ok(h) => h,
                    Err(e) => {
                        tracing::warn!(domain, error = %e, "cluster: component lookup failed");
                        return None;
                    }
                };
                // Only configured component domains come here: the map is bounded by them.
                self.component_holders
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(domain.to_string(), (h.clone(), std::time::Instant::now()));
                h
            }
        };
        let holder = holder.filter(|h| h != &self.node)?;
        let alive = self
            .alive
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(&holder);
        alive.then(|| self.link(&holder))
    }

    /// A clean stop, after the sessions ended: writes what they changed and stops beating,
    /// so the other nodes stop routing here at once instead of after the lease.
    pub async fn leave(self: &Arc<Self>, shared: &Shared) {
        let dirty = shared.router.track_changes();
        let (all, upto) = dirty.take(usize::MAX);
        dirty.finished(upto);
        for bare in all {
            if let Err(e) = self.write(shared, &bare).await {
                tracing::warn!(error = %e, "cluster registry write at stop failed");
                break;
            }
        }
        // Gone at once for the others: they sweep when they hear it (`node|`, no
        // account) rather than at their next beat.
        let r: redis::RedisResult<()> = redis::pipe()
            .cmd("DEL")
            .arg(keys::node(&self.node))
            .ignore()
            .cmd("PUBLISH")
            .arg(&self.channels.registry)
            .arg(format!("{}|", self.node))
            .ignore()
            .query_async(&mut self.conn())
            .await;
        if let Err(e) = r {
            tracing::warn!(error = %e, "could not remove this node's heartbeat");
        }
    }
}

/// Every node that ever joined and its beat, if its key has not expired.
pub async fn node_beats(
    c: &mut impl redis::aio::ConnectionLike,
) -> redis::RedisResult<Vec<(String, Option<Beat>)>> {
    let mut nodes: Vec<String> = redis::cmd("SMEMBERS")
        .arg(keys::NODES)
        .query_async(c)
        .await?;
    nodes.sort();
    if nodes.is_empty() {
        return Ok(Vec::new());
    }
    let mut get = redis::cmd("MGET");
    for n in &nodes {
        get.arg(keys::node(n));
    }
    let beats: Vec<Option<String>> = get.query_async(c).await?;
    Ok(nodes
        .into_iter()
        .zip(beats)
        .map(|(n, b)| (n, b.as_deref().and_then(Beat::decode)))
        .collect())
}

/// Tells the other nodes `user`'s cached `what` changed (see `apply_state`).
pub fn invalidate(cluster: &Cluster, what: crate::Cached, user: &str) {
    let k = match what {
        crate::Cached::Blocklist => "b",
        crate::Cached::MamPrefs => "m",
        crate::Cached::Avatar => "a",
        crate::Cached::Removed => "g",
    };
    cluster.share_state(format!("{k}\n{user}"));
}

/// Applies what another node shared: a PEP change, or a cache to drop.
fn apply_state(shared: &Shared, msg: &str) {
    let (kind, rest) = msg.split_once('\n').unwrap_or((msg, ""));
    match kind {
        "r" | "c" => crate::features::pep::apply_shared(shared, msg),
        "d" => {
            // XEP-0490: a displayed marker, for every node's push engine (the owner's rule b
            // and c counts, and the sessions' rule a counts wherever they are).
            let mut it = rest.split('\n');
            if let (Some(user), Some(chat), Some(upto)) = (it.next(), it.next(), it.next()) {
                if let Ok(upto) = upto.parse() {
                    shared.push.send(crate::routing::msg::PushEvent::Displayed {
                        user: user.to_string(),
                        chat: chat.to_string(),
                        upto,
                    });
                }
            }
        }
        "b" => shared.blocklists.invalidate(rest),
        "m" => shared.mam_prefs.invalidate(rest),
        "a" => shared.avatars.invalidate(rest),
        "g" => {
            // Removed on another node (its sessions everywhere were ended from there):
            // nothing of it stays cached here, and nothing is stored for it from now on.
            shared
                .accounts
                .mark_removed(rest, crate::admin::accounts::Removal::Deleted);
            shared.resumable_forget_user(rest);
            shared.tombstones_forget_user(rest);
            shared.mam_prefs.forget(rest);
            shared.blocklists.forget(rest);
            shared.avatars.forget(rest);
            shared.pep.forget_user(rest);
        }
        _ => {}
    }
}

/// `herald cluster status`: every node that joined the cluster of `cfg`'s Redis.
pub async fn status(cfg: &herald_config::Config) -> anyhow::Result<String> {
    use anyhow::Context;
    let c = cfg
        .cluster
        .as_ref()
        .context("this configuration has no [cluster] table")?;
    let client = redis::Client::open(c.redis.as_str()).context("[cluster] redis: bad URL")?;
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .context("connecting to Redis ([cluster] redis)")?;
    let now = now_ms();
    let rows: Vec<lease::NodeRow> = node_beats(&mut conn)
        .await
        .context("reading the nodes' heartbeats")?
        .into_iter()
        .map(|(node, b)| lease::NodeRow {
            node,
            lease_age: b.map(|b| lease::age(b.ms, now)),
            sessions: b.map_or(0, |b| b.sessions),
        })
        .collect();
    Ok(lease::render_status(&rows, c.lease.0))
}

/// Starts the node's cluster tasks.
pub fn start(shared: &Arc<Shared>, cluster: &Arc<Cluster>) -> Vec<tokio::task::JoinHandle<()>> {
    let _ = cluster.registry_dirty.set(shared.router.track_changes());
    vec![
        tokio::spawn(heartbeat(shared.clone(), cluster.clone())),
        tokio::spawn(writer(shared.clone(), cluster.clone())),
        tokio::spawn(subscriber(shared.clone(), cluster.clone())),
        tokio::spawn(push_announcer(cluster.clone())),
        tokio::spawn(state_sharer(cluster.clone())),
        tokio::spawn(refresher(shared.clone(), cluster.clone())),
        tokio::spawn(reader(shared.clone(), cluster.clone())),
    ]
}

async fn heartbeat(shared: Arc<Shared>, cluster: Arc<Cluster>) {
    let mut tick = tokio::time::interval(lease::beat_interval(cluster.lease));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if let Err(e) = cluster.beat(&shared).await {
            tracing::warn!(error = %e, "cluster heartbeat failed");
            continue;
        }
        if let Err(e) = cluster.sweep_nodes(&shared).await {
            tracing::warn!(error = %e, "cluster node sweep failed");
        }
        if let Err(e) = cluster.check_muc_home(&shared, true).await {
            tracing::warn!(error = %e, "cluster: checking the group chat node failed");
        }
        cluster
            .observed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|_, (_, when)| when.elapsed() < OBSERVED_TTL);
    }
}

async fn writer(shared: Arc<Shared>, cluster: Arc<Cluster>) {
    let dirty = shared.router.track_changes();
    loop {
        let (batch, upto) = dirty.take(ACCOUNTS_AT_ONCE);
        if batch.is_empty() {
            dirty.notify.notified().await;
            continue;
        }
        // Concurrently over the multiplexed connection: a burst of logins is written in
        // about one round trip per batch, not one per account.
        let writes = batch.iter().map(|b| cluster.write(&shared, b));
        let results = futures_util::future::join_all(writes).await;
        let mut failed = false;
        for (bare, r) in batch.iter().zip(results) {
            if let Err(e) = r {
                tracing::warn!(error = %e, "cluster registry write failed; retrying");
                dirty_again(&shared, bare);
                failed = true;
            }
        }
        // What failed was marked again (a later mark): what was marked up to `upto` is done.
        dirty.finished(upto);
        if failed {
            tokio::time::sleep(RETRY).await;
        }
    }
}

fn dirty_again(shared: &Shared, bare: &str) {
    shared.router.track_changes().mark(bare);
}

async fn state_sharer(cluster: Arc<Cluster>) {
    let rx = cluster
        .state_rx
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .take();
    let Some(mut rx) = rx else {
        return;
    };
    let mut batch = Vec::with_capacity(BATCH);
    while rx.recv_many(&mut batch, BATCH).await > 0 {
        // A session's registry change (its bind, say) is in Redis before anything it sent
        // after it: the receiving node may need the entry to answer (a probe's answer, an
        // IQ result), and reads it when the stanza comes from a session it does not know.
        if let Some(d) = cluster.registry_dirty.get() {
            d.settled(SETTLE_WAIT).await;
        }
        let mut pipe = redis::pipe();
        for m in &batch {
            pipe.cmd("PUBLISH")
                .arg(&cluster.channels.state)
                .arg(format!("{}\n{m}", cluster.node))
                .ignore();
        }
        if let Err(e) = pipe.query_async::<()>(&mut cluster.conn()).await {
            tracing::warn!(error = %e, lost = batch.len(), "cluster: sharing state changes failed");
        }
        batch.clear();
    }
}

async fn push_announcer(cluster: Arc<Cluster>) {
    loop {
        let (batch, _) = cluster.push_dirty.take(ACCOUNTS_AT_ONCE);
        if batch.is_empty() {
            cluster.push_dirty.notify.notified().await;
            continue;
        }
        let mut pipe = redis::pipe();
        for user in &batch {
            pipe.cmd("PUBLISH")
                .arg(&cluster.channels.push)
                .arg(format!("{}|{user}", cluster.node))
                .ignore();
        }
        if let Err(e) = pipe.query_async::<()>(&mut cluster.conn()).await {
            tracing::warn!(error = %e, "cluster: announcing push registration changes failed; retrying");
            for user in &batch {
                cluster.push_dirty.mark(user);
            }
            tokio::time::sleep(RETRY).await;
        }
    }
}

async fn subscriber(shared: Arc<Shared>, cluster: Arc<Cluster>) {
    loop {
        match cluster.client.get_async_pubsub().await {
            Ok(mut ps) => match ps
                .subscribe(&[
                    &cluster.channels.registry,
                    &cluster.channels.push,
                    &cluster.channels.state,
                ])
                .await
            {
                Ok(()) => {
                    // Redis may have restarted empty: this node's sessions are written
                    // again, and whatever changed while it was not listening — every
                    // account of every live node — is read again.
                    let dirty = shared.router.track_changes();
                    for b in shared.router.local_accounts() {
                        dirty.mark(&b);
                    }
                    let nodes: Vec<String> = cluster
                        .alive
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .iter()
                        .cloned()
                        .collect();
                    for n in nodes {
                        if let Err(e) = cluster.reread_node(&n).await {
                            tracing::warn!(error = %e, "cluster registry read failed");
                        }
                    }
                    let mut msgs = ps.on_message();
                    while let Some(m) = msgs.next().await {
                        let Ok(p) = m.get_payload::<String>() else {
                            continue;
                        };
                        if m.get_channel_name() == cluster.channels.state {
                            if let Some((node, rest)) = p.split_once('\n') {
                                if node != cluster.node {
                                    apply_state(&shared, rest);
                                }
                            }
                            continue;
                        }
                        let Some((node, bare)) = p.split_once('|') else {
                            continue;
                        };
                        if node == cluster.node {
                            continue;
                        }
                        if bare.is_empty() {
                            // A node left: sweep now (see `leave`).
                            cluster.node_left(node);
                            let (s, c) = (shared.clone(), cluster.clone());
                            tokio::spawn(async move {
                                if let Err(e) = c.sweep_nodes(&s).await {
                                    tracing::warn!(error = %e, "cluster node sweep failed");
                                }
                                if let Err(e) = c.check_muc_home(&s, true).await {
                                    tracing::warn!(error = %e, "cluster: checking the group chat node failed");
                                }
                            });
                            continue;
                        }
                        if m.get_channel_name() == cluster.channels.push {
                            shared.push.send(crate::routing::msg::PushEvent::Reload {
                                user: bare.to_string(),
                            });
                        } else {
                            cluster.refresh.mark(bare);
                        }
                    }
                    tracing::warn!("cluster registry subscription lost; reconnecting");
                }
                Err(e) => tracing::warn!(error = %e, "cluster registry subscribe failed"),
            },
            Err(e) => tracing::warn!(error = %e, "cluster registry subscription: no connection"),
        }
        tokio::time::sleep(RETRY).await;
    }
}

async fn refresher(shared: Arc<Shared>, cluster: Arc<Cluster>) {
    loop {
        let (batch, _) = cluster.refresh.take(ACCOUNTS_AT_ONCE);
        if batch.is_empty() {
            cluster.refresh.notify.notified().await;
            continue;
        }
        let reads = batch.iter().map(|b| cluster.read(&shared, b));
        let results = futures_util::future::join_all(reads).await;
        let mut failed = false;
        for (bare, r) in batch.iter().zip(results) {
            if let Err(e) = r {
                tracing::warn!(error = %e, "cluster registry read failed; retrying");
                cluster.refresh.mark(bare);
                failed = true;
            }
        }
        if failed {
            tokio::time::sleep(RETRY).await;
        }
    }
}

/// Writes what this node gives `node`'s sessions to `node`'s stream, in pipelines of up to
/// [`BATCH`]. Ends when the link is dropped (the node died and every mirrored session of it
/// was forgotten).
async fn forward(cluster: Arc<Cluster>, node: String, mut rx: mpsc::UnboundedReceiver<Outgoing>) {
    let key = keys::inbox(&node);
    let mut batch = Vec::with_capacity(BATCH);
    while rx.recv_many(&mut batch, BATCH).await > 0 {
        let mut pipe = redis::pipe();
        for o in &batch {
            let payload = match &o.payload {
                Payload::Empty => String::new(),
                Payload::Text(t) => t.clone(),
                Payload::Element(el) => match stanza::to_xml(el) {
                    Some(x) => x,
                    None => continue,
                },
                Payload::Batch(els) => {
                    let mut wrap = Element::builder("batch", "urn:herald:cluster").build();
                    for el in els {
                        wrap.append_child(el.clone());
                    }
                    match stanza::to_xml(&wrap) {
                        Some(x) => x,
                        None => continue,
                    }
                }
            };
            let d = Delivery {
                from_node: cluster.node.clone(),
                op: o.op,
                to: o.to.clone(),
                payload,
            };
            let mut cmd = redis::cmd("XADD");
            cmd.arg(&key)
                .arg("MAXLEN")
                .arg("~")
                .arg(cluster.stream_max)
                .arg("*");
            for (k, v) in d.fields() {
                cmd.arg(k).arg(v);
            }
            pipe.add_command(cmd).ignore();
        }
        let mut c = cluster.conn();
        if let Err(e) = pipe.query_async::<()>(&mut c).await {
            // The connection manager reconnects: one more try after a pause (a Redis
            // restart, a failover). XADD twice is possible if the first reply was lost after
            // Redis applied it; a session's XEP-0198 queue does not dedupe, but the archive
            // and push do by id.
            tracing::warn!(node, error = %e, "cluster delivery failed; retrying once");
            tokio::time::sleep(RETRY).await;
            if let Err(e) = pipe.query_async::<()>(&mut c).await {
                // Lost to their live sessions (a message is in the sender's and recipient's
                // archives when archiving is on).
                tracing::warn!(node, error = %e, lost = batch.len(), "cluster delivery failed");
            }
        }
        // Dropping them gives their bytes back to the link's budget.
        batch.clear();
    }
}

/// Reads this node's stream and hands each entry to its session.
async fn reader(shared: Arc<Shared>, cluster: Arc<Cluster>) {
    let key = keys::inbox(&cluster.node);
    // The stream was emptied when the node joined: anything in it now is for this run.
    let mut last = "0-0".to_string();
    loop {
        let cfg = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(3)))
            .set_response_timeout(None);
        let mut c = match cluster
            .client
            .get_multiplexed_async_connection_with_config(&cfg)
            .await
        {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "cluster stream reader: no connection");
                tokio::time::sleep(RETRY).await;
                continue;
            }
        };
        loop {
            let r: redis::RedisResult<Option<redis::streams::StreamReadReply>> =
                redis::cmd("XREAD")
                    .arg("COUNT")
                    .arg(READ_COUNT)
                    .arg("BLOCK")
                    .arg(READ_BLOCK_MS)
                    .arg("STREAMS")
                    .arg(&key)
                    .arg(&last)
                    .query_async(&mut c)
                    .await;
            let reply = match r {
                Ok(Some(r)) => r,
                Ok(None) => continue,
                Err(e) => {
                    tracing::warn!(error = %e, "cluster stream read failed; reconnecting");
                    break;
                }
            };
            for k in reply.keys {
                for id in k.ids {
                    last = id.id.clone();
                    match Delivery::from_fields(&entry_fields(&id), cluster.max_stanza) {
                        Ok(d) => {
                            cluster.know_sender(&shared, &d).await;
                            deliver(&shared, d).await
                        }
                        Err(e) => tracing::warn!(error = %e, "unreadable cluster delivery"),
                    }
                }
            }
            // Read entries are not needed again: the stream stays as short as the backlog.
            let _: redis::RedisResult<()> = redis::cmd("XTRIM")
                .arg(&key)
                .arg("MINID")
                .arg(&last)
                .query_async(&mut c)
                .await;
        }
        tokio::time::sleep(RETRY).await;
    }
}

/// The `from` attribute of a serialized stanza's top element, without parsing it all.
fn sender(xml: &str) -> Option<&str> {
    let head = &xml[..xml.find('>')?];
    for q in ['\'', '"'] {
        let pat = format!(" from={q}");
        if let Some(i) = head.find(&pat) {
            let rest = &head[i + pat.len()..];
            return rest.find(q).map(|j| &rest[..j]);
        }
    }
    None
}

/// A push rule event for another node's engine ([`Op::Push`]).
#[derive(serde::Serialize, serde::Deserialize)]
pub struct ForwardedPush {
    /// `a` archived (rule b), `o` stored offline (rule c), `g` groupchat unrouted.
    k: char,
    /// The stanza as the rules see it.
    s: herald_push::StanzaInfo,
}

impl ForwardedPush {
    fn into_event(self, user: String) -> crate::routing::msg::PushEvent {
        use crate::routing::msg::PushEvent;
        match self.k {
            'o' => PushEvent::StoredOffline {
                user,
                stanza: self.s,
            },
            'g' => PushEvent::GroupchatUnrouted {
                user,
                stanza: self.s,
            },
            _ => PushEvent::Archived {
                user,
                stanza: self.s,
            },
        }
    }
}

/// Cluster mode: hands a rule b/c event for `user` to the node owning the user's push
/// state; false when that is this node (or the other cannot be reached or its queue is
/// full: then it is handled here rather than lost).
pub fn forward_push(
    shared: &Shared,
    kind: char,
    user: &str,
    stanza: &herald_push::StanzaInfo,
) -> bool {
    let Some(link) = shared.cluster.get().and_then(|c| c.push_owner_link(user)) else {
        return false;
    };
    let payload = match serde_json::to_string(&ForwardedPush {
        k: kind,
        s: stanza.clone(),
    }) {
        Ok(p) => p,
        Err(_) => return false,
    };
    link.try_send_op(Op::Push, user, payload)
}

/// A stream entry's fields as strings (anything else is not ours and is left out).
fn entry_fields(id: &redis::streams::StreamId) -> Vec<(String, String)> {
    id.map
        .iter()
        .filter_map(|(k, v)| {
            redis::from_redis_value_ref::<String>(v)
                .ok()
                .map(|v| (k.clone(), v))
        })
        .collect()
}

/// Hands one delivery to its session on this node, as the sending node's router would have
/// if the session were its own.
async fn deliver(shared: &Arc<Shared>, d: Delivery) {
    if matches!(d.op, Op::HandOff | Op::HandedOff) {
        return hand_off_op(shared, d);
    }
    if d.op == Op::Push {
        // Handed here by the node that routed the stanza: this node owns the account's
        // push state (no forwarding on, whatever this node believes).
        match serde_json::from_str::<ForwardedPush>(&d.payload) {
            Ok(p) => shared.push.send(p.into_event(d.to)),
            Err(e) => tracing::warn!(error = %e, "unreadable push event from another node"),
        }
        return;
    }
    if d.op == Op::Route {
        tracing::debug!(
            from = d.from_node,
            to = d.to,
            "stanza routed here by another node"
        );
        if let Ok(el) = d.payload.parse::<Element>() {
            // Routed here, not on: this node serves it (see `muc_home_link`).
            crate::routing::msg::ROUTED_HERE
                .scope((), routing::route(shared, el))
                .await;
        }
        return;
    }
    if d.op == Op::Component {
        let Some(el) = d.payload.parse::<Element>().ok() else {
            return;
        };
        match shared.router.component(&d.to) {
            Some(tx) => routing::to_component(shared, &tx, el).await,
            None => routing::bounce(shared, &el, StanzaErrorCondition::ServiceUnavailable).await,
        }
        return;
    }
    let Ok(jid) = d.to.parse::<Jid>() else {
        return;
    };
    let Some(res) = jid.resource() else {
        return;
    };
    let bare = jid.to_bare().to_string();
    let local = shared
        .router
        .resource(&bare, res.as_str())
        .filter(|r| r.tx.is_local());
    let parse = |p: &str| p.parse::<Element>().ok();
    match d.op {
        Op::Stanza => {
            let Some(el) = parse(&d.payload) else {
                tracing::warn!(from = d.from_node, "unreadable stanza from another node");
                return;
            };
            FROM_CLUSTER
                .scope((), async {
                    match local {
                        Some(r) => {
                            if let Err(Some(el)) = routing::send_to(shared, &r, el) {
                                over_budget(shared, el).await;
                            }
                        }
                        None => session_gone(shared, &bare, &jid, el).await,
                    }
                })
                .await
        }
        Op::Kick => {
            if let Some(r) = local {
                let (cond, text) = match d.payload.split_once('\n') {
                    Some((c, t)) => (c, Some(t.to_string())),
                    None => (d.payload.as_str(), None),
                };
                let cond =
                    StreamErrorCondition::parse(cond).unwrap_or(StreamErrorCondition::Conflict);
                let _ =
                    r.tx.send_control(SessionMsg::Kick(StreamError::new(cond, text)));
            }
        }
        Op::Send => {
            if let (Some(r), Some(batch)) = (local, parse(&d.payload)) {
                let els = batch.children().cloned().collect();
                let _ = r.tx.send_control(SessionMsg::Command(Command::Send(els)));
            }
        }
        Op::RosterPush => {
            if let (Some(r), Some(el)) = (local, parse(&d.payload)) {
                let _ =
                    r.tx.send_control(SessionMsg::Command(Command::RosterPush(Box::new(el))));
            }
        }
        Op::CheckOffline => {
            if let Some(r) = local {
                let _ =
                    r.tx.send_control(SessionMsg::Command(Command::CheckOffline));
            }
        }
        Op::Component | Op::HandOff | Op::HandedOff | Op::Route | Op::Push => {}
        Op::Rebroadcast => {
            if let Some(r) = local {
                let _ =
                    r.tx.send_control(SessionMsg::Command(Command::RebroadcastPresence));
            }
        }
    }
}

/// A hand-off asked of this node (answered from a task of its own: the session saves
/// itself first, and the stream reader must not wait for that) or the answer to one this
/// node asked.
fn hand_off_op(shared: &Arc<Shared>, d: Delivery) {
    let Some(cluster) = shared.cluster.get() else {
        return;
    };
    if d.op == Op::HandedOff {
        let waiter = cluster
            .handoffs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&d.to);
        if let Some(w) = waiter {
            let _ = w.send(d.payload == "1");
        }
        return;
    }
    let session = shared
        .resumable_get(&d.to)
        .filter(|r| r.bare == d.payload && r.tx.is_local());
    let cluster = cluster.clone();
    tokio::spawn(async move {
        let mut saved = false;
        if let Some(r) = session {
            let (tx, rx) = tokio::sync::oneshot::channel();
            if r.tx.send_control(SessionMsg::HandOff(tx)).is_ok() {
                saved = matches!(tokio::time::timeout(HANDOFF_WAIT, rx).await, Ok(Ok(true)));
            }
        }
        let answer = if saved { "1" } else { "0" };
        cluster
            .link(&d.from_node)
            .send_op(Op::HandedOff, &d.to, answer.to_string());
    });
}

/// The session's inbox or budget is full: what the sending node's router does for its own.
async fn over_budget(shared: &Arc<Shared>, el: Element) {
    match stanza::kind(&el) {
        Some(Kind::Message) | Some(Kind::Iq) => {
            routing::bounce_wait(shared, &el, StanzaErrorCondition::ResourceConstraint).await
        }
        _ => {}
    }
}

/// The session the other node chose ended before the stanza arrived: a message is
/// delivered as to this account again (on this node only: the scope refuses other nodes'
/// sessions, so it cannot bounce between nodes), which stores it offline when nothing here
/// takes it; an IQ request gets service-unavailable (RFC 6121 §8.5.3.2.1); presence is
/// dropped, as for an ended session.
async fn session_gone(shared: &Arc<Shared>, bare: &str, to: &Jid, el: Element) {
    match stanza::kind(&el) {
        Some(Kind::Message) => {
            crate::features::message::deliver_forwarded(shared, bare, to, el).await
        }
        Some(Kind::Iq) if matches!(stanza::typ(&el), "get" | "set") => {
            routing::bounce(shared, &el, StanzaErrorCondition::ServiceUnavailable).await
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn sender_reads_the_top_elements_from() {
        assert_eq!(
            super::sender(
                "<message xmlns='jabber:client' from='a@d/r' to='b@d'><body from='x'/></message>"
            ),
            Some("a@d/r")
        );
        assert_eq!(super::sender("<iq from=\"a@d\" id='1'/>"), Some("a@d"));
        assert_eq!(super::sender("<iq to='a@d'><x from='y'/></iq>"), None);
        assert_eq!(super::sender("<iq"), None);
    }
}
