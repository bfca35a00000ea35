//! The running server's admin socket (`data_dir/admin.sock`, owner-only): the CLI changes
//! the store directly and then tells a running server what changed, so online sessions see
//! it (roster pushes, a changed password ends the account's sessions), or asks it to act
//! (push pings; removing an account, which the server does itself so that the account's
//! sessions are over before its data goes, and nothing is stored for it afterwards), or to
//! test (`herald push test`: one publish per registration, the app servers' answers). One
//! text line per request and reply. The CLI side is `herald::admin` in the herald crate.

use std::sync::Arc;
use std::time::Duration;

use herald_push::diag::{TestRequest, NO_REGISTRATION};
use herald_store::roles;
use herald_store::StoreError;
use herald_transport::unix_socket;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixListener;

use crate::admin::accounts::Removal;
use crate::admin::accounts::{not_authorized, ACCOUNT_REMOVED};
use crate::routing::msg::PushEvent;
use crate::xep::roster as xr;
use crate::{features::roster, routing, stanza, Config, Shared};

/// How long a request waits for the sessions it ends (or for archive writes) before going on
/// without them; well under the CLI's 30 s.
const END_WAIT: Duration = Duration::from_secs(10);

/// The stream error text of sessions ended by `herald user passwd`.
pub const PASSWORD_CHANGED: &str = "password changed";
/// The text of the `not-authorized` stream error `herald user logout-all` ends sessions with.
pub const LOGGED_OUT: &str = "logged out by an administrator";

/// Path of the running server's admin socket.
pub fn socket_path(cfg: &Config) -> std::path::PathBuf {
    cfg.data_dir.join("admin.sock")
}

/// The bound admin socket, owner-only, and the uid allowed to use it.
pub struct AdminListener {
    listener: UnixListener,
    path: std::path::PathBuf,
    uid: u32,
}

/// Binds the admin socket owner-only, without a window in which another user could connect
/// (see `herald_transport::unix_socket`). Any failure fails start.
pub fn bind(cfg: &Config) -> anyhow::Result<AdminListener> {
    let path = socket_path(cfg);
    let (listener, uid) = unix_socket::bind_owner_only(&cfg.data_dir, &path)?;
    Ok(AdminListener {
        listener,
        path,
        uid,
    })
}

/// Serves the admin socket until shutdown: only connections from our own uid are answered.
pub async fn run(shared: Arc<Shared>, admin: AdminListener) {
    let AdminListener {
        listener,
        path,
        uid,
    } = admin;
    let mut shutdown = shared.shutdown_signal();
    let mut errors = 0u32;
    loop {
        tokio::select! {
            r = listener.accept() => match r {
                Ok((stream, _)) => {
                    errors = 0;
                    match stream.peer_cred() {
                        Ok(c) if c.uid() == uid => {
                            tokio::spawn(client(shared.clone(), stream));
                        }
                        Ok(c) => tracing::warn!(uid = c.uid(), "admin socket: refused a connection from another user"),
                        Err(e) => tracing::warn!(error = %e, "admin socket: peer credentials unavailable; refused"),
                    }
                }
                Err(e) => {
                    errors = errors.saturating_add(1);
                    let wait = unix_socket::accept_backoff(errors);
                    tracing::warn!(error = %e, ms = wait.as_millis() as u64, "admin socket: accept failed; backing off");
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => {}
                        _ = shutdown.changed() => break,
                    }
                }
            },
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
    // JSON arguments: a node is any string, spaces included.
    if let Some(args) = line.strip_prefix("push-test ") {
        return push_test(shared, args).await;
    }
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
        ["user-remove", user] => remove_user(shared, user).await,
        ["password-changed", user] => match account_exists(shared, user).await {
            Ok(()) => format!(
                "ok {}",
                end_sessions(shared, user, PASSWORD_CHANGED, None).await
            ),
            Err(e) => e,
        },
        // `herald user logout-all`: the CLI deleted the FAST tokens; every session ends, so
        // each device has to log in with the password again.
        ["logout-all", user] => match account_exists(shared, user).await {
            Ok(()) => format!("ok {}", end_sessions(shared, user, LOGGED_OUT, None).await),
            Err(e) => e,
        },
        _ => "error unknown command".into(),
    }
}

/// `herald push test`: one publish per matching registration; the reply is `ok` and the
/// results as one JSON array (`herald_push::diag::TestResult`), once every app server
/// answered or `push.reply_timeout` passed, or `error` and why.
async fn push_test(shared: &Arc<Shared>, args: &str) -> String {
    let req: TestRequest = match serde_json::from_str(args) {
        Ok(r) => r,
        Err(e) => return format!("error bad push-test request: {e}"),
    };
    if let Err(e) = account_exists(shared, &req.user).await {
        return e;
    }
    let (tx, rx) = tokio::sync::oneshot::channel();
    let sent = shared
        .push
        .send_wait(PushEvent::Test {
            user: req.user.clone(),
            jid: req.jid.clone(),
            node: req.node.clone(),
            reply: tx,
        })
        .await;
    if !sent {
        return "error push task unavailable".into();
    }
    match rx.await {
        Ok(Ok(results)) => match serde_json::to_string(&results) {
            Ok(json) => format!("ok {json}"),
            Err(e) => format!("error {e}"),
        },
        Ok(Err(e)) if e == NO_REGISTRATION => {
            let which = match (&req.jid, &req.node) {
                (Some(j), Some(n)) => format!(" with {j} node {n}"),
                (Some(j), None) => format!(" with {j}"),
                _ => String::new(),
            };
            format!("error {} has no push registration{which}", req.user)
        }
        Ok(Err(e)) => format!("error {e}"),
        Err(_) => "error push task unavailable".into(),
    }
}

async fn account_exists(shared: &Arc<Shared>, user: &str) -> Result<(), String> {
    let u = user.to_string();
    match shared
        .db(move |s: &roles::Accounts| s.account_exists(&u))
        .await
    {
        Ok(true) => Ok(()),
        Ok(false) => Err("error no such user".into()),
        Err(e) => Err(format!("error {e}")),
    }
}

/// Ends every session of `user` but `keep` (the one that changed its own password in band),
/// connected or hibernated, with `not-authorized` (`text`): resumption is refused from now
/// on (with `keep`, each refuses its own as it ends), and each session ends in its own task,
/// handing on its queue as on any end (never to another session this ends). Returns how
/// many there were, once they are over (or `END_WAIT` passed).
pub(crate) async fn end_sessions(
    shared: &Arc<Shared>,
    user: &str,
    text: &str,
    keep: Option<u64>,
) -> usize {
    let sessions: Vec<_> = shared
        .router
        .resources(user)
        .into_iter()
        .filter(|r| Some(r.session_id) != keep)
        .collect();
    let ids: Vec<u64> = sessions.iter().map(|r| r.session_id).collect();
    shared.accounts.begin_ending(&ids);
    if keep.is_none() {
        shared.resumable_forget_user(user);
    }
    for r in &sessions {
        let _ = r.tx.send_control(not_authorized(text));
    }
    if !shared.router.wait_unbound(user, &ids, END_WAIT).await {
        tracing::warn!(%user, "sessions still ending; going on without them");
    }
    shared.accounts.finish_ending(&ids);
    tracing::info!(%user, sessions = ids.len(), reason = text, "sessions ended");
    ids.len()
}

/// `herald user remove` with the server running: the account is marked removed (nothing is
/// stored for it, its JID reaches no session, a login racing this is ended at bind), its
/// sessions end, its archive writes in flight land, and only then is it deleted with all its
/// data; what the server cached of it goes too. Also an account's own XEP-0077 `<remove/>`.
pub(crate) async fn remove_user(shared: &Arc<Shared>, user: &str) -> String {
    if let Err(e) = account_exists(shared, user).await {
        return e;
    }
    shared.accounts.mark_removed(user, Removal::Ending);
    let n = end_sessions(shared, user, ACCOUNT_REMOVED, None).await;
    shared.archive_inflight.wait_idle(user, END_WAIT).await;
    let u = user.to_string();
    let deleted = shared
        .db(move |s: &roles::All| {
            // Read last: a registration its sessions enabled while ending is included.
            let regs = s.push_registrations(&u)?;
            match s.delete_account(&u) {
                Ok(()) | Err(StoreError::NotFound) => Ok(regs),
                Err(e) => Err(e),
            }
        })
        .await;
    let regs = match deleted {
        Ok(r) => r,
        Err(e) => {
            shared.accounts.unmark_removed(user, Removal::Ending);
            tracing::error!(error = %e, %user, "removing the account failed");
            return format!("error {e}");
        }
    };
    shared.accounts.mark_removed(user, Removal::Deleted);
    shared.tombstones_forget_user(user);
    shared.resumable_forget_user(user);
    shared.mam_prefs.forget(user);
    shared.blocklists.forget(user);
    shared.avatars.forget(user);
    shared.pep.forget_user(user);
    shared.cluster_invalidate(crate::Cached::Removed, user);
    // The push task keeps registrations in memory: a new account under this JID must not
    // inherit them.
    let mut jids: Vec<String> = regs.into_iter().map(|r| r.jid).collect();
    jids.sort();
    jids.dedup();
    for jid in jids {
        let (tx, rx) = tokio::sync::oneshot::channel();
        shared.push.send(PushEvent::Detach {
            user: user.to_string(),
            jid,
            node: None,
            reply: tx,
        });
        let _ = rx.await;
    }
    tracing::info!(%user, "account removed");
    format!("ok {n}")
}

/// Pushes the stored item to the user's sessions and refreshes presence both ways.
async fn roster_changed(shared: &Arc<Shared>, user: &str, contact: &str) {
    let (u, c) = (user.to_string(), contact.to_string());
    let r = shared
        .db(move |s: &roles::Roster| {
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
