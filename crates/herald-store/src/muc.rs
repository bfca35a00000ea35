//! Persistent group chat rooms (XEP-0045): each room's configuration as opaque text and its
//! affiliations. Temporary rooms are never stored. This module must not interpret either:
//! herald-muc writes and reads the configuration text, the server decides what to save.

use rusqlite::params;

use crate::error::{Result, StoreError};
use crate::sqlite::Store;

/// One saved room.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MucRoom {
    /// The room's bare JID.
    pub jid: String,
    /// Its configuration, as the server wrote it.
    pub config: String,
    /// `(bare JID, affiliation)`: `owner`, `admin`, `member` or `outcast`, sorted by JID.
    pub affiliations: Vec<(String, String)>,
    /// Its vCard (XEP-0486 room avatar) as XML, if one was set.
    pub vcard: Option<String>,
}

/// Saved rooms.
pub trait MucStore {
    /// Saves a room, replacing what was saved under its JID (configuration, vCard and every
    /// affiliation). [`StoreError::Invalid`] for an affiliation other than the four.
    fn save_room(&self, room: &MucRoom) -> Result<()>;
    /// Forgets a room (nothing if it was not saved).
    fn delete_room(&self, jid: &str) -> Result<()>;
    /// Every saved room, sorted by JID.
    fn load_rooms(&self) -> Result<Vec<MucRoom>>;
}

impl MucStore for Store {
    fn save_room(&self, room: &MucRoom) -> Result<()> {
        if let Some((_, a)) = room
            .affiliations
            .iter()
            .find(|(_, a)| !matches!(a.as_str(), "owner" | "admin" | "member" | "outcast"))
        {
            return Err(StoreError::Invalid(format!("affiliation {a:?}")));
        }
        self.write(|tx| {
            tx.prepare_cached(
                "INSERT INTO muc_rooms (room, config, vcard) VALUES (?1, ?2, ?3)
                 ON CONFLICT (room) DO UPDATE SET config = excluded.config, vcard = excluded.vcard",
            )?
            .execute(params![room.jid, room.config, room.vcard])?;
            tx.prepare_cached("DELETE FROM muc_affiliations WHERE room = ?1")?
                .execute([&room.jid])?;
            let mut ins = tx.prepare_cached(
                "INSERT INTO muc_affiliations (room, jid, affiliation) VALUES (?1, ?2, ?3)
                 ON CONFLICT (room, jid) DO UPDATE SET affiliation = excluded.affiliation",
            )?;
            for (jid, a) in &room.affiliations {
                ins.execute(params![room.jid, jid, a])?;
            }
            Ok(())
        })
    }

    fn delete_room(&self, jid: &str) -> Result<()> {
        self.write(|tx| {
            tx.prepare_cached("DELETE FROM muc_affiliations WHERE room = ?1")?
                .execute([jid])?;
            tx.prepare_cached("DELETE FROM muc_rooms WHERE room = ?1")?
                .execute([jid])?;
            Ok(())
        })
    }

    fn load_rooms(&self) -> Result<Vec<MucRoom>> {
        self.read(|tx| {
            let mut rooms: Vec<MucRoom> = tx
                .prepare("SELECT room, config, vcard FROM muc_rooms ORDER BY room")?
                .query_map([], |r| {
                    Ok(MucRoom {
                        jid: r.get(0)?,
                        config: r.get(1)?,
                        affiliations: Vec::new(),
                        vcard: r.get(2)?,
                    })
                })?
                .collect::<rusqlite::Result<_>>()?;
            let mut stmt = tx.prepare(
                "SELECT room, jid, affiliation FROM muc_affiliations ORDER BY room, jid",
            )?;
            let rows = stmt.query_map([], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get(2)?))
            })?;
            for row in rows {
                let (room, jid, a) = row?;
                if let Ok(i) = rooms.binary_search_by(|x| x.jid.as_str().cmp(room.as_str())) {
                    rooms[i].affiliations.push((jid, a));
                }
            }
            Ok(rooms)
        })
    }
}
