//! Herald cluster mode, pure parts.
//!
//! Several Herald nodes share one PostgreSQL store and one Redis. Redis holds what is
//! live and per node:
//!
//! * `herald:node:{node}` — the node's heartbeat, a string holding the millisecond time of
//!   its last beat, written with a TTL equal to the lease ([`keys::node`]);
//! * `herald:sess:{bare}` — a hash full-JID resource → [`Entry`] (node, live or
//!   hibernated, priority, available, carbons), one per bound resource anywhere
//!   ([`keys::sessions`]). Entries of nodes whose heartbeat has expired are ignored by
//!   readers and removed by the next writer ([`lease::stale_entries`]);
//! * `herald:in:{node}` — the node's delivery stream (Redis Streams, XADD / XREAD): a
//!   stream rather than pub/sub so that a stanza sent while the receiving node briefly
//!   reconnects to Redis is read when it comes back instead of being dropped
//!   ([`keys::inbox`], [`Delivery`]).
//!
//! Everything here is time-explicit and does no I/O, so it is tested without Redis.
//! The entry carries `state` (live / hibernated) so that XEP-0198 resumption on another
//! node and cluster-wide push ownership can be built on the same registry later.

pub mod keys;
pub mod lease;
pub mod route;

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
}

impl Entry {
    /// `v1|node|L or H|priority|a or -|c or -`.
    pub fn encode(&self) -> String {
        format!(
            "v1|{}|{}|{}|{}|{}",
            self.node,
            match self.state {
                State::Live => 'L',
                State::Hibernated => 'H',
            },
            self.priority,
            if self.available { 'a' } else { '-' },
            if self.carbons { 'c' } else { '-' },
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
        if it.next().is_some() {
            return Err(DecodeError::Field("trailing"));
        }
        Ok(Entry {
            node: node.to_string(),
            state,
            priority,
            available,
            carbons,
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

/// Whom a forwarded stanza is for on the receiving node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Recipient {
    /// One full JID: deliver to that session only (or bounce per RFC 6120 if it is gone).
    Full(String),
    /// A bare JID: the receiving node delivers to its own sessions among `resources`,
    /// which the sending node chose with the cluster-wide decision ([`route`]).
    Bare {
        /// The bare JID.
        bare: String,
        /// The chosen resources held by the receiving node.
        resources: Vec<String>,
    },
}

/// One serialized stanza on a node's delivery stream (the fields of one XADD entry).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Delivery {
    /// The node that sent it (for logs and loop checks).
    pub from_node: String,
    /// Whom it is for.
    pub to: Recipient,
    /// The stanza's XML, as serialized by the sending node.
    pub stanza: String,
}

impl Delivery {
    /// The XADD field/value pairs.
    pub fn fields(&self) -> Vec<(&'static str, String)> {
        let mut f = vec![("v", "1".to_string()), ("from", self.from_node.clone())];
        match &self.to {
            Recipient::Full(j) => f.push(("full", j.clone())),
            Recipient::Bare { bare, resources } => {
                f.push(("bare", bare.clone()));
                // Resourceparts may hold any character but NUL is not allowed in XMPP
                // addresses (RFC 7622), so it is a safe separator.
                f.push(("res", resources.join("\0")));
            }
        }
        f.push(("stanza", self.stanza.clone()));
        f
    }

    /// Decodes the fields of one stream entry, refusing stanzas over `max_bytes` (the
    /// receiving node's own stanza size limit: another node must not make it buffer more).
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
        let stanza = get("stanza").ok_or(DecodeError::Field("stanza"))?;
        if stanza.len() > max_bytes {
            return Err(DecodeError::TooBig(stanza.len(), max_bytes));
        }
        let to = match (get("full"), get("bare")) {
            (Some(j), None) if !j.is_empty() => Recipient::Full(j.to_string()),
            (None, Some(b)) if !b.is_empty() => Recipient::Bare {
                bare: b.to_string(),
                resources: get("res")
                    .ok_or(DecodeError::Field("res"))?
                    .split('\0')
                    .filter(|r| !r.is_empty())
                    .map(str::to_string)
                    .collect(),
            },
            _ => return Err(DecodeError::Field("to")),
        };
        Ok(Delivery {
            from_node: from_node.to_string(),
            to,
            stanza: stanza.to_string(),
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
        }
    }

    #[test]
    fn entry_round_trips() {
        let x = e("node-2.example_a");
        assert_eq!(x.encode(), "v1|node-2.example_a|H|-3|a|-");
        assert_eq!(Entry::decode(&x.encode()), Ok(x));
    }

    #[test]
    fn entry_rejects_garbage() {
        assert_eq!(
            Entry::decode("v2|n|L|0|a|c"),
            Err(DecodeError::Layout("v2".into()))
        );
        assert_eq!(
            Entry::decode("v1|n|X|0|a|c"),
            Err(DecodeError::Field("state"))
        );
        assert_eq!(
            Entry::decode("v1|n|L|300|a|c"),
            Err(DecodeError::Field("priority"))
        );
        assert_eq!(
            Entry::decode("v1|n|L|0|a|c|x"),
            Err(DecodeError::Field("trailing"))
        );
        assert_eq!(
            Entry::decode("v1|n n|L|0|a|c"),
            Err(DecodeError::Field("node"))
        );
        assert_eq!(
            Entry::decode("v1|n|L|0|c|a"),
            Err(DecodeError::Field("available"))
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
            to: Recipient::Bare {
                bare: "bob@d".into(),
                resources: vec!["a b".into(), "phone".into()],
            },
            stanza: "<message/>".into(),
        };
        let f: Vec<(String, String)> = d
            .fields()
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
        assert_eq!(Delivery::from_fields(&f, 100), Ok(d));
        assert_eq!(
            Delivery::from_fields(&f, 5),
            Err(DecodeError::TooBig(10, 5))
        );
        let full = Delivery {
            from_node: "n1".into(),
            to: Recipient::Full("bob@d/x".into()),
            stanza: "<iq/>".into(),
        };
        let f: Vec<(String, String)> = full
            .fields()
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
        assert_eq!(Delivery::from_fields(&f, 100), Ok(full));
        let both: Vec<(String, String)> = vec![
            ("v".into(), "1".into()),
            ("from".into(), "n1".into()),
            ("full".into(), "a@d/r".into()),
            ("bare".into(), "a@d".into()),
            ("stanza".into(), "<x/>".into()),
        ];
        assert_eq!(
            Delivery::from_fields(&both, 100),
            Err(DecodeError::Field("to"))
        );
    }
}
