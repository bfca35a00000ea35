//! A hibernated session's push attachment as the store keeps it across a restart (JSON in
//! the saved session's state): `(app server JID, node, message-count)` per registration and
//! whether a qualifying push already went out. The format is fixed (older records must keep
//! reading), so it is its own type rather than a serde derive on [`SessionPush`].

use serde::{Deserialize, Serialize};

use crate::engine::{RegKey, SessionPush};

/// A session's push attachment.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct SavedPush {
    /// (app server JID, node, message-count).
    pub regs: Vec<(String, String, u32)>,
    /// A qualifying push already went out in this hibernation.
    pub first_push: bool,
}

impl From<SessionPush> for SavedPush {
    fn from(p: SessionPush) -> Self {
        SavedPush {
            regs: p
                .regs
                .into_iter()
                .map(|(k, n)| (k.jid, k.node, n))
                .collect(),
            first_push: p.first_push,
        }
    }
}

impl SavedPush {
    /// The engine's form.
    pub fn to_session(&self) -> SessionPush {
        SessionPush {
            regs: self
                .regs
                .iter()
                .map(|(jid, node, n)| {
                    let key = RegKey {
                        jid: jid.clone(),
                        node: node.clone(),
                    };
                    (key, *n)
                })
                .collect(),
            first_push: self.first_push,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_through_the_engine_form() {
        let s = SavedPush {
            regs: vec![("push.x".into(), "n".into(), 4)],
            first_push: true,
        };
        let back = SavedPush::from(s.to_session());
        assert_eq!(back.regs, s.regs);
        assert!(back.first_push);
        let json = serde_json::to_string(&s).unwrap_or_default();
        assert_eq!(json, r#"{"regs":[["push.x","n",4]],"first_push":true}"#);
    }
}
