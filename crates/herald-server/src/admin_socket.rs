//! The running server's admin socket (`data_dir/admin.sock`, owner-only): the CLI changes
//! the store directly and then tells a running server what changed, so online sessions see
//! it (roster pushes), or asks it to act (push pings). One text line per request and reply.

use std::sync::Arc;

use herald_store::RosterStore;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixListener;

use crate::push::PushEvent;
use crate::xep::roster as xr;
use crate::{roster, routing, stanza, Shared};

/// Listens until shutdown. A stale socket file from a crashed server is replaced.
pub async fn run(shared: Arc<Shared>) {
    let path = crate::admin::socket_path(&shared.cfg);
    let _ = std::fs::remove_file(&path);
    let listener = match UnixListener::bind(&path) {
        Ok(l) => l,
        Err(e) => {
            tracing::warn!(error = %e, path = %path.display(), "admin socket unavailable; CLI changes reach sessions at their next login");
            return;
        }
    };
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600));
    }
    let mut shutdown = shared.shutdown_signal();
    loop {
        tokio::select! {
            r = listener.accept() => {
                if let Ok((stream, _)) = r {
                    tokio::spawn(client(shared.clone(), stream));
                }
            }
            _ = shutdown.changed() => break,
        }
    }
    let _ = std::fs::remove_file(&path);
}

async fn client(shared: Arc<Shared>, stream: tokio::net::UnixStream) {
    let (r, mut w) = stream.into_split();
    // One short command line; a longer one is not ours (the socket is owner-only anyway).
    let mut lines = BufReader::new(r.take(4096)).lines();
    let line =
        match tokio::time::timeout(std::time::Duration::from_secs(10), lines.next_line()).await {
            Ok(Ok(Some(l))) => l,
            _ => return,
        };
    let reply = handle(&shared, &line).await;
    let _ = w.write_all(format!("{reply}\n").as_bytes()).await;
}

async fn handle(shared: &Arc<Shared>, line: &str) -> String {
    let parts: Vec<&str> = line.split_whitespace().collect();
    match parts.as_slice() {
        ["roster-changed", user, contact] => {
            roster_changed(shared, user, contact).await;
            "ok".into()
        }
        ["push-ping", user] => {
            let (tx, rx) = tokio::sync::oneshot::channel();
            shared.push.send(PushEvent::Ping {
                user: user.to_string(),
                reply: tx,
            });
            match rx.await {
                Ok(n) => format!("ok {n}"),
                Err(_) => "error push task unavailable".into(),
            }
        }
        ["push-removed", user, jid, rest @ ..] => {
            let (tx, rx) = tokio::sync::oneshot::channel();
            shared.push.send(PushEvent::Detach {
                user: user.to_string(),
                jid: jid.to_string(),
                node: rest.first().map(|n| n.to_string()),
                reply: tx,
            });
            let _ = rx.await;
            "ok".into()
        }
        _ => "error unknown command".into(),
    }
}

/// Pushes the stored item to the user's sessions and refreshes presence both ways.
async fn roster_changed(shared: &Arc<Shared>, user: &str, contact: &str) {
    let (u, c) = (user.to_string(), contact.to_string());
    let r = shared
        .db(move |s| {
            let (ver, _) = s.roster(&u)?;
            Ok((ver, s.roster_item(&u, &c)?))
        })
        .await;
    let Ok((ver, item)) = r else { return };
    let el = match &item {
        Some(i) => xr::item_element(i),
        None => xr::removed_item(contact),
    };
    roster::push(shared, user, ver, el);
    let Some(item) = item else { return };
    let st = herald_session::subscription::State {
        sub: roster::to_sub(item.subscription),
        pending_out: item.ask,
        pending_in: false,
    };
    for r in shared
        .router
        .resources(user)
        .into_iter()
        .filter(|r| r.available)
    {
        let full = format!("{user}/{}", r.resource);
        if st.user_gets_presence() {
            let p = stanza::new(
                "presence",
                herald_proto::stream::INTERNAL_NS,
                &[("type", "probe"), ("from", user), ("to", contact)],
            );
            routing::route(shared, p).await;
        }
        if st.contact_gets_presence() {
            let p = stanza::new(
                "presence",
                herald_proto::stream::INTERNAL_NS,
                &[("from", &full), ("to", contact)],
            );
            routing::route(shared, p).await;
        }
    }
}
