//! Stored stanzas a client gets once it is available (RFC 6121 §3.1.3 subscription
//! requests, XEP-0160 offline messages): read in chunks as the XEP-0198 queue has room, to
//! one reachable resource at a time, each offline row deleted only once the client acked it.
//! Owns the backlog cursor; the rows and the claim are `features::offline`'s.

use super::*;

use crate::xep::subscription as xs;
use herald_proto::stream::INTERNAL_NS;

/// Most stored stanzas read from the store at once.
const BACKLOG_CHUNK: usize = 100;

/// Stored stanzas still to go to this client after it became available (RFC 6121 §3.1.3
/// subscription requests, XEP-0160 offline messages), delivered as the XEP-0198 queue has room.
#[derive(Debug, Default)]
pub(super) struct Backlog {
    /// Delivering pending subscription requests: the last position read (0 before the
    /// first). Read a page at a time like offline messages: up to `max_pending_requests`
    /// of them wait, and a login must not read them all at once.
    requests: Option<i64>,
    /// Delivering offline storage: the last row id read (0 before the first).
    offline: Option<i64>,
}

impl Session {
    /// Starts delivering stored stanzas: with `requests` the pending subscription requests
    /// (to every resource at initial presence) and, with `offline`, the offline store (to one
    /// reachable resource at a time: the first to claim it).
    pub(crate) async fn start_backlog(&mut self, requests: bool, offline: bool) -> Flow {
        let mut claim = offline && offline::claim(&self.ctx.shared, &self.ctx.bare, self.ctx.id);
        // Cluster mode: one resource of the whole cluster, not one per node.
        if claim {
            if let Some(c) = self.ctx.shared.cluster.get() {
                if !c.claim_offline(&self.ctx.bare, self.ctx.id).await {
                    offline::release_claim_quietly(&self.ctx.shared, &self.ctx.bare, self.ctx.id);
                    claim = false;
                }
            }
        }
        if !requests && !claim {
            return Flow::Continue;
        }
        let b = self.backlog.get_or_insert_with(Box::default);
        if requests && b.requests.is_none() {
            b.requests = Some(0);
        }
        if claim && b.offline.is_none() {
            b.offline = Some(0);
        }
        self.pump_backlog().await
    }

    /// Stops delivering stored stanzas (the resource became unavailable, or the session
    /// ends): another reachable resource takes the offline store over.
    pub(crate) fn stop_backlog(&mut self) {
        let Some(b) = self.backlog.take() else {
            return;
        };
        if b.offline.is_some() {
            match self.ctx.shared.cluster.get() {
                // The cluster's claim goes first, then the store is handed on.
                Some(c) => c.release_offline(&self.ctx.shared, &self.ctx.bare, self.ctx.id),
                None => offline::release_claim(&self.ctx.shared, &self.ctx.bare, self.ctx.id),
            }
        }
    }

    /// How many stored stanzas may be delivered now. With stream management they must fit
    /// in its queue, minus a quarter kept for live traffic: the rest follows as the client
    /// acknowledges (a backlog larger than the queue must not overflow it).
    pub(super) fn backlog_room(&self) -> usize {
        if !self.sm.is_enabled() {
            return BACKLOG_CHUNK;
        }
        if self.sm.unacked_bytes() >= self.backlog_bytes() {
            return 0;
        }
        let max = self.ctx.shared.cfg.stream_management.max_queue;
        let limit = (max - max / 4).max(1);
        limit
            .saturating_sub(self.sm.unacked_len())
            .min(BACKLOG_CHUNK)
    }

    /// The bytes stored stanzas may fill the XEP-0198 queue up to: three quarters of
    /// `session_queue_bytes`, the rest kept for live traffic as for the count.
    fn backlog_bytes(&self) -> usize {
        let max = self.ctx.shared.cfg.limits.session_queue_bytes;
        max - max / 4
    }

    /// Delivers stored stanzas while there is room (see [`Self::backlog_room`]); called
    /// again when acks make room. Offline rows are deleted once the client has them: acked
    /// (XEP-0198), or written to the socket without stream management.
    pub(super) async fn pump_backlog(&mut self) -> Flow {
        loop {
            // Hibernated: nothing is delivered until a resume (or the end hands it on).
            if self.conn.is_none() {
                return Flow::Continue;
            }
            let room = self.backlog_room();
            let Some(b) = self.backlog.as_mut() else {
                return Flow::Continue;
            };
            if room == 0 {
                return Flow::Continue;
            }
            if let Some(after) = b.requests {
                let page = self.request_page(after, room).await;
                let next = page.last().map(|(seq, _)| *seq);
                if let Some(b) = self.backlog.as_mut() {
                    b.requests = next;
                }
                for (_, el) in page {
                    let r = Routed::new(self.ctx.shared.next_id(), el);
                    if let Flow::Stop = self.deliver(r).await {
                        return Flow::Stop;
                    }
                }
                continue;
            }
            let Some(after) = b.offline else {
                self.backlog = None;
                return Flow::Continue;
            };
            let u = self.ctx.bare.clone();
            // On the blocking pool: a page is up to 100 stanzas of any size senders chose.
            let page = match self
                .ctx
                .shared
                .db(move |s: &roles::Offline| s.offline_page(&u, after, room))
                .await
            {
                Ok(p) => p,
                Err(e) => {
                    // The rows stay stored; the next login (or CheckOffline) tries again.
                    tracing::error!(error = %e, "reading offline messages failed");
                    self.stop_backlog();
                    return Flow::Continue;
                }
            };
            if page.is_empty() {
                self.stop_backlog();
                return Flow::Continue;
            }
            let mut written = Vec::new();
            let mut unreadable = Vec::new();
            for m in page {
                let el = match Element::from_str(&m.stanza_xml) {
                    Ok(el) => el,
                    Err(e) => {
                        tracing::error!(error = %e, id = m.id, "unreadable offline message deleted");
                        unreadable.push(m.id);
                        if let Some(b) = self.backlog.as_mut() {
                            b.offline = Some(m.id);
                        }
                        continue;
                    }
                };
                let cost = stanza::mem_cost(&el);
                let queued = self.sm.unacked_bytes();
                if self.sm.is_enabled()
                    && self.sm.unacked_len() > 0
                    && queued.saturating_add(cost) > self.backlog_bytes()
                {
                    // Over the bytes kept for stored stanzas: this row and the rest of the
                    // page are read again once acks make room (the next pump, from an ack).
                    written.append(&mut unreadable);
                    self.delete_offline(written).await;
                    return Flow::Continue;
                }
                if let Some(b) = self.backlog.as_mut() {
                    b.offline = Some(m.id);
                }
                let mut o = Routed::from_origin(Origin::Offline(m.id), el);
                o.at = delay::now_micros();
                // Not through CSI (a held stanza would keep its row undeletable without SM)
                // and never a push: storing it already pushed (rule c).
                if let Flow::Stop = self.emit(o, false).await {
                    self.delete_offline(unreadable).await;
                    return Flow::Stop;
                }
                if !self.sm.is_enabled() && self.conn.is_some() && !self.batching {
                    written.push(m.id);
                }
            }
            written.append(&mut unreadable);
            self.delete_offline(written).await;
        }
    }

    /// Up to `room` pending subscription requests after position `after`, read on the
    /// blocking pool, ready to deliver (RFC 6121 §3.1.3: from the contact's bare JID to the
    /// user's). Empty at the end or on a store error (logged; the next login tries again).
    async fn request_page(&self, after: i64, room: usize) -> Vec<(i64, Element)> {
        let u = self.ctx.bare.clone();
        let page = match self
            .ctx
            .shared
            .db(move |s: &roles::Roster| s.subscription_requests_page(&u, after, room))
            .await
        {
            Ok(p) => p,
            Err(e) => {
                tracing::error!(error = %e, "reading pending subscription requests failed");
                return Vec::new();
            }
        };
        let max = self.ctx.shared.cfg.roster.max_request_bytes;
        page.into_iter()
            .map(|(seq, from, xml)| {
                // Requests stored before they were bounded are cut here as well.
                let mut p = match Element::from_str(&xml) {
                    Ok(p) => xs::stored_request(&p, max),
                    Err(_) => stanza::new("presence", INTERNAL_NS, &[("type", "subscribe")]),
                };
                stanza::set(&mut p, "from", from);
                stanza::set(&mut p, "to", self.ctx.bare.clone());
                (seq, p)
            })
            .collect()
    }

    /// The client acknowledged these stanzas: the offline rows among them leave the store.
    pub(super) async fn delete_acked_offline(&self, acked: Vec<Routed>) {
        let rows: Vec<i64> = acked
            .iter()
            .filter_map(|o| o.origin.offline_row())
            .collect();
        drop(acked);
        self.delete_offline(rows).await;
    }

    /// Deletes offline rows the client has.
    pub(super) async fn delete_offline(&self, ids: Vec<i64>) {
        if ids.is_empty() {
            return;
        }
        let u = self.ctx.bare.clone();
        let n = ids.len() as u64;
        if let Err(e) = self
            .ctx
            .shared
            .db(move |s: &roles::Offline| s.delete_offline(&u, &ids))
            .await
        {
            // Delivered again at the next login: a duplicate, never a loss.
            tracing::error!(error = %e, "deleting delivered offline messages failed");
        } else {
            self.ctx
                .shared
                .metrics
                .offline_delivered
                .fetch_add(n, std::sync::atomic::Ordering::Relaxed);
        }
    }
}
