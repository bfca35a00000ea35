//! The bookkeeping of `herald push test` runs: one publish per registration through the
//! running server, and what each app server answered, with the round-trip time.
//!
//! The push task owns a [`PushTests`]: it starts a test with the publishes
//! `Engine::test_push` returned, hands each genuine reply to it, and expires it at the
//! publishes' reply timeout (the engine's own timeout for them, so both agree on what timed
//! out). A run holds the requester's reply handle `R` (whatever the caller answers through);
//! the calls that finish a run give it back with the results, and the caller sends them.
//! The wire types ([`TestRequest`], [`TestResult`]) are shared by the server's admin socket
//! and the CLI (`herald::admin` in the herald crate), as JSON.
//!
//! Must not: do I/O, read clocks, wait or send anything. Every call takes `now`; finished
//! runs come back as values.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use herald_proto::error::ErrorType;
use serde::{Deserialize, Serialize};

use crate::engine::{Action, Reply};

/// Tests running at once at most; more are refused ([`BUSY`]). A test holds one entry per
/// registration of one user, so this bounds the memory and the publishes operators cause.
pub const MAX_TESTS: usize = 16;

/// The answer to a test beyond [`MAX_TESTS`].
pub const BUSY: &str = "too many push tests running; try again in a moment";

/// The answer when no registration matches.
pub const NO_REGISTRATION: &str = "no matching push registration";

/// `push-test` request on the admin socket (JSON, so any node string survives).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TestRequest {
    /// The account (bare JID).
    pub user: String,
    /// Only registrations with this app server JID.
    pub jid: Option<String>,
    /// Only the registration with this node (with `jid`).
    pub node: Option<String>,
}

/// What an app server answered a test publish.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "kebab-case")]
pub enum TestOutcome {
    /// `<iq type='result'/>`.
    Ok,
    /// `<iq type='error'/>` (also the server's own `wait`/`remote-server-timeout` when a
    /// local app-server component is not connected).
    Error {
        /// The `<error type>`: `cancel`, `wait`, `modify`, `auth`, `continue`.
        #[serde(rename = "type")]
        error_type: String,
        /// The defined condition, e.g. `item-not-found`.
        condition: String,
    },
    /// No answer within `push.reply_timeout`.
    Timeout,
}

impl TestOutcome {
    /// Whether the app server accepted the publish.
    pub fn is_ok(&self) -> bool {
        matches!(self, TestOutcome::Ok)
    }
}

impl std::fmt::Display for TestOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TestOutcome::Ok => f.write_str("ok"),
            TestOutcome::Error {
                error_type,
                condition,
            } => write!(f, "error {error_type}/{condition}"),
            TestOutcome::Timeout => f.write_str("timeout"),
        }
    }
}

/// One registration's test result.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TestResult {
    /// The app server JID.
    pub jid: String,
    /// The node.
    pub node: String,
    /// The answer.
    #[serde(flatten)]
    pub outcome: TestOutcome,
    /// From the publish leaving the push task to the answer reaching it, microseconds;
    /// none for a timeout.
    pub rtt_us: Option<u64>,
}

/// A test's answer: its results, or why there are none.
pub type TestAnswer = Result<Vec<TestResult>, String>;

/// A finished run: the requester's reply handle and the answer to send through it.
pub type Finished<R> = (R, TestAnswer);

struct Run<R> {
    sent: Instant,
    deadline: Instant,
    results: Vec<TestResult>,
    waiting: usize,
    reply: R,
}

/// The tests in flight (see the module documentation); `R` is the requester's reply handle.
pub struct PushTests<R> {
    runs: HashMap<u64, Run<R>>,
    /// Publish iq id → (run, index in its results).
    by_id: HashMap<String, (u64, usize)>,
    seq: u64,
}

impl<R> Default for PushTests<R> {
    fn default() -> Self {
        PushTests {
            runs: HashMap::new(),
            by_id: HashMap::new(),
            seq: 0,
        }
    }
}

impl<R> PushTests<R> {
    /// No further test may start now.
    pub fn is_full(&self) -> bool {
        self.runs.len() >= MAX_TESTS
    }

    /// A test sent `actions` (from `Engine::test_push`) at `now`; unanswered publishes time
    /// out after `timeout`. Without publishes it is finished at once: `reply` comes back with
    /// [`NO_REGISTRATION`].
    pub fn start(
        &mut self,
        actions: &[Action],
        reply: R,
        now: Instant,
        timeout: Duration,
    ) -> Option<Finished<R>> {
        let ids: Vec<(&str, TestResult)> = actions
            .iter()
            .filter_map(|a| match a {
                Action::Publish { iq_id, key, .. } => Some((
                    iq_id.as_str(),
                    TestResult {
                        jid: key.jid.clone(),
                        node: key.node.clone(),
                        outcome: TestOutcome::Timeout,
                        rtt_us: None,
                    },
                )),
                _ => None,
            })
            .collect();
        if ids.is_empty() {
            return Some((reply, Err(NO_REGISTRATION.into())));
        }
        self.seq += 1;
        let run = self.seq;
        let mut results = Vec::with_capacity(ids.len());
        for (i, (id, r)) in ids.into_iter().enumerate() {
            self.by_id.insert(id.to_string(), (run, i));
            results.push(r);
        }
        self.runs.insert(
            run,
            Run {
                sent: now,
                deadline: now + timeout,
                waiting: results.len(),
                results,
                reply,
            },
        );
        None
    }

    /// A genuine reply to publish `iq_id` arrived at `now`; `error_type` is the `<error
    /// type>` as received ([`Reply`] keeps only whether it was `wait`). When it was the
    /// run's last unanswered publish, the run is finished and comes back.
    pub fn answered(
        &mut self,
        iq_id: &str,
        reply: &Reply,
        error_type: Option<ErrorType>,
        now: Instant,
    ) -> Option<Finished<R>> {
        let (run_id, i) = self.by_id.remove(iq_id)?;
        let run = self.runs.get_mut(&run_id)?;
        let outcome = match reply {
            Reply::Result => TestOutcome::Ok,
            Reply::Error { wait, condition } => TestOutcome::Error {
                error_type: match error_type {
                    Some(t) => t.as_str().to_string(),
                    None if *wait => "wait".into(),
                    None => "cancel".into(),
                },
                condition: condition.clone(),
            },
        };
        if let Some(r) = run.results.get_mut(i) {
            r.outcome = outcome;
            let rtt = now.saturating_duration_since(run.sent).as_micros();
            r.rtt_us = Some(u64::try_from(rtt).unwrap_or(u64::MAX));
        }
        run.waiting = run.waiting.saturating_sub(1);
        if run.waiting > 0 {
            return None;
        }
        let run = self.runs.remove(&run_id)?;
        Some((run.reply, Ok(run.results)))
    }

    /// When [`PushTests::expire`] next has something to do.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.runs.values().map(|r| r.deadline).min()
    }

    /// Finishes every test whose deadline passed; what is unanswered timed out.
    pub fn expire(&mut self, now: Instant) -> Vec<Finished<R>> {
        let due: Vec<u64> = self
            .runs
            .iter()
            .filter(|(_, r)| r.deadline <= now)
            .map(|(id, _)| *id)
            .collect();
        if due.is_empty() {
            return Vec::new();
        }
        self.by_id.retain(|_, (run, _)| !due.contains(run));
        due.into_iter()
            .filter_map(|id| self.runs.remove(&id))
            .map(|run| (run.reply, Ok(run.results)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::RegKey;

    fn publish(id: &str, node: &str) -> Action {
        Action::Publish {
            iq_id: id.into(),
            user: "u@localhost".into(),
            key: RegKey {
                jid: "push.localhost".into(),
                node: node.into(),
            },
            iq: herald_proto::Element::builder("iq", "jabber:server").build(),
        }
    }

    #[test]
    fn answers_once_all_replied_or_at_the_deadline() {
        // The reply handle is a label here; the server's is a oneshot sender.
        let mut t = PushTests::default();
        let t0 = Instant::now();
        let started = t.start(
            &[publish("a", "n1"), publish("b", "n2")],
            "first",
            t0,
            Duration::from_secs(1),
        );
        assert!(started.is_none());
        assert_eq!(t.next_deadline(), Some(t0 + Duration::from_secs(1)));
        let err = Reply::Error {
            wait: false,
            condition: "item-not-found".into(),
        };
        let after_a = t.answered(
            "a",
            &err,
            Some(ErrorType::Cancel),
            t0 + Duration::from_millis(5),
        );
        let after_unknown = t.answered("unknown", &Reply::Result, None, t0);
        assert!(
            after_a.is_none() && after_unknown.is_none(),
            "one still unanswered"
        );
        let (to, got) = t
            .answered("b", &Reply::Result, None, t0 + Duration::from_millis(7))
            .unwrap();
        assert_eq!(to, "first");
        let got = got.unwrap();
        assert_eq!(got[0].outcome.to_string(), "error cancel/item-not-found");
        assert_eq!(got[0].rtt_us, Some(5000));
        assert_eq!(got[1].outcome, TestOutcome::Ok);
        assert_eq!(t.next_deadline(), None);

        assert!(t
            .start(&[publish("c", "n1")], "second", t0, Duration::from_secs(1))
            .is_none());
        assert!(t.expire(t0 + Duration::from_millis(999)).is_empty());
        let mut done = t.expire(t0 + Duration::from_secs(1));
        assert_eq!(done.len(), 1);
        let (to, got) = done.remove(0);
        assert_eq!(to, "second");
        let got = got.unwrap();
        assert_eq!(
            (got[0].outcome.clone(), got[0].rtt_us),
            (TestOutcome::Timeout, None)
        );
        // A late answer finds nothing.
        assert!(t
            .answered("c", &Reply::Result, None, t0 + Duration::from_secs(2))
            .is_none());
        assert!(t.by_id.is_empty() && t.runs.is_empty());

        assert_eq!(
            t.start(&[], "third", t0, Duration::from_secs(1)),
            Some(("third", Err(NO_REGISTRATION.to_string())))
        );
    }

    #[test]
    fn wire_format_round_trips() {
        let r = TestResult {
            jid: "push.example".into(),
            node: "a b".into(),
            outcome: TestOutcome::Error {
                error_type: "wait".into(),
                condition: "remote-server-timeout".into(),
            },
            rtt_us: Some(12),
        };
        let line = serde_json::to_string(std::slice::from_ref(&r)).unwrap();
        assert!(line.contains(r#""result":"error""#), "{line}");
        assert!(line.contains(r#""type":"wait""#), "{line}");
        assert!(!line.contains('\n'));
        let back: Vec<TestResult> = serde_json::from_str(&line).unwrap();
        assert_eq!(back, vec![r]);
    }
}
