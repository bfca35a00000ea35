//! Herald cluster mode, pure parts: what the nodes write to Redis and how they read it.
//! The edge that talks to Redis is `herald_server::cluster`.
//!
//! Several Herald nodes share one PostgreSQL store and one Redis. Redis holds what is
//! live ([`keys`]):
//!
//! * `herald:node:{node}` — the node's heartbeat ([`Beat`]: time and session count),
//!   written every third of the lease with the lease as TTL ([`lease`]);
//! * `herald:sess:{bare}` — a hash resourcepart → [`Entry`] (node, live or hibernated,
//!   priority, available, carbons, bind time), one field per bound resource anywhere;
//!   every node mirrors the other nodes' entries in its router;
//! * `herald:in:{node}` — the node's delivery stream (Redis Streams, XADD / XREAD) of
//!   [`Delivery`] entries ([`Op`]: a stanza for a session, a kick, a command, a stanza
//!   for a component or the group chat service, a resumption hand-off): a stream rather
//!   than pub/sub so that what is sent while the receiving node briefly reconnects to Redis
//!   is read when it comes back;
//! * XEP-0198 resumption ids name their node ([`sm_id_node`]), so any node knows which
//!   node holds a hibernated session.
//!
//! Everything here is time-explicit and does no I/O, so it is tested without Redis; and
//! everything read from Redis is decoded defensively (another node may run another
//! version).

pub mod keys;
pub mod lease;

use std::fmt;

/// Longest node name, in bytes.
pub const MAX_NODE_NAME: usize = 64;

/// A node name: 1 to [`MAX_NODE_NAME`] bytes of ASCII letters, digits, `.`, `-`, `_`,
/// so it can be embedded in Redis keys and in [`Entry`] without escaping.
pub fn check_node_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > MAX_NODE_NAME {
        return Err(format!(
            "{name:?}: a node name is 1 to {MAX_NODE_NAME} bytes"
        ));
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
    {
        return Err(format!(
            "{name:?}: a node name may hold only ASCII letters, digits, '.', '-' and '_'"
        ));
    }
    Ok(())
}

/// What a registry entry or a delivery failed to decode as. Redis content is written by
/// other nodes (possibly of another version), so it is never trusted.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    /// Not the `v1` layout.
    #[error("unknown layout {0:?}")]
    Layout(String),
    /// A field is missing or malformed.
    #[error("bad field {0}")]
    Field(&'static str),
    /// Bigger than the configured limit.
    #[error("{0} bytes: over the limit of {1}")]
    TooBig(usize, usize),
}

/// Whether a registered session has a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// Connected to its node.
    Live,
    /// XEP-0198 hibernated on its node (connection gone, waiting to be resumed).
    Hibernated,
}

/// One bound resource in the cluster-wide registry (the value of a `herald:sess:{bare}`
/// hash field whose name is the resourcepart).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// The node holding the session.
    pub node: String,
    /// Live or hibernated.
    pub state: State,
    /// Presence priority, meaningful when `available`.
    pub priority: i8,
    /// Has sent available presence.
    pub available: bool,
    /// XEP-0280 carbons enabled.
    pub carbons: bool,
    /// When it was bound (ms since the Unix epoch): when two nodes bind the same resource
    /// at once, the later bind keeps the registry field.
    pub since: u64,
}

impl Entry {
    /// `v1|node|L or H|priority|a or -|c or -|since`.
    pub fn encode(&self) -> String {
        format!(
            "v1|{}|{}|{}|{}|{}|{}",
            self.node,
            match self.state {
                State::Live => 'L',
                State::Hibernated => 'H',
            },
            self.priority,
            if self.available { 'a' } else { '-' },
            if self.carbons { 'c' } else { '-' },
            self.since,
        )
    }

    /// The inverse of [`Entry::encode`].
    pub fn decode(s: &str) -> Result<Entry, DecodeError> {
        let mut it = s.split('|');
        let layout = it.next().unwrap_or_default();
        if layout != "v1" {
            return Err(DecodeError::Layout(layout.chars().take(16).collect()));
        }
        let node = it.next().ok_or(DecodeError::Field("node"))?;
        check_node_name(node).map_err(|_| DecodeError::Field("node"))?;
        let state = match it.next() {
            Some("L") => State::Live,
            Some("H") => State::Hibernated,
            _ => return Err(DecodeError::Field("state")),
        };
        let priority = it
            .next()
            .and_then(|p| p.parse::<i8>().ok())
            .ok_or(DecodeError::Field("priority"))?;
        let available = flag(it.next(), 'a').ok_or(DecodeError::Field("available"))?;
        let carbons = flag(it.next(), 'c').ok_or(DecodeError::Field("carbons"))?;
        let since = it
            .next()
            .and_then(|p| p.parse::<u64>().ok())
            .ok_or(DecodeError::Field("since"))?;
        if it.next().is_some() {
            return Err(DecodeError::Field("trailing"));
        }
        Ok(Entry {
            node: node.to_string(),
            state,
            priority,
            available,
            carbons,
            since,
        })
    }
}

fn flag(f: Option<&str>, on: char) -> Option<bool> {
    let f = f?;
    if f.len() == 1 && f.starts_with(on) {
        Some(true)
    } else if f == "-" {
        Some(false)
    } else {
        None
    }
}

/// What a delivery asks of the receiving node, for one of its sessions (`to`, a full JID).
/// These mirror what one node's router hands a session task directly.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// Deliver the stanza in `payload` to the session.
    Stanza,
    /// End the session's stream with the stream error condition in `payload` (another
    /// node bound the same resource: `conflict`).
    Kick,
    /// Write the stanzas in `payload` (wrapped in one `<batch/>` element) as they are.
    Send,
    /// A roster push (`payload`), written only if the client asked for the roster.
    RosterPush,
    /// Deliver the account's stored offline messages if this resource may.
    CheckOffline,
    /// Broadcast the session's last available presence again (avatar hash changed).
    Rebroadcast,
    /// Hand the stanza in `payload` to the XEP-0114 component attached to the receiving
    /// node whose domain is `to`.
    Component,
    /// XEP-0198 resumption on another node: save the hibernated session whose resumption
    /// id is `to` (of the account in `payload`) to the store and let it go, for the sending
    /// node to restore and resume.
    HandOff,
    /// The answer to [`Op::HandOff`] for resumption id `to`: `payload` is `1` when the
    /// session was saved and let go, `0` otherwise.
    HandedOff,
    /// Route the stanza in `payload` on the receiving node, which serves what is addressed
    /// to `to` (the group chat service, held by one node at a time).
    Route,
    /// A push rule event for account `to` (rules b and c: archived, stored offline,
    /// groupchat unrouted; `payload` is its JSON), for the node that owns the account's
    /// push state ([`push_owner`]).
    Push,
}

impl Op {
    fn code(self) -> &'static str {
        match self {
            Op::Stanza => "s",
            Op::Kick => "k",
            Op::Send => "b",
            Op::RosterPush => "r",
            Op::CheckOffline => "o",
            Op::Rebroadcast => "p",
            Op::Component => "c",
            Op::HandOff => "h",
            Op::HandedOff => "H",
            Op::Route => "R",
            Op::Push => "P",
        }
    }

    fn from_code(c: &str) -> Option<Op> {
        Some(match c {
            "s" => Op::Stanza,
            "k" => Op::Kick,
            "b" => Op::Send,
            "r" => Op::RosterPush,
            "o" => Op::CheckOffline,
            "p" => Op::Rebroadcast,
            "c" => Op::Component,
            "h" => Op::HandOff,
            "H" => Op::HandedOff,
            "R" => Op::Route,
            "P" => Op::Push,
            _ => return None,
        })
    }
}

/// One entry of a node's delivery stream (the fields of one XADD): something for one of
/// the receiving node's sessions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Delivery {
    /// The node that sent it (for logs).
    pub from_node: String,
    /// What to do.
    pub op: Op,
    /// The session's full JID (a component's domain for [`Op::Component`]).
    pub to: String,
    /// The stanza's XML as the sending node serialized it, or the op's argument; may be
    /// empty.
    pub payload: String,
}

impl Delivery {
    /// The XADD field/value pairs.
    pub fn fields(&self) -> [(&'static str, &str); 5] {
        [
            ("v", "1"),
            ("from", &self.from_node),
            ("op", self.op.code()),
            ("to", &self.to),
            ("p", &self.payload),
        ]
    }

    /// Decodes the fields of a stream entry, refusing a payload over `max_bytes` (another
    /// node's limit may differ from ours: ours applies).
    pub fn from_fields(fields: &[(String, String)], max_bytes: usize) -> Result<Self, DecodeError> {
        let get = |k: &str| fields.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        match get("v") {
            Some("1") => {}
            other => {
                return Err(DecodeError::Layout(
                    other.unwrap_or_default().chars().take(16).collect(),
                ))
            }
        }
        let from_node = get("from").ok_or(DecodeError::Field("from"))?;
        check_node_name(from_node).map_err(|_| DecodeError::Field("from"))?;
        let op = get("op")
            .and_then(Op::from_code)
            .ok_or(DecodeError::Field("op"))?;
        let to = get("to")
            .filter(|t| !t.is_empty())
            .ok_or(DecodeError::Field("to"))?;
        let payload = get("p").unwrap_or_default();
        if payload.len() > max_bytes {
            return Err(DecodeError::TooBig(payload.len(), max_bytes));
        }
        Ok(Delivery {
            from_node: from_node.to_string(),
            op,
            to: to.to_string(),
            payload: payload.to_string(),
        })
    }
}

/// XEP-0198 resumption ids made in cluster mode start with the node's name and `~`, so any
/// node knows which node holds a hibernated session (and whose saved sessions a starting
/// node restores): the node of `id`, None for an id without one.
pub fn sm_id_node(id: &str) -> Option<&str> {
    let (node, rest) = id.split_once('~')?;
    (check_node_name(node).is_ok() && !rest.is_empty()).then_some(node)
}

/// The node that owns `user`'s push state among `nodes` (rendezvous hashing: each node
/// scores FNV-1a of `node NUL user`, the highest wins), so every node that sees the same
/// live nodes picks the same owner, and when a node goes only its users move. None for no
/// nodes.
pub fn push_owner<'a>(user: &str, nodes: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    fn fnv1a(parts: &[&[u8]]) -> u64 {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for p in parts {
            for b in *p {
                h ^= u64::from(*b);
                h = h.wrapping_mul(0x0100_0000_01b3);
            }
        }
        h
    }
    nodes
        .into_iter()
        .max_by_key(|n| (fnv1a(&[n.as_bytes(), b"\0", user.as_bytes()]), *n))
}

/// A node's heartbeat value: when it beat (ms since the Unix epoch) and how many sessions
/// it held then (for `herald cluster status`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Beat {
    /// Time of the beat, ms.
    pub ms: u64,
    /// Sessions bound on the node (live and hibernated).
    pub sessions: usize,
}

impl Beat {
    /// `ms|sessions`.
    pub fn encode(&self) -> String {
        format!("{}|{}", self.ms, self.sessions)
    }

    /// None for anything else.
    pub fn decode(s: &str) -> Option<Beat> {
        let (ms, n) = s.split_once('|')?;
        Some(Beat {
            ms: ms.parse().ok()?,
            sessions: n.parse().ok()?,
        })
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            State::Live => "live",
            State::Hibernated => "hibernated",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(node: &str) -> Entry {
        Entry {
            node: node.into(),
            state: State::Hibernated,
            priority: -3,
            available: true,
            carbons: false,
            since: 7,
        }
    }

    #[test]
    fn entry_round_trips() {
        let x = e("node-2.example_a");
        assert_eq!(x.encode(), "v1|node-2.example_a|H|-3|a|-|7");
        assert_eq!(Entry::decode(&x.encode()), Ok(x));
    }

    #[test]
    fn entry_rejects_garbage() {
        assert_eq!(
            Entry::decode("v2|n|L|0|a|c|1"),
            Err(DecodeError::Layout("v2".into()))
        );
        assert_eq!(
            Entry::decode("v1|n|X|0|a|c|1"),
            Err(DecodeError::Field("state"))
        );
        assert_eq!(
            Entry::decode("v1|n|L|300|a|c|1"),
            Err(DecodeError::Field("priority"))
        );
        assert_eq!(
            Entry::decode("v1|n|L|0|a|c|1|x"),
            Err(DecodeError::Field("trailing"))
        );
        assert_eq!(
            Entry::decode("v1|n n|L|0|a|c|1"),
            Err(DecodeError::Field("node"))
        );
        assert_eq!(
            Entry::decode("v1|n|L|0|c|a|1"),
            Err(DecodeError::Field("available"))
        );
        assert_eq!(
            Entry::decode("v1|n|L|0|a|c|-1"),
            Err(DecodeError::Field("since"))
        );
        assert_eq!(Entry::decode(""), Err(DecodeError::Layout(String::new())));
    }

    #[test]
    fn node_names() {
        assert!(check_node_name("herald-1").is_ok());
        assert!(check_node_name("").is_err());
        assert!(check_node_name("a|b").is_err());
        assert!(check_node_name(&"x".repeat(65)).is_err());
        assert!(check_node_name(&"x".repeat(64)).is_ok());
    }

    #[test]
    fn delivery_round_trips_and_is_bounded() {
        let d = Delivery {
            from_node: "n1".into(),
            op: Op::Stanza,
            to: "bob@d/a b".into(),
            payload: "<message/>".into(),
        };
        let f: Vec<(String, String)> = d
            .fields()
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        assert_eq!(Delivery::from_fields(&f, 100), Ok(d));
        assert_eq!(
            Delivery::from_fields(&f, 5),
            Err(DecodeError::TooBig(10, 5))
        );
        for op in [
            Op::Stanza,
            Op::Kick,
            Op::Send,
            Op::RosterPush,
            Op::CheckOffline,
            Op::Rebroadcast,
            Op::Component,
            Op::HandOff,
            Op::HandedOff,
            Op::Route,
            Op::Push,
        ] {
            assert_eq!(Op::from_code(op.code()), Some(op));
        }
        let field = |k: &str, v: &str| (k.to_string(), v.to_string());
        let bad_op = vec![
            field("v", "1"),
            field("from", "n1"),
            field("op", "z"),
            field("to", "a@d/r"),
        ];
        assert_eq!(
            Delivery::from_fields(&bad_op, 100),
            Err(DecodeError::Field("op"))
        );
        let no_to = vec![field("v", "1"), field("from", "n1"), field("op", "o")];
        assert_eq!(
            Delivery::from_fields(&no_to, 100),
            Err(DecodeError::Field("to"))
        );
        let bad_node = vec![
            field("v", "1"),
            field("from", "a|b"),
            field("op", "o"),
            field("to", "a@d/r"),
        ];
        assert_eq!(
            Delivery::from_fields(&bad_node, 100),
            Err(DecodeError::Field("from"))
        );
        assert_eq!(
            Delivery::from_fields(&[field("v", "2")], 100),
            Err(DecodeError::Layout("2".into()))
        );
    }

    #[test]
    fn resumption_ids_name_their_node() {
        assert_eq!(sm_id_node("n-1~0af3"), Some("n-1"));
        assert_eq!(sm_id_node("0af3"), None);
        assert_eq!(sm_id_node("n1~"), None);
        assert_eq!(sm_id_node("a b~x"), None);
        assert_eq!(sm_id_node("~x"), None);
    }

    #[test]
    fn push_owner_is_stable_and_moves_only_the_lost_nodes_users() {
        let all = ["n1", "n2", "n3"];
        let users: Vec<String> = (0..300).map(|i| format!("u{i}@d")).collect();
        let owners: Vec<&str> = users
            .iter()
            .map(|u| push_owner(u, all).unwrap_or_default())
            .collect();
        // Order of the candidates does not matter.
        for (u, o) in users.iter().zip(&owners) {
            assert_eq!(push_owner(u, ["n3", "n1", "n2"]), Some(*o));
        }
        // Spread over the nodes.
        for n in all {
            let c = owners.iter().filter(|o| **o == n).count();
            assert!((50..=150).contains(&c), "{n}: {c}");
        }
        // n2 goes: only n2's users change owner.
        for (u, o) in users.iter().zip(&owners) {
            let now = push_owner(u, ["n1", "n3"]).unwrap_or_default();
            if *o != "n2" {
                assert_eq!(now, *o);
            }
        }
        assert_eq!(push_owner("u@d", std::iter::empty()), None);
    }

    #[test]
    fn beat_round_trips() {
        let b = Beat {
            ms: 1_700_000_000_123,
            sessions: 42,
        };
        assert_eq!(Beat::decode(&b.encode()), Some(b));
        assert_eq!(Beat::decode("12"), None);
        assert_eq!(Beat::decode("x|1"), None);
    }
}
