//! XEP-0202 Entity Time: the server's clock in UTC, for a client that wants to know how far
//! its own is off (message timestamps, OMEMO and TLS need a sane clock). Owns the answer to
//! `<time xmlns='urn:xmpp:time'/>` on the server's domain; touches nothing else. The server
//! reports UTC (`tzo` +00:00): its operators' zone is of no use to a phone.

use herald_proto::ns;
use herald_proto::Element;

use super::Request;
use crate::stanza;
use crate::xep::delay;

/// XEP-0202 §4: `<tzo/>` and `<utc/>` (XEP-0082 DateTime).
pub fn time(req: &Request<'_>) -> Element {
    let mut t = Element::bare("time", ns::TIME);
    t.append_child(stanza::text("tzo", ns::TIME, "+00:00"));
    let utc = delay::format_stamp(delay::now_micros());
    t.append_child(stanza::text("utc", ns::TIME, &utc));
    stanza::iq_result(req.iq, Some(t))
}
