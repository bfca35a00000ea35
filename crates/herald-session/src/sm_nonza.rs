//! XEP-0198 on the wire: what to answer to the client's stream-management nonzas (`<enable/>`,
//! `<r/>`, `<a/>`, `<resume/>`), given the session's [`StreamManagement`] state.
//!
//! [`crate::sm`] keeps the counters and the queue; this module turns a nonza into the change
//! it makes there and the [`Answer`] the owner writes (elements built by
//! [`herald_proto::sm`]). It also decides the `<failed/>` answers to `<resume/>` during
//! negotiation ([`resume_request`], [`resume_unknown`]) and on the session ([`resume`]).
//!
//! Must not: write to sockets, register resumption ids, wait for durability, or read clocks
//! (the owner does those, in the order [`Answer`] says).

use std::time::{Duration, Instant};

use herald_proto::error::{StanzaErrorCondition, StreamError, StreamErrorCondition};
use herald_proto::{ns, sm as wire, Element};

use crate::sm::{SmError, StreamManagement};

/// What the owner does about one client nonza in `urn:xmpp:sm:3`.
#[derive(Debug, PartialEq)]
pub enum Answer<T> {
    /// `<r/>`: write this `<a h/>` once what `h` counts is durable.
    Ack(Element),
    /// `<a h/>` accepted: these stanzas are acknowledged (oldest first). `recovered`: it
    /// answered an `<r/>` that had been reported as delayed.
    Acked {
        /// The stanzas acknowledged.
        acked: Vec<T>,
        /// An overdue ack arrived.
        recovered: bool,
    },
    /// `<enable/>` accepted: register `id` for resumption (when resumable), then write `reply`.
    Enabled {
        /// The resumption id, when `resume` was asked for.
        id: Option<String>,
        /// The `<enabled/>`.
        reply: Element,
    },
    /// Write this `<failed/>`; the stream goes on.
    Failed(Element),
    /// Nothing to write (e.g. an `<a/>` while stream management is off).
    Nothing,
    /// End the stream: write this `<stream:error>` (XML text: it carries an application
    /// condition) and close.
    HandledCountTooHigh(String),
}

/// `<enabled max='…'/>`: the hibernation timeout in whole seconds, rounded up (a sub-second
/// timeout must not read as `max='0'`).
pub fn max_seconds(hibernation_timeout: Duration) -> u64 {
    let s = hibernation_timeout.as_millis().div_ceil(1000).max(1);
    u64::try_from(s).unwrap_or(u64::MAX)
}

/// `<{name}/>` is not supported here: `unsupported-stanza-type`.
pub fn unsupported(el: &Element) -> StreamError {
    StreamError::new(
        StreamErrorCondition::UnsupportedStanzaType,
        Some(format!("<{}/> is not supported here", el.name())),
    )
}

/// Handles a client nonza on a bound stream. None if `el` is not in `urn:xmpp:sm:3`;
/// `Some(Err)` ends the stream with that error. `new_id` makes a resumption id (called only for
/// a resumable `<enable/>`).
pub fn on_nonza<T: Clone>(
    sm: &mut StreamManagement<T>,
    el: &Element,
    hibernation_timeout: Duration,
    new_id: impl FnOnce() -> String,
    now: Instant,
) -> Option<Result<Answer<T>, StreamError>> {
    if !el.has_ns(ns::SM) {
        return None;
    }
    Some(match el.name() {
        "r" => {
            if !sm.is_enabled() {
                return Some(Err(unsupported(el)));
            }
            Ok(Answer::Ack(wire::a(sm.inbound_h())))
        }
        "a" => {
            let Some(h) = el.attr("h").and_then(|h| h.parse::<u32>().ok()) else {
                return Some(Err(StreamError::new(
                    StreamErrorCondition::BadFormat,
                    Some("<a/> needs h".to_string()),
                )));
            };
            let was_overdue = sm.ack_overdue();
            match sm.on_ack(h, now) {
                Ok(acked) => Ok(Answer::Acked {
                    acked,
                    recovered: was_overdue && !sm.ack_overdue(),
                }),
                // XEP-0198 §4: undefined-condition with handled-count-too-high.
                Err(SmError::HandledCountTooHigh { h, sent }) => Ok(Answer::HandledCountTooHigh(
                    wire::handled_count_too_high_error(h, sent),
                )),
                Err(_) => Ok(Answer::Nothing),
            }
        }
        "enable" => {
            let resume = matches!(el.attr("resume"), Some("true") | Some("1"));
            if sm.enable(resume, now).is_err() {
                // XEP-0198 §3: the client MUST NOT enable twice.
                return Some(Ok(Answer::Failed(wire::failed(
                    StanzaErrorCondition::UnexpectedRequest,
                    None,
                ))));
            }
            if resume {
                let id = new_id();
                let reply = wire::enabled(Some(&id), true, Some(max_seconds(hibernation_timeout)));
                Ok(Answer::Enabled {
                    id: Some(id),
                    reply,
                })
            } else {
                Ok(Answer::Enabled {
                    id: None,
                    reply: wire::enabled(None, false, None),
                })
            }
        }
        // XEP-0198 §5: resumption replaces binding; this stream is bound already.
        "resume" => Ok(Answer::Failed(wire::failed(
            StanzaErrorCondition::UnexpectedRequest,
            None,
        ))),
        _ => Err(unsupported(el)),
    })
}

/// A `<resume/>` during negotiation: `(previd, h)`, or the `<failed/>` to send when `h` is
/// missing or not a number (`bad-request`). A missing `previd` is the empty id (unknown).
pub fn resume_request(el: &Element) -> Result<(String, u32), Element> {
    let previd = el.attr("previd").unwrap_or_default().to_string();
    match el.attr("h").and_then(|h| h.parse::<u32>().ok()) {
        Some(h) => Ok((previd, h)),
        None => Err(wire::failed(StanzaErrorCondition::BadRequest, None)),
    }
}

/// `<enable/>` before a resource is bound (XEP-0198 §3): `unexpected-request`.
pub fn enable_before_bind() -> Element {
    wire::failed(StanzaErrorCondition::UnexpectedRequest, None)
}

/// No live session has that resumption id (or it is another account's, or it ended on the
/// way): `item-not-found`, with the ended session's last h when it is remembered.
pub fn resume_unknown(last_h: Option<u32>) -> Element {
    wire::failed(StanzaErrorCondition::ItemNotFound, last_h)
}

/// A resumption the session accepted.
#[derive(Debug, PartialEq)]
pub struct Resumed<T> {
    /// Stanzas the client's `h` acknowledged, oldest first.
    pub acked: Vec<T>,
    /// Stanzas to send again after `reply`, oldest first.
    pub retransmit: Vec<T>,
    /// The `<resumed/>`.
    pub reply: Element,
}

/// `<resume previd h/>` reaching its session: resume `sm` (see
/// [`StreamManagement::resume_acked`]), or the `<failed h='…'/>` to send on the new stream
/// (`handled-count-too-high` when `h` is more than was sent, else `item-not-found`).
pub fn resume<T: Clone>(
    sm: &mut StreamManagement<T>,
    h: u32,
    previd: &str,
    now: Instant,
) -> Result<Resumed<T>, Element> {
    match sm.resume_acked(h, now) {
        Ok((acked, retransmit)) => Ok(Resumed {
            acked,
            retransmit,
            reply: wire::resumed(sm.inbound_h(), previd),
        }),
        Err(SmError::HandledCountTooHigh { h, sent }) => {
            // XEP-0198 §4: the same report as the stream error, inside <failed/>.
            Err(wire::failed_handled_count_too_high(sm.inbound_h(), h, sent))
        }
        Err(_) => Err(wire::failed(
            StanzaErrorCondition::ItemNotFound,
            Some(sm.inbound_h()),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sm::SmConfig;
    use herald_proto::stream::{to_string, StreamNs};

    fn el(xml: &str) -> Element {
        xml.parse().unwrap()
    }

    fn wire(e: &Element) -> String {
        to_string(e, StreamNs::Client)
    }

    fn enabled_sm(sent: usize) -> StreamManagement<u32> {
        let mut sm = StreamManagement::new(SmConfig::default());
        let now = Instant::now();
        sm.enable(true, now).unwrap();
        for i in 0..sent {
            sm.push_outbound(i as u32, now).unwrap();
        }
        sm
    }

    fn answer(
        sm: &mut StreamManagement<u32>,
        xml: &str,
    ) -> Option<Result<Answer<u32>, StreamError>> {
        on_nonza(
            sm,
            &el(xml),
            Duration::from_millis(1500),
            || "id1".to_string(),
            Instant::now(),
        )
    }

    const SM: &str = "xmlns='urn:xmpp:sm:3'";

    #[test]
    fn nonzas_table() {
        enum Want {
            Wire(&'static str),
            Error(StreamErrorCondition),
            Acked(Vec<u32>),
            Nothing,
            NotSm,
        }
        use Want::*;
        let cases: Vec<(&str, usize, bool, String, Want)> = vec![
            ("r before enable", 0, false, format!("<r {SM}/>"), Error(StreamErrorCondition::UnsupportedStanzaType)),
            ("r", 2, true, format!("<r {SM}/>"), Wire("<a xmlns='urn:xmpp:sm:3' h='0'/>")),
            ("a without h", 2, true, format!("<a {SM}/>"), Error(StreamErrorCondition::BadFormat)),
            ("a bad h", 2, true, format!("<a {SM} h='x'/>"), Error(StreamErrorCondition::BadFormat)),
            ("a", 3, true, format!("<a {SM} h='2'/>"), Acked(vec![0, 1])),
            ("a before enable", 0, false, format!("<a {SM} h='2'/>"), Nothing),
            ("a too high", 1, true, format!("<a {SM} h='5'/>"), Wire("<stream:error><undefined-condition xmlns='urn:ietf:params:xml:ns:xmpp-streams'/><handled-count-too-high xmlns='urn:xmpp:sm:3' h='5' send-count='1'/><text xmlns='urn:ietf:params:xml:ns:xmpp-streams'>acknowledged 5 stanzas but only 1 were sent</text></stream:error>")),
            ("enable", 0, false, format!("<enable {SM}/>"), Wire("<enabled xmlns='urn:xmpp:sm:3'/>")),
            ("enable resume", 0, false, format!("<enable {SM} resume='1'/>"), Wire("<enabled xmlns='urn:xmpp:sm:3' id='id1' max='2' resume='true'/>")),
            ("enable twice", 0, true, format!("<enable {SM}/>"), Wire("<failed xmlns='urn:xmpp:sm:3'><unexpected-request xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></failed>")),
            ("resume when bound", 0, true, format!("<resume {SM} previd='x' h='0'/>"), Wire("<failed xmlns='urn:xmpp:sm:3'><unexpected-request xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></failed>")),
            ("unknown", 0, true, format!("<x {SM}/>"), Error(StreamErrorCondition::UnsupportedStanzaType)),
            ("csi", 0, true, "<inactive xmlns='urn:xmpp:csi:0'/>".to_string(), NotSm),
        ];
        for (name, sent, enabled, xml, want) in cases {
            let mut sm = if enabled {
                enabled_sm(sent)
            } else {
                StreamManagement::new(SmConfig::default())
            };
            let got = answer(&mut sm, &xml);
            match (got, want) {
                (None, NotSm) => {}
                (Some(Err(e)), Error(c)) => assert_eq!(e.condition, c, "{name}"),
                (Some(Ok(Answer::Ack(e) | Answer::Failed(e))), Wire(w)) => {
                    assert_eq!(wire(&e), w, "{name}")
                }
                (Some(Ok(Answer::Enabled { reply, .. })), Wire(w)) => {
                    assert_eq!(wire(&reply), w, "{name}")
                }
                (Some(Ok(Answer::HandledCountTooHigh(x))), Wire(w)) => assert_eq!(x, w, "{name}"),
                (Some(Ok(Answer::Acked { acked, recovered })), Acked(w)) => {
                    assert_eq!(acked, w, "{name}");
                    assert!(!recovered, "{name}");
                }
                (Some(Ok(Answer::Nothing)), Nothing) => {}
                (got, _) => panic!("{name}: unexpected {got:?}"),
            }
        }
    }

    #[test]
    fn enable_registers_an_id_only_when_resumable() {
        let mut sm = StreamManagement::<u32>::new(SmConfig::default());
        let got = answer(&mut sm, &format!("<enable {SM} resume='true'/>"));
        assert!(matches!(got, Some(Ok(Answer::Enabled { id: Some(ref i), .. })) if i == "id1"));
        assert!(sm.is_resumable());
        let mut sm = StreamManagement::<u32>::new(SmConfig::default());
        let got = answer(&mut sm, &format!("<enable {SM} resume='false'/>"));
        assert!(matches!(got, Some(Ok(Answer::Enabled { id: None, .. }))));
        assert!(sm.is_enabled() && !sm.is_resumable());
    }

    #[test]
    fn max_rounds_up() {
        assert_eq!(max_seconds(Duration::from_millis(1)), 1);
        assert_eq!(max_seconds(Duration::ZERO), 1);
        assert_eq!(max_seconds(Duration::from_secs(600)), 600);
        assert_eq!(max_seconds(Duration::from_millis(600_001)), 601);
    }

    #[test]
    fn an_overdue_ack_is_reported_recovered() {
        let cfg = SmConfig {
            max_ack_delay: Duration::from_secs(1),
            ..SmConfig::default()
        };
        let mut sm = StreamManagement::<u32>::new(cfg);
        let t0 = Instant::now();
        sm.enable(false, t0).unwrap();
        sm.push_outbound(1, t0).unwrap();
        sm.request_sent(t0);
        let _ = sm.poll(t0 + Duration::from_secs(2));
        assert!(sm.ack_overdue());
        let got = answer(&mut sm, &format!("<a {SM} h='1'/>"));
        assert_eq!(
            got,
            Some(Ok(Answer::Acked {
                acked: vec![1],
                recovered: true
            }))
        );
    }

    #[test]
    fn resume_requests_during_negotiation() {
        let cases = [
            (
                format!("<resume {SM} previd='p' h='3'/>"),
                Ok(("p".to_string(), 3)),
            ),
            (format!("<resume {SM} h='3'/>"), Ok((String::new(), 3))),
            (format!("<resume {SM} previd='p'/>"), Err("bad-request")),
            (
                format!("<resume {SM} previd='p' h='-1'/>"),
                Err("bad-request"),
            ),
        ];
        for (xml, want) in cases {
            match (resume_request(&el(&xml)), want) {
                (Ok(got), Ok(w)) => assert_eq!(got, w, "{xml}"),
                (Err(f), Err(c)) => {
                    assert!(f.is("failed", ns::SM) && f.attr("h").is_none(), "{xml}");
                    assert!(f.has_child(c, ns::STANZAS_ERR), "{xml}");
                }
                (got, _) => panic!("{xml}: {got:?}"),
            }
        }
        assert_eq!(
            wire(&resume_unknown(Some(4))),
            "<failed xmlns='urn:xmpp:sm:3' h='4'><item-not-found xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></failed>"
        );
        assert_eq!(
            wire(&enable_before_bind()),
            "<failed xmlns='urn:xmpp:sm:3'><unexpected-request xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></failed>"
        );
    }

    #[test]
    fn resume_on_the_session() {
        let now = Instant::now();
        // Accepted: acks what h says, retransmits the rest, answers with our h.
        let mut sm = enabled_sm(3);
        sm.on_inbound_stanza();
        sm.hibernate(now).unwrap();
        let r = resume(&mut sm, 1, "p", now).unwrap();
        assert_eq!((r.acked, r.retransmit), (vec![0], vec![1, 2]));
        assert_eq!(
            wire(&r.reply),
            "<resumed xmlns='urn:xmpp:sm:3' h='1' previd='p'/>"
        );
        // Too high: handled-count-too-high inside <failed/>, nothing changes.
        let f = resume(&mut sm, 9, "p", now).unwrap_err();
        assert_eq!(
            wire(&f),
            "<failed xmlns='urn:xmpp:sm:3' h='1'><undefined-condition xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/><handled-count-too-high h='9' send-count='3'/></failed>"
        );
        assert_eq!(sm.unacked_len(), 2);
        // Not resumable: item-not-found with our h.
        let mut sm = StreamManagement::<u32>::new(SmConfig::default());
        sm.enable(false, now).unwrap();
        let f = resume(&mut sm, 0, "p", now).unwrap_err();
        assert_eq!(
            wire(&f),
            "<failed xmlns='urn:xmpp:sm:3' h='0'><item-not-found xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></failed>"
        );
    }
}
