//! Administration used by the CLI: accounts, rosters and push registrations, directly on the
//! store so it works whether the server runs or not; a running server is told what changed
//! over its admin socket (the server side is `herald_server::admin::admin_socket`), and removes an
//! account itself so that its sessions end first. `herald push test` sends its request and
//! reads the answer here; the server's push task runs it (`herald_server::features::push`),
//! its bookkeeping and the wire types are `herald_push::diag`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context, Result};
use herald_proto::jid::BareJid;
use herald_push::diag::{TestRequest, TestResult};
use herald_store::{Backend, PushRemoval, RemovalNote, Store, StoreError};

use herald_server::admin::accounts::make_credentials;
use herald_server::admin::admin_socket::socket_path;
use herald_server::Config;

/// The recorded reason of registrations removed with `herald push remove`.
pub const REMOVED_BY_OPERATOR: &str = "removed by the operator";

/// Opens the configured store (SQLite in `data_dir`, or PostgreSQL at `[store] url`).
pub fn open_store(cfg: &Config) -> Result<Box<dyn Backend>> {
    if cfg.store.is_postgres() {
        // Not the URL in the message: it may hold a password.
        let store = herald_store::PgStore::open(&cfg.store.pg_options())
            .context("opening the PostgreSQL store ([store] url)")?;
        return Ok(Box::new(store));
    }
    let store = Store::open_with(&cfg.data_dir, &cfg.store.options())
        .with_context(|| format!("opening the store in {}", cfg.data_dir.display()))?;
    Ok(Box::new(store))
}

/// Parses `user@domain` or `user` into an account JID of the configured domain.
pub fn account_jid(cfg: &Config, s: &str) -> Result<BareJid> {
    let full = if s.contains('@') {
        s.to_string()
    } else {
        format!("{s}@{}", cfg.domain)
    };
    let jid = BareJid::new(&full).map_err(|e| anyhow!("{s:?} is not a valid JID: {e}"))?;
    if jid.node().is_none() {
        bail!("{s:?} has no user part");
    }
    if !cfg.is_local(jid.domain().as_str()) {
        bail!(
            "{s:?} is not on a domain this server serves ({})",
            cfg.local_domains().join(", ")
        );
    }
    Ok(jid)
}

/// Creates an account.
pub fn add_user(store: &dyn Backend, jid: &BareJid, password: &str) -> Result<()> {
    let creds = make_credentials(password).map_err(|e| anyhow!("unusable password: {e}"))?;
    match store.create_account(&jid.to_string(), &creds) {
        Ok(()) => Ok(()),
        Err(StoreError::AlreadyExists) => bail!("{jid} already exists"),
        Err(e) => Err(e.into()),
    }
}

/// Changes a password.
pub fn set_password(store: &dyn Backend, jid: &BareJid, password: &str) -> Result<()> {
    let creds = make_credentials(password).map_err(|e| anyhow!("unusable password: {e}"))?;
    match store.set_credentials(&jid.to_string(), &creds) {
        Ok(()) => Ok(()),
        Err(StoreError::NotFound) => bail!("{jid}: no such user"),
        Err(e) => Err(e.into()),
    }
}

/// Changes a password and, with the server running, ends the account's sessions (connected
/// and hibernated: a client must log in again with the new password). Returns how many
/// sessions ended; None when no server was running to tell.
pub fn change_password(
    cfg: &Config,
    store: &dyn Backend,
    jid: &BareJid,
    password: &str,
) -> Result<Option<usize>> {
    set_password(store, jid, password)?;
    match notify(cfg, &format!("password-changed {jid}")).map(|r| ended(&r)) {
        None | Some(Err(Refused::Unknown)) => Ok(None),
        Some(Ok(n)) => Ok(Some(n)),
        Some(Err(Refused::Said(e))) => {
            bail!("password changed, but the running server did not end {jid}'s sessions: {e}")
        }
    }
}

/// Deletes an account with all its data. With the server running, the server does it: it
/// ends the account's sessions (connected and hibernated) first, so nothing is stored for the
/// account afterwards. Returns how many sessions ended; None when no server was running.
pub fn remove_account(cfg: &Config, store: &dyn Backend, jid: &BareJid) -> Result<Option<usize>> {
    match notify(cfg, &format!("user-remove {jid}")).map(|r| ended(&r)) {
        // No server, or one that predates this request: the store alone.
        None | Some(Err(Refused::Unknown)) => remove_user(store, jid).map(|()| None),
        Some(Ok(n)) => Ok(Some(n)),
        Some(Err(Refused::Said(e))) => bail!("{jid}: {e}"),
    }
}

/// `herald user logout-all`: deletes the account's FAST tokens (XEP-0484) and, with the server
/// running, ends its sessions (connected and hibernated). Returns the tokens deleted and the
/// sessions ended (None when no server was running to tell).
pub fn logout_all(
    cfg: &Config,
    store: &dyn Backend,
    jid: &BareJid,
) -> Result<(usize, Option<usize>)> {
    let user = jid.to_string();
    if !store.account_exists(&user)? {
        bail!("{jid}: no such user");
    }
    let tokens = store.delete_user_fast_tokens(&user)?;
    match notify(cfg, &format!("logout-all {jid}")).map(|r| ended(&r)) {
        None | Some(Err(Refused::Unknown)) => Ok((tokens, None)),
        Some(Ok(n)) => Ok((tokens, Some(n))),
        Some(Err(Refused::Said(e))) => {
            bail!("tokens deleted, but the running server did not end {jid}'s sessions: {e}")
        }
    }
}

/// Why a running server did not do what it was asked.
enum Refused {
    /// It does not know the request.
    Unknown,
    /// Its answer.
    Said(String),
}

/// Parses an "ok N" reply (N sessions ended).
fn ended(reply: &str) -> std::result::Result<usize, Refused> {
    match reply.split_once(' ') {
        Some(("ok", n)) => n
            .parse()
            .map_err(|_| Refused::Said(format!("unexpected reply {reply:?}"))),
        _ if reply == "error unknown command" => Err(Refused::Unknown),
        Some(("error", e)) => Err(Refused::Said(e.to_string())),
        _ => Err(Refused::Said(format!("unexpected reply {reply:?}"))),
    }
}

/// Deletes an account with all its data, in the store alone (see [`remove_account`]).
pub fn remove_user(store: &dyn Backend, jid: &BareJid) -> Result<()> {
    match store.delete_account(&jid.to_string()) {
        Ok(()) => Ok(()),
        Err(StoreError::NotFound) => bail!("{jid}: no such user"),
        Err(e) => Err(e.into()),
    }
}

/// All accounts.
pub fn list_users(store: &dyn Backend) -> Result<Vec<String>> {
    Ok(store.list_accounts()?)
}

/// Creates PREFIX0..PREFIX{count-1}. The password's SCRAM keys are derived once and shared
/// (same salt): these are load-test accounts, and deriving 100k × 2 × 4096 PBKDF2 rounds
/// would take minutes.
pub fn add_bulk(
    store: &dyn Backend,
    cfg: &Config,
    prefix: &str,
    count: usize,
    password: &str,
    mut progress: impl FnMut(usize),
) -> Result<usize> {
    let creds = make_credentials(password).map_err(|e| anyhow!("unusable password: {e}"))?;
    // Validate the naming scheme once, on the largest name.
    account_jid(cfg, &format!("{prefix}{}", count.saturating_sub(1)))?;
    let mut created = 0;
    let batch = 5000;
    let mut start = 0;
    while start < count {
        let end = (start + batch).min(count);
        let accounts: Vec<_> = (start..end)
            .map(|n| (format!("{prefix}{n}@{}", cfg.domain), creds.clone()))
            .collect();
        created += store.create_accounts_bulk(&accounts)?;
        start = end;
        progress(end);
    }
    Ok(created)
}

/// One side of a roster admin command: a local account, or a bare domain (a component or
/// a server) that has no roster, or a remote JID (no local roster either).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Party {
    /// A local account (bare JID).
    Account(String),
    /// Anything without a local roster (bare domain, remote JID).
    NoRoster(String),
}

impl Party {
    /// The bare JID or domain.
    pub fn jid(&self) -> &str {
        match self {
            Party::Account(j) | Party::NoRoster(j) => j,
        }
    }
}

/// Parses a roster command argument. Local JIDs must be existing accounts.
pub fn party(cfg: &Config, store: &dyn Backend, s: &str) -> Result<Party> {
    let jid = BareJid::new(s).map_err(|e| anyhow!("{s:?} is not a valid JID: {e}"))?;
    let text = jid.to_string();
    if jid.node().is_none() || !cfg.is_local(jid.domain().as_str()) {
        return Ok(Party::NoRoster(text));
    }
    if !store.account_exists(&text)? {
        bail!("{text}: no such user");
    }
    Ok(Party::Account(text))
}

/// Roster admin actions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RosterAction {
    /// Mutual subscription (both).
    Subscribe,
    /// Cancel both subscriptions (items stay).
    Unsubscribe,
    /// Remove the items.
    Remove,
}

/// Applies a roster action to every side that has a roster; returns the changed
/// (user, contact) pairs, for the running server to push.
pub fn roster_action(
    store: &dyn Backend,
    a: &Party,
    b: &Party,
    action: RosterAction,
) -> Result<Vec<(String, String)>> {
    use herald_store::{RosterItem, Subscription};
    let mut changed = Vec::new();
    for (user, contact) in [(a, b), (b, a)] {
        let Party::Account(u) = user else { continue };
        let c = contact.jid();
        if u == c {
            bail!("{u} cannot be its own contact");
        }
        let existing = store.roster_item(u, c)?;
        match action {
            RosterAction::Subscribe | RosterAction::Unsubscribe => {
                let mut item = existing.unwrap_or(RosterItem {
                    jid: c.to_string(),
                    name: None,
                    subscription: Subscription::None,
                    ask: false,
                    groups: Vec::new(),
                });
                item.subscription = if action == RosterAction::Subscribe {
                    Subscription::Both
                } else {
                    Subscription::None
                };
                item.ask = false;
                store.set_roster_item(u, &item)?;
                store.remove_subscription_request(u, c)?;
                changed.push((u.clone(), c.to_string()));
            }
            RosterAction::Remove => {
                if existing.is_some() {
                    store.remove_roster_item(u, c)?;
                    store.remove_subscription_request(u, c)?;
                    changed.push((u.clone(), c.to_string()));
                }
            }
        }
    }
    Ok(changed)
}

/// Sends one command line to a running server; None when no server is listening.
pub fn notify(cfg: &Config, line: &str) -> Option<String> {
    notify_within(cfg, line, Duration::from_secs(30))
}

/// [`notify`], waiting at most `timeout` for the answer (None after it).
pub fn notify_within(cfg: &Config, line: &str, timeout: Duration) -> Option<String> {
    use std::io::{BufRead, BufReader, Write};
    let mut s = std::os::unix::net::UnixStream::connect(socket_path(cfg)).ok()?;
    s.set_read_timeout(Some(timeout)).ok()?;
    s.write_all(format!("{line}\n").as_bytes()).ok()?;
    let mut reply = String::new();
    BufReader::new(s).read_line(&mut reply).ok()?;
    Some(reply.trim_end().to_string())
}

fn unix_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Removes `user`'s registrations with app server `jid` (only `node` when given) from the
/// store, records them as removed by the operator (with the statistics the store has: a
/// running server writes them up to 200 ms after an app server's reply), and tells a
/// running server to detach them from its sessions; how many.
pub fn remove_push(
    cfg: &Config,
    store: &dyn Backend,
    user: &str,
    jid: &str,
    node: Option<&str>,
) -> Result<usize> {
    let note = RemovalNote {
        removed_at: unix_secs(),
        reason: REMOVED_BY_OPERATOR,
        failed_with: None,
    };
    let n = store.remove_push_registrations(user, jid, node, &note)?;
    if n > 0 {
        let line = format!(
            "push-removed {user} {jid}{}",
            node.map(|n| format!(" {n}")).unwrap_or_default()
        );
        notify(cfg, &line);
    }
    Ok(n)
}

/// `user`'s registrations removed within `push.removed_retention`, newest first (older ones
/// wait for the hourly purge, and are not shown).
pub fn removed_push(cfg: &Config, store: &dyn Backend, user: &str) -> Result<Vec<PushRemoval>> {
    let keep = i64::try_from(cfg.push.removed_retention.0.as_secs()).unwrap_or(i64::MAX);
    let since = unix_secs().saturating_sub(keep);
    Ok(store
        .removed_push_registrations(user)?
        .into_iter()
        .filter(|r| r.removed_at >= since)
        .collect())
}

/// `herald push test`: asks the running server to publish once to each registration of
/// `user` (only app server `jid`, only `node`, when given) and returns what each app server
/// answered. Fails when no server runs, or it refuses (no such registration, too many tests
/// at once).
pub fn push_test(
    cfg: &Config,
    user: &BareJid,
    jid: Option<&str>,
    node: Option<&str>,
) -> Result<Vec<TestResult>> {
    let req = TestRequest {
        user: user.to_string(),
        jid: jid.map(str::to_string),
        node: node.map(str::to_string),
    };
    let line = format!("push-test {}", serde_json::to_string(&req)?);
    // The server answers at most `reply_timeout` (the longest of any host's) after sending;
    // the margin covers a busy push task (the server's configuration is the one we read).
    let reply_timeout = cfg
        .hosts
        .iter()
        .filter_map(|h| h.push.reply_timeout)
        .map(|d| d.0)
        .fold(cfg.push.reply_timeout.0, Duration::max);
    let within = reply_timeout + Duration::from_secs(15);
    let Some(reply) = notify_within(cfg, &line, within) else {
        bail!(
            "the server is not running (no admin socket in {}) or did not answer within {}s",
            cfg.data_dir.display(),
            within.as_secs()
        );
    };
    parse_push_test(&reply)
}

fn parse_push_test(reply: &str) -> Result<Vec<TestResult>> {
    match reply.split_once(' ') {
        Some(("ok", json)) => serde_json::from_str(json)
            .map_err(|e| anyhow!("unreadable answer from the server ({e}): {reply:?}")),
        _ if reply == "error unknown command" => {
            bail!("the running server does not know push tests (it is older than this command)")
        }
        Some(("error", e)) => bail!("{e}"),
        _ => bail!("unexpected answer from the server: {reply:?}"),
    }
}

/// A new invite (`herald invite create`): `for_user` is the one account it may register
/// (None: any name), `expires` how long it works (None: until used up), `uses` how many
/// accounts it registers. Returns the invite's id, its token and the XEP-0401 URI that
/// carries it; only the token's hash is stored.
pub fn create_invite(
    cfg: &Config,
    store: &dyn Backend,
    for_user: Option<&BareJid>,
    expires: Option<std::time::Duration>,
    uses: u32,
) -> Result<(String, String, String)> {
    use herald_server::xep::register as xr;
    if uses == 0 {
        bail!("--uses must be at least 1");
    }
    if let Some(u) = for_user {
        if herald_store::AccountStore::account_exists(store, &u.to_string())? {
            bail!("{u} already exists");
        }
    }
    let now = herald_server::xep::delay::now_micros() / 1000;
    let expires = match expires {
        None => None,
        Some(d) => {
            let ms = i64::try_from(d.as_millis()).map_err(|_| anyhow!("--expires is too long"))?;
            Some(now.saturating_add(ms))
        }
    };
    let (id, token) = xr::new_invite();
    let invite = herald_store::Invite {
        id: id.clone(),
        for_user: for_user.map(|u| u.to_string()),
        created: now,
        expires,
        uses_left: uses,
    };
    match store.create_invite(
        &xr::token_hash(&token),
        &invite,
        cfg.registration.max_invites,
        now,
    ) {
        Ok(()) => {}
        Err(herald_store::StoreError::QuotaExceeded) => bail!(
            "{} invites are stored (registration.max_invites): revoke some first",
            cfg.registration.max_invites
        ),
        Err(e) => return Err(e.into()),
    }
    let uri_jid = match for_user {
        Some(u) => u.to_string(),
        None => cfg.domain.clone(),
    };
    let uri = xr::invite_uri(&uri_jid, &token);
    Ok((id, token, uri))
}

/// Milliseconds since the epoch as an XEP-0082 stamp.
pub fn unix_time_ms(ms: i64) -> String {
    herald_server::xep::delay::format_stamp(ms.saturating_mul(1_000))
}

/// A unix time as an RFC 3339 UTC string.
pub fn unix_time(secs: i64) -> String {
    herald_server::xep::delay::format_stamp(secs.saturating_mul(1_000_000))
}

/// One progress line of `herald migrate`: redrawn in place (`\r`) on a terminal, one line per
/// table (when done) otherwise, so a log does not fill with thousands of lines.
pub fn migrate_progress(
    out: &mut impl std::io::Write,
    tty: bool,
    table: &str,
    done: u64,
    total: u64,
) {
    const WIDTH: u64 = 30;
    let filled = (done.saturating_mul(WIDTH))
        .checked_div(total)
        .unwrap_or(WIDTH)
        .min(WIDTH);
    let bar = format!(
        "{table:<24} [{}{}] {done}/{total}",
        "#".repeat(filled as usize),
        " ".repeat((WIDTH - filled) as usize)
    );
    let _ = if tty {
        let end = if done == total { "\n" } else { "" };
        write!(out, "\r{bar}{end}")
    } else if done == total {
        writeln!(out, "{bar}")
    } else {
        Ok(())
    };
    let _ = out.flush();
}

/// The verification table `herald migrate` prints, and whether every count matches.
pub struct MigrateReport {
    /// One line per table, then a total.
    pub text: String,
    /// Every table has as many rows in PostgreSQL as in SQLite.
    pub ok: bool,
}

/// Builds [`MigrateReport`] from the copy's counts.
pub fn migrate_report(copied: &[herald_store::CopiedTable]) -> MigrateReport {
    use std::fmt::Write as _;
    let mut text = format!("{:<24} {:>12} {:>12}\n", "table", "sqlite", "postgres");
    let (mut ok, mut rows) = (true, 0u64);
    for t in copied {
        let mark = if t.source == t.target {
            ""
        } else {
            ok = false;
            "  MISMATCH"
        };
        rows += t.target;
        let _ = writeln!(
            text,
            "{:<24} {:>12} {:>12}{mark}",
            t.table, t.source, t.target
        );
    }
    let _ = writeln!(
        text,
        "{} tables, {rows} rows copied; {}",
        copied.len(),
        if ok {
            "every count matches"
        } else {
            "counts differ"
        }
    );
    MigrateReport { text, ok }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_replies_are_read() {
        assert!(matches!(ended("ok 2"), Ok(2)));
        assert!(matches!(
            ended("error unknown command"),
            Err(Refused::Unknown)
        ));
        assert!(
            matches!(ended("error no such user"), Err(Refused::Said(e)) if e == "no such user")
        );
        assert!(matches!(ended("ok"), Err(Refused::Said(_))));
        assert!(matches!(ended("ok x"), Err(Refused::Said(_))));
    }

    #[test]
    fn push_test_replies_are_read() {
        let got = parse_push_test(
            r#"ok [{"jid":"p.example","node":"n","result":"timeout","rtt_us":null}]"#,
        )
        .unwrap();
        assert_eq!(got[0].outcome, herald_push::diag::TestOutcome::Timeout);
        let e = parse_push_test("error bob@localhost has no push registration").unwrap_err();
        assert_eq!(e.to_string(), "bob@localhost has no push registration");
        assert!(parse_push_test("error unknown command")
            .unwrap_err()
            .to_string()
            .contains("older"));
        assert!(parse_push_test("ok [").is_err());
        assert!(parse_push_test("what").is_err());
    }

    #[test]
    fn migrate_report_marks_a_differing_table_and_fails() {
        let t = |table: &str, source, target| herald_store::CopiedTable {
            table: table.into(),
            source,
            target,
        };
        let r = super::migrate_report(&[t("accounts", 2, 2), t("archive", 5, 5)]);
        assert!(
            r.ok && r
                .text
                .contains("2 tables, 7 rows copied; every count matches")
        );
        let r = super::migrate_report(&[t("accounts", 2, 2), t("archive", 5, 4)]);
        assert!(!r.ok);
        assert!(r
            .text
            .lines()
            .any(|l| l.starts_with("archive") && l.ends_with("MISMATCH")));
        assert!(!r
            .text
            .lines()
            .any(|l| l.starts_with("accounts") && l.ends_with("MISMATCH")));
    }

    #[test]
    fn migrate_progress_redraws_on_a_terminal_and_logs_one_line_per_table_otherwise() {
        let mut tty = Vec::new();
        super::migrate_progress(&mut tty, true, "archive", 500, 1000);
        super::migrate_progress(&mut tty, true, "archive", 1000, 1000);
        let tty = String::from_utf8(tty).unwrap();
        assert_eq!(tty.matches('\r').count(), 2);
        assert!(tty.ends_with("] 1000/1000\n"), "{tty:?}");
        assert!(tty.contains(&format!("[{}{}]", "#".repeat(15), " ".repeat(15))));
        let mut log = Vec::new();
        super::migrate_progress(&mut log, false, "archive", 500, 1000);
        super::migrate_progress(&mut log, false, "archive", 1000, 1000);
        super::migrate_progress(&mut log, false, "vcards", 0, 0);
        let log = String::from_utf8(log).unwrap();
        assert_eq!(log.lines().count(), 2, "{log:?}");
    }
}
