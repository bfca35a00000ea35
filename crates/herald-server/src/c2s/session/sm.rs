//! XEP-0198 stream management in the session task: the I/O around herald-session's
//! machine. Owns the answers to the client's nonzas (`sm_nonza` decides them), the acks
//! that release queued stanzas, the ack-request and ack-delay timers, hibernation when the
//! connection dies (saved at once, written through while asleep: see `c2s::persist`), the
//! hand-over of a `<resume/>`, and parking at shutdown. Push learns of hibernation and
//! resumption through the session hooks. Must not decide protocol answers itself.

use super::*;

impl Session {
    pub(super) async fn hibernate_or_stop(&mut self) -> Flow {
        let now = std_now();
        if self.sm.hibernate(now).is_err() {
            return Flow::Stop;
        }
        tracing::info!(unacked = self.sm.unacked_len(), "session hibernated");
        // A sleeping device must not hold the offline store from the user's other devices.
        self.stop_backlog();
        // Saved before anything else happens to it: from now on a crash loses none of its
        // queue (what arrives while it sleeps is written through).
        self.save(None).await;
        self.ctx
            .shared
            .router
            .set_hibernated(&self.ctx.bare, self.ctx.id, true);
        let unacked = self.unacked_infos();
        let ev = hooks::SessionHibernated {
            session: self.ctx.id,
            unacked,
        };
        hooks::notify(
            &self.ctx.shared.hooks.session_hibernated,
            &self.ctx.shared,
            ev,
        );
        Flow::Continue
    }

    /// This session as the store keeps it (None: not resumable).
    pub(super) fn saved(
        &self,
        push: Option<herald_push::engine::SessionPush>,
    ) -> Option<herald_store::SavedSession> {
        let id = self.sm_id.clone()?;
        let deadline = self.sm.hibernation_deadline()?;
        let left = deadline.saturating_duration_since(std_now());
        let expires_at = persist::unix_millis()
            .saturating_add(i64::try_from(left.as_millis()).unwrap_or(i64::MAX));
        let state = crate::c2s::persist::SavedState {
            available: self.ctx.available(),
            priority: self.ctx.priority(),
            presence: self
                .ctx
                .presence
                .last
                .as_ref()
                .map(|f| f.as_str().to_string()),
            interested: self.ctx.presence.interested,
            carbons: self.ctx.carbons(),
            directed: self.ctx.presence.directed.iter().cloned().collect(),
            push: push.map(herald_push::saved::SavedPush::from),
        };
        Some(herald_store::SavedSession {
            record: herald_store::SmSessionRecord {
                id,
                account: self.ctx.bare.clone(),
                resource: self.ctx.jid.resource().to_string(),
                inbound_h: self.sm.inbound_h(),
                outbound_h: self.sm.outbound_h(),
                expires_at,
                state: state.encode(),
            },
            queue: self
                .sm
                .unacked()
                .filter_map(crate::c2s::persist::queued)
                .collect(),
        })
    }

    /// Writes this hibernated session with its whole queue to the store.
    pub(super) async fn save(&mut self, push: Option<herald_push::engine::SessionPush>) -> bool {
        if self.ctx.shared.account_gone(&self.ctx.bare) {
            return false;
        }
        let Some(rec) = self.saved(push) else {
            return false;
        };
        self.write_through.clear();
        match self
            .ctx
            .shared
            .db(move |s: &roles::Sessions| s.save_sm_sessions(std::slice::from_ref(&rec)))
            .await
        {
            Ok(()) => {
                self.persisted = true;
                true
            }
            Err(e) => {
                // It lives on in memory; only a crash would now lose its queue.
                tracing::error!(error = %e, "saving the hibernated session failed");
                self.persisted = false;
                false
            }
        }
    }

    /// Writes what was queued while hibernated to the saved session.
    pub(super) async fn flush_write_through(&mut self) {
        // Released (dropped) when this returns: committed, or known not to be.
        let _tickets = std::mem::take(&mut self.write_through_tickets);
        let items = std::mem::take(&mut self.write_through);
        if !self.persisted || items.is_empty() {
            return;
        }
        let Some(id) = self.sm_id.clone() else {
            return;
        };
        let out_h = self.sm.outbound_h();
        match self
            .ctx
            .shared
            .db(move |s: &roles::Sessions| s.append_sm_queue(&id, &items, out_h))
            .await
        {
            Ok(true) => {}
            Ok(false) => self.persisted = false,
            Err(e) => {
                tracing::error!(error = %e, "writing queued stanzas through failed");
            }
        }
    }

    /// Forgets the saved copy (resumed, or ended).
    pub(super) async fn unsave(&mut self) {
        self.write_through.clear();
        if !std::mem::take(&mut self.persisted) {
            return;
        }
        let Some(id) = self.sm_id.clone() else {
            return;
        };
        if let Err(e) = self
            .ctx
            .shared
            .db(move |s: &roles::Sessions| s.delete_sm_session(&id))
            .await
        {
            // At the next start it is handled as a session of a crashed run (tombstone,
            // queue to offline storage): a duplicate at worst, never a loss.
            tracing::error!(error = %e, "deleting the saved session failed");
        }
    }

    /// The server stops. A resumable session is saved for the next start: to its client this
    /// is a lost connection (no stream error, no stream close: clients start a fresh session
    /// after `system-shutdown` or `</stream:stream>`), and it resumes once the server is
    /// back, with every stanza it had not acknowledged. Any other session ends with
    /// `system-shutdown`; what it had not delivered is stored offline.
    pub(super) async fn on_shutdown(&mut self) -> Flow {
        if !self.sm.is_resumable()
            || self.sm_id.is_none()
            || self.ctx.shared.account_gone(&self.ctx.bare)
        {
            let e = StreamError::new(StreamErrorCondition::SystemShutdown, None);
            self.fail(&e).await;
            return Flow::Stop;
        }
        if !self.park().await {
            return Flow::Stop; // `end` hands the queue on as usual
        }
        tracing::debug!(
            unacked = self.sm.unacked_len(),
            "session saved for the next start"
        );
        self.ctx
            .shared
            .saved_at_stop
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.parked = true;
        Flow::Stop
    }

    /// Cluster mode: another node resumes this session (its client reconnected there): it
    /// is saved as at a clean stop and let go without the ending's side effects (no
    /// unavailable presence, nothing stored offline, no tombstone), for that node to
    /// restore from the store. `done` hears whether it was saved; if not, it ends as usual.
    pub(super) async fn on_hand_off(&mut self, done: tokio::sync::oneshot::Sender<bool>) -> Flow {
        if !self.sm.is_resumable()
            || self.sm_id.is_none()
            || self.ctx.shared.account_gone(&self.ctx.bare)
            || !self.park().await
        {
            let _ = done.send(false);
            return Flow::Stop;
        }
        self.ctx.shared.router.unbind(
            &self.ctx.bare,
            self.ctx.jid.resource().as_str(),
            self.ctx.id,
        );
        if let Some(id) = self.sm_id.take() {
            self.ctx.shared.resumable_remove(&id);
        }
        let ev = hooks::SessionEnded {
            session: self.ctx.id,
        };
        hooks::notify(&self.ctx.shared.hooks.session_ended, &self.ctx.shared, ev);
        tracing::info!(
            unacked = self.sm.unacked_len(),
            "session handed to another node"
        );
        self.parked = true;
        let _ = done.send(true);
        Flow::Stop
    }

    /// Saves the session for a later restore (the connection, if any, is dropped; CSI-held
    /// and inbox stanzas join its queue): false when it could not be saved.
    async fn park(&mut self) -> bool {
        // What a batch collected would be lost with the connection: it goes out first.
        let out = std::mem::take(&mut self.wbuf);
        self.batching = false;
        if let Some(mut c) = self.conn.take() {
            if !out.is_empty() {
                let _ = c.write_raw(&out).await;
            }
            drop(c);
        }
        let now = std_now();
        if self.sm.hibernate(now).is_err() {
            return false;
        }
        self.deferred.settle().await;
        self.stop_backlog();
        // Held by CSI or still in the inbox: queued like anything that reaches a sleeping
        // session, so the resumed client gets them.
        let mut pending: Vec<Routed> = self.csi.take_held();
        self.rx.close();
        while let Some(m) = self.rx.try_recv() {
            match m {
                SessionMsg::Stanza(r) => {
                    let mut o = *r;
                    o.at = delay::now_micros();
                    o.durable = None;
                    pending.push(o);
                }
                SessionMsg::Resume { conn, .. } => drop(conn),
                _ => {}
            }
        }
        for mut o in pending {
            let bytes = self.weigh(&mut o);
            if self.sm.is_full_for(bytes) {
                self.spilled.push(o);
            } else if let Err(e) = self.sm.push_outbound_sized(o, bytes, now) {
                tracing::error!(error = %e, "stream management refused a stanza");
            }
        }
        let push = self.ctx.shared.push.session_push(self.ctx.id).await;
        if !self.save(push).await {
            return false;
        }
        let spilled = std::mem::take(&mut self.spilled);
        for o in spilled {
            offline::undelivered(&self.ctx.shared, &self.ctx.bare, o, self.ctx.id).await;
        }
        true
    }

    /// What the push rules need to know of a queued stanza (None for the server's own).
    pub(super) fn push_info(&self, o: &Routed) -> Option<herald_push::StanzaInfo> {
        let id = o.origin.id()?;
        let jid = self.ctx.jid.as_str();
        Some(self.ctx.shared.push.info_for(id, &o.el, jid, o.at))
    }

    pub(super) fn unacked_infos(&self) -> Vec<herald_push::StanzaInfo> {
        self.sm
            .unacked()
            .filter_map(|o| self.push_info(o))
            .collect()
    }

    pub(super) async fn on_timer(&mut self) -> Flow {
        let now = Instant::now();
        for ev in self.sm.poll(now.into_std()) {
            match ev {
                SmEvent::RequestAck => {
                    if self.conn.is_some() {
                        self.sm.request_sent(now.into_std());
                        let r = herald_proto::stream::to_string(&sm_wire::r(), StreamNs::Client);
                        if let Flow::Stop = self.write_raw(r.as_bytes()).await {
                            return Flow::Stop;
                        }
                    }
                }
                SmEvent::AckDelayed(queue) => {
                    tracing::info!(unacked = queue.len(), "ack delayed");
                    let unacked = queue.iter().filter_map(|o| self.push_info(o)).collect();
                    self.ctx.shared.push.send(PushEvent::AckDelayed {
                        session: self.ctx.id,
                        unacked,
                    });
                }
                SmEvent::Expired => {
                    tracing::info!("hibernation expired");
                    return Flow::Stop;
                }
            }
        }
        if self.conn.is_none() {
            return Flow::Continue;
        }
        let c = &self.ctx.shared.cfg.c2s;
        if now >= self.last_read + c.read_timeout.0 {
            tracing::info!("read timeout");
            if let Some(mut conn) = self.conn.take() {
                let e = StreamError::new(StreamErrorCondition::ConnectionTimeout, None);
                conn.fail(self.ctx.jid.domain().as_str(), &e).await;
            }
            return self.hibernate_or_stop().await;
        }
        if now >= self.last_write + c.keepalive_interval.0 {
            // RFC 6120 §4.6.1: whitespace keepalive.
            return self.write_raw(b" ").await;
        }
        Flow::Continue
    }

    /// XEP-0198 `<enable/>` inline in Bind2: the `<enabled/>` (or `<failed/>`) for `<bound/>`.
    pub(super) fn enable_inline(&mut self, el: &Element) -> Option<Element> {
        let now = std_now();
        let hibernation = self.ctx.shared.cfg.stream_management.hibernation_timeout.0;
        let shared = self.ctx.shared.clone();
        let new_id = move || shared.new_sm_id();
        match sm_nonza::on_nonza(&mut self.sm, el, hibernation, new_id, now)? {
            Ok(sm_nonza::Answer::Enabled { id, reply }) => {
                if let Some(id) = id {
                    self.ctx.shared.resumable_insert(
                        id.clone(),
                        Resumable {
                            bare: self.ctx.bare.clone(),
                            tx: self.tx.clone(),
                        },
                    );
                    self.sm_id = Some(id);
                }
                Some(reply)
            }
            Ok(sm_nonza::Answer::Failed(f)) => Some(f),
            _ => None,
        }
    }

    pub(super) async fn on_resume(
        &mut self,
        conn: Box<Conn>,
        h: u32,
        previd: String,
        sasl2: Option<Box<herald_session::sasl2::Success>>,
    ) -> Flow {
        let mut conn = *conn;
        self.deferred.settle().await;
        let now = std_now();
        match sm_nonza::resume(&mut self.sm, h, &previd, now) {
            Ok(sm_nonza::Resumed {
                acked,
                retransmit,
                reply: resumed,
            }) => {
                self.delete_acked_offline(acked).await;
                self.unsave().await;
                if let Some(mut old) = self.conn.take() {
                    // XEP-0198 §5: the old connection is superseded (only once the new one
                    // is accepted: a failed resumption leaves the session as it was).
                    let e = StreamError::new(
                        StreamErrorCondition::Conflict,
                        Some("session resumed elsewhere".to_string()),
                    );
                    old.fail(self.ctx.jid.domain().as_str(), &e).await;
                }
                let mut bytes = Vec::new();
                // SASL2 (XEP-0388 with XEP-0198): `<resumed/>` inside the `<success/>`, the
                // retransmitted stanzas right after it, then the features left.
                let sasl2_features = sasl2
                    .is_some()
                    .then(|| herald_session::sasl2::features_after_bind(true));
                match sasl2 {
                    Some(s) => {
                        let jid = self.ctx.jid.to_string();
                        let el = s.into_element(&jid, vec![resumed]);
                        herald_proto::stream::encode(&el, conn.ns, &mut bytes);
                    }
                    None => herald_proto::stream::encode(&resumed, conn.ns, &mut bytes),
                }
                for o in &retransmit {
                    // XEP-0198 §5 + XEP-0203: retransmitted messages and presence say when
                    // they were first sent. IQs are left alone: RFC 6120 §8.2.3 allows a
                    // result at most one child.
                    if stanza::kind(&o.el) == Some(Kind::Iq) {
                        herald_proto::stream::encode(&o.el, conn.ns, &mut bytes);
                        continue;
                    }
                    let mut el = o.el.clone();
                    delay::add_delay(&mut el, self.ctx.jid.domain().as_str(), o.at);
                    herald_proto::stream::encode(&el, conn.ns, &mut bytes);
                }
                if let Some(f) = &sasl2_features {
                    crate::transport::conn::push_features(&mut bytes, conn.ns, f);
                }
                tracing::info!(retransmitted = retransmit.len(), "session resumed");
                let transport = conn.transport;
                self.conn = Some(conn);
                let router = &self.ctx.shared.router;
                router.set_transport(&self.ctx.bare, self.ctx.id, transport);
                router.set_hibernated(&self.ctx.bare, self.ctx.id, false);
                let now_t = Instant::now();
                self.last_read = now_t;
                self.last_write = now_t;
                let ev = hooks::SessionResumed {
                    session: self.ctx.id,
                };
                hooks::notify(&self.ctx.shared.hooks.session_resumed, &self.ctx.shared, ev);
                if let Flow::Stop = self.write_raw(&bytes).await {
                    return Flow::Stop;
                }
                if let Flow::Stop = self.on_readable().await {
                    return Flow::Stop;
                }
                // XEP-0352: a new stream starts active; held stanzas follow in order.
                let held = self.csi.set_active();
                if let Flow::Stop = self.emit_all(held, None).await {
                    return Flow::Stop;
                }
                // Offline messages stored while it slept (or whose delivery hibernation cut).
                if self.ctx.reachable() {
                    return self.start_backlog(false, true).await;
                }
                Flow::Continue
            }
            Err(f) => {
                // SASL2: authenticated, so the `<failed/>` goes inside a `<success/>`; the
                // stream then ends (the client reconnects and binds).
                let f = match sasl2 {
                    Some(s) => s.into_element(&self.ctx.bare, vec![f]),
                    None => f,
                };
                let _ = conn.send(&f).await;
                conn.close().await;
                if self.conn.is_some() || self.sm.is_hibernating() {
                    Flow::Continue
                } else {
                    Flow::Stop
                }
            }
        }
    }

    pub(super) async fn on_nonza(&mut self, el: Element) -> Result<Flow, StreamError> {
        let now = std_now();
        let hibernation = self.ctx.shared.cfg.stream_management.hibernation_timeout.0;
        let shared = self.ctx.shared.clone();
        let new_id = move || shared.new_sm_id();
        if let Some(answer) = sm_nonza::on_nonza(&mut self.sm, &el, hibernation, new_id, now) {
            return Ok(match answer? {
                sm_nonza::Answer::Ack(a) => {
                    // Durable before acked: the archive commits of what h counts are settled.
                    self.deferred.settle().await;
                    self.write_raw(herald_proto::stream::to_string(&a, StreamNs::Client).as_bytes())
                        .await
                }
                sm_nonza::Answer::Acked { acked, recovered } => {
                    if recovered {
                        self.ctx.shared.push.send(PushEvent::Acked {
                            session: self.ctx.id,
                        });
                    }
                    self.on_acked(acked).await
                }
                sm_nonza::Answer::HandledCountTooHigh(x) => {
                    if let Some(c) = self.conn.as_mut() {
                        let _ = c.write_raw(x.as_bytes()).await;
                        c.close().await;
                    }
                    self.conn = None;
                    Flow::Stop
                }
                sm_nonza::Answer::Enabled { id, reply } => {
                    if let Some(id) = id {
                        self.ctx.shared.resumable_insert(
                            id.clone(),
                            Resumable {
                                bare: self.ctx.bare.clone(),
                                tx: self.tx.clone(),
                            },
                        );
                        self.sm_id = Some(id);
                    }
                    let mut b = Vec::new();
                    herald_proto::stream::encode(&reply, StreamNs::Client, &mut b);
                    self.write_raw(&b).await
                }
                sm_nonza::Answer::Failed(f) => {
                    let xml = herald_xep::stanza::to_xml(&f).unwrap_or_default();
                    self.write_raw(xml.as_bytes()).await
                }
                sm_nonza::Answer::Nothing => Flow::Continue,
            });
        }
        if el.has_ns(ns::CSI) {
            return self.on_csi(&el).await;
        }
        Err(unsupported(&el))
    }

    /// The client acknowledged these stanzas: delete the offline rows among them and refill.
    pub(super) async fn on_acked(&mut self, acked: Vec<Routed>) -> Flow {
        self.delete_acked_offline(acked).await;
        if self.backlog.is_some() {
            return self.pump_backlog().await;
        }
        Flow::Continue
    }
}
