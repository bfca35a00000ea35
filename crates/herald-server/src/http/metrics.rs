//! `/metrics` (Prometheus text exposition format 0.0.4) and `/health`.
//!
//! The counters already live as atomics where they are counted (`crate::Metrics`, the s2s,
//! archive-writer and HTTP statistics); a scrape reads them and writes the text here. A
//! registry crate would keep a second copy of each and add a dependency for a format of a
//! few lines, so the formatter is hand-written. Every metric is listed in the README.

use std::fmt::Write as _;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use herald_store::histogram::Snapshot;
use herald_store::roles;

use crate::Shared;

struct Out(String);

impl Out {
    fn metric(&mut self, name: &str, kind: &str, help: &str, samples: &[(&str, u64)]) {
        let _ = writeln!(self.0, "# HELP {name} {help}");
        let _ = writeln!(self.0, "# TYPE {name} {kind}");
        for (labels, v) in samples {
            if labels.is_empty() {
                let _ = writeln!(self.0, "{name} {v}");
            } else {
                let _ = writeln!(self.0, "{name}{{{labels}}} {v}");
            }
        }
    }

    fn counter(&mut self, name: &str, help: &str, v: u64) {
        self.metric(name, "counter", help, &[("", v)]);
    }

    fn gauge(&mut self, name: &str, help: &str, v: u64) {
        self.metric(name, "gauge", help, &[("", v)]);
    }

    /// A histogram in seconds, one series per label set (`""`: none).
    fn histogram(&mut self, name: &str, help: &str, series: &[(String, Snapshot)]) {
        let _ = writeln!(self.0, "# HELP {name} {help}");
        let _ = writeln!(self.0, "# TYPE {name} histogram");
        for (labels, h) in series {
            let sep = if labels.is_empty() { "" } else { "," };
            for (le, n) in &h.cumulative {
                let le = *le as f64 / 1e6;
                let _ = writeln!(self.0, "{name}_bucket{{{labels}{sep}le=\"{le}\"}} {n}");
            }
            let _ = writeln!(
                self.0,
                "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {}",
                h.count
            );
            let braced = if labels.is_empty() {
                String::new()
            } else {
                format!("{{{labels}}}")
            };
            let _ = writeln!(
                self.0,
                "{name}_sum{braced} {:.6}",
                h.sum_micros as f64 / 1e6
            );
            let _ = writeln!(self.0, "{name}_count{braced} {}", h.count);
        }
    }
}

/// The `herald_sessions` samples: live sessions per transport (TCP and WebSocket always
/// listed, so the series exist from the start), hibernated ones (no connection, so no
/// transport).
fn session_samples(sessions: &[crate::routing::router::ResourceEntry]) -> Vec<(String, u64)> {
    use herald_transport::conn::{TRANSPORT_TCP, TRANSPORT_WEBSOCKET};
    let mut live = std::collections::BTreeMap::from([(TRANSPORT_TCP, 0), (TRANSPORT_WEBSOCKET, 0)]);
    let mut hibernated = 0;
    for s in sessions {
        if s.hibernated {
            hibernated += 1;
        } else {
            *live.entry(s.transport).or_default() += 1;
        }
    }
    let mut out: Vec<(String, u64)> = live
        .into_iter()
        .map(|(t, n)| (format!("state=\"live\",transport=\"{t}\""), n))
        .collect();
    out.push(("state=\"hibernated\"".to_string(), hibernated));
    out
}

/// `GET /metrics`.
pub async fn metrics(State(shared): State<Arc<Shared>>) -> Response {
    let text = render(&shared).await;
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

/// The exposition text.
pub async fn render(shared: &Shared) -> String {
    let r = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
    let m = &shared.metrics;
    let mut o = Out(String::with_capacity(4096));
    // WebSocket connections are counted in both; TCP is the rest (c2s, s2s, components).
    let total = shared.conns.total() as u64;
    let websocket = r(&m.websocket_open).min(total);
    o.metric(
        "herald_connections",
        "gauge",
        "Open XMPP connections (c2s, s2s incoming, components) by transport.",
        &[
            ("transport=\"tcp\"", total - websocket),
            ("transport=\"websocket\"", websocket),
        ],
    );
    let sessions = session_samples(&shared.router.all_sessions());
    let sessions: Vec<(&str, u64)> = sessions.iter().map(|(l, n)| (l.as_str(), *n)).collect();
    o.metric(
        "herald_sessions",
        "gauge",
        "Bound c2s sessions: live by transport, and hibernated.",
        &sessions,
    );
    o.counter(
        "herald_logins_total",
        "Successful SASL authentications.",
        r(&m.logins),
    );
    o.counter(
        "herald_auth_failures_total",
        "Failed SASL authentications.",
        r(&m.auth_failures),
    );
    o.counter(
        "herald_stanzas_routed_total",
        "Stanzas handed to routing (from clients, servers, components and the server).",
        r(&m.stanzas_routed),
    );
    o.counter(
        "herald_inbox_full_total",
        "Stanzas refused because a session's inbox was full.",
        r(&m.inbox_full),
    );
    o.counter(
        "herald_offline_stored_total",
        "Messages stored offline (XEP-0160).",
        r(&m.offline_stored),
    );
    o.counter(
        "herald_offline_delivered_total",
        "Offline messages delivered and removed from storage.",
        r(&m.offline_delivered),
    );
    let a = shared.archive.stats();
    o.counter(
        "herald_archive_writes_total",
        "Messages committed to the archive (MAM).",
        r(&a.writes),
    );
    o.counter(
        "herald_archive_commits_total",
        "Archive transactions (group commits).",
        r(&a.commits),
    );
    o.histogram(
        "herald_archive_commit_seconds",
        "Duration of archive transactions (group commits).",
        &[(String::new(), a.commit_latency.snapshot())],
    );
    o.counter(
        "herald_push_publishes_total",
        "XEP-0357 publishes sent to app servers (retries included).",
        r(&m.push_publishes),
    );
    o.histogram(
        "herald_push_event_to_publish_seconds",
        "From a message archived, stored offline or queued for a sleeping session to its push publish.",
        &[(String::new(), m.push_event_to_publish.snapshot())],
    );
    o.histogram(
        "herald_push_publish_to_reply_seconds",
        "From a push publish to the app server's answer.",
        &[(String::new(), m.push_publish_to_reply.snapshot())],
    );
    o.counter(
        "herald_push_events_dropped_total",
        "Stanza events the push task was too busy to take (a push lost).",
        shared.push.events_dropped(),
    );
    o.metric(
        "herald_push_registrations_removed_total",
        "counter",
        "Push registrations removed by the server, by reason.",
        &[
            ("reason=\"errors\"", r(&m.push_removed_errors)),
            ("reason=\"evicted\"", r(&m.push_removed_evicted)),
            ("reason=\"disabled\"", r(&m.push_removed_disabled)),
        ],
    );
    // The push task answers after the events queued before; a busy one is not waited for.
    if let Ok(Some(p)) = tokio::time::timeout(Duration::from_secs(1), shared.push.stats()).await {
        o.gauge(
            "herald_push_pending",
            "Publishes awaiting an answer or a retry.",
            p.pending as u64,
        );
        let x = p.outcomes;
        o.metric(
            "herald_push_outcomes_total",
            "counter",
            "How push publish attempts ended; dropped: pushes given up after their last attempt.",
            &[
                ("outcome=\"result\"", x.result),
                ("outcome=\"wait\"", x.wait),
                ("outcome=\"cancel\"", x.cancel),
                ("outcome=\"timeout\"", x.timeout),
                ("outcome=\"dropped\"", x.dropped),
            ],
        );
    }
    let store: Vec<(String, Snapshot)> = m
        .store
        .all()
        .into_iter()
        .map(|(role, h)| (format!("role=\"{role}\""), h.snapshot()))
        .collect();
    o.histogram(
        "herald_store_seconds",
        "Duration of store calls, by role (the store trait called).",
        &store,
    );
    let s = &shared.s2s.metrics;
    o.gauge(
        "herald_s2s_outgoing_connections",
        "Outgoing s2s connections (domain pairs) open or being set up.",
        shared.s2s.outgoing_pairs().len() as u64,
    );
    o.counter(
        "herald_s2s_outgoing_established_total",
        "Outgoing s2s connections authenticated.",
        r(&s.outgoing_established),
    );
    o.counter(
        "herald_s2s_outgoing_failed_total",
        "Outgoing s2s connections that failed before authentication.",
        r(&s.outgoing_failed),
    );
    o.gauge(
        "herald_s2s_incoming_connections",
        "Incoming s2s connections open (authenticated or not).",
        r(&s.incoming_open),
    );
    o.counter(
        "herald_s2s_incoming_total",
        "Incoming s2s domain pairs authenticated (SASL EXTERNAL or dialback).",
        r(&s.incoming_sasl_external) + r(&s.incoming_dialback),
    );
    let h = &shared.http.stats;
    o.gauge(
        "herald_http_connections",
        "Open HTTP connections.",
        shared
            .http
            .open_connections(shared.cfg.http.max_connections) as u64,
    );
    o.counter(
        "herald_http_connections_refused_total",
        "HTTP connections closed at once because http.max_connections were open.",
        r(&h.connections_refused),
    );
    o.counter(
        "herald_uploads_total",
        "XEP-0363 uploads completed.",
        r(&h.uploads),
    );
    o.counter(
        "herald_upload_bytes_total",
        "Bytes of completed uploads.",
        r(&h.upload_bytes),
    );
    o.counter(
        "herald_uploads_failed_total",
        "Upload PUTs refused or failed.",
        r(&h.uploads_failed),
    );
    o.counter(
        "herald_downloads_total",
        "Upload GETs served (whole or partial).",
        r(&h.downloads),
    );
    o.counter(
        "herald_uploads_expired_total",
        "Uploaded files deleted by expiry.",
        r(&h.uploads_expired),
    );
    o.0
}

/// `GET /health`: 200 when the store answers a query within five seconds, else 503.
pub async fn health(State(shared): State<Arc<Shared>>) -> Response {
    let q = shared.db(|s: &roles::Accounts| s.account_exists("health@invalid"));
    match tokio::time::timeout(Duration::from_secs(5), q).await {
        Ok(Ok(_)) => (StatusCode::OK, "ok\n").into_response(),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "health check: store failed");
            (StatusCode::SERVICE_UNAVAILABLE, "store failed\n").into_response()
        }
        Err(_) => (StatusCode::SERVICE_UNAVAILABLE, "store not answering\n").into_response(),
    }
}
