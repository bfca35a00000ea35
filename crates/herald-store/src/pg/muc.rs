//! Persistent group chat rooms (XEP-0045) on PostgreSQL: configuration, vCard and affiliations.

use super::PgStore;
use crate::error::{Result, StoreError};
use crate::muc::{MucRoom, MucStore};

impl MucStore for PgStore {
    fn save_room(&self, room: &MucRoom) -> Result<()> {
        if let Some((_, a)) = room
            .affiliations
            .iter()
            .find(|(_, a)| !matches!(a.as_str(), "owner" | "admin" | "member" | "outcast"))
        {
            return Err(StoreError::Invalid(format!("affiliation {a:?}")));
        }
        self.write(|tx| {
            tx.execute(
                "INSERT INTO muc_rooms (room, config, vcard) VALUES ($1, $2, $3)
                 ON CONFLICT (room) DO UPDATE SET config = excluded.config, vcard = excluded.vcard",
                &[&room.jid, &room.config, &room.vcard],
            )?;
            tx.execute("DELETE FROM muc_affiliations WHERE room = $1", &[&room.jid])?;
            for (jid, a) in &room.affiliations {
                tx.execute(
                    "INSERT INTO muc_affiliations (room, jid, affiliation) VALUES ($1, $2, $3)
                     ON CONFLICT (room, jid) DO UPDATE SET affiliation = excluded.affiliation",
                    &[&room.jid, jid, a],
                )?;
            }
            Ok(())
        })
    }

    fn delete_room(&self, jid: &str) -> Result<()> {
        self.write(|tx| {
            tx.execute("DELETE FROM muc_affiliations WHERE room = $1", &[&jid])?;
            tx.execute("DELETE FROM muc_rooms WHERE room = $1", &[&jid])?;
            Ok(())
        })
    }

    fn load_rooms(&self) -> Result<Vec<MucRoom>> {
        self.read(|tx| {
            let mut rooms = tx
                .query(
                    "SELECT room, config, vcard FROM muc_rooms ORDER BY room COLLATE \"C\"",
                    &[],
                )?
                .iter()
                .map(|r| {
                    Ok(MucRoom {
                        jid: r.try_get(0)?,
                        config: r.try_get(1)?,
                        affiliations: Vec::new(),
                        vcard: r.try_get(2)?,
                    })
                })
                .collect::<Result<Vec<_>>>()?;
            for r in tx.query(
                "SELECT room, jid, affiliation FROM muc_affiliations
                 ORDER BY room COLLATE \"C\", jid COLLATE \"C\"",
                &[],
            )? {
                let room: String = r.try_get(0)?;
                if let Ok(i) = rooms.binary_search_by(|x| x.jid.as_str().cmp(room.as_str())) {
                    rooms[i].affiliations.push((r.try_get(1)?, r.try_get(2)?));
                }
            }
            Ok(rooms)
        })
    }
}
