//! Features served outside the IQ table, and where each is announced: disco#info features
//! a client looks for before relying on behaviour that is not an IQ (offline storage, stanza
//! ids), and c2s stream features. With the IQ table this is everything Herald advertises:
//! disco#info lists these beside the table's features, and `tests/disco.rs` checks both
//! directions (everything announced here is announced on the wire, nothing else is, and
//! each line names a module that exists).

use herald_proto::ns;

/// Where a feature is announced.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Announced {
    /// In the disco#info of the server or of every account.
    Disco(super::Disco),
    /// As a child of the c2s stream features after authentication, in this namespace.
    StreamFeature,
}

/// One feature served outside the IQ table.
#[derive(Clone, Copy, Debug)]
pub struct Served {
    /// The disco#info `var`, or the stream feature's namespace.
    pub var: &'static str,
    /// Where it is announced.
    pub announced: Announced,
    /// The module (path under herald-server's `src/`) that serves it.
    pub module: &'static str,
    /// The specification, for readers.
    pub spec: &'static str,
}

use super::Disco::{Account, Server};
use Announced::{Disco, StreamFeature};

/// Every feature served outside the IQ table.
#[rustfmt::skip]
pub static SERVED: &[Served] = &[
    // Messages to an account with no available resource are stored and delivered at login.
    Served { var: ns::MSGOFFLINE, announced: Disco(Server),  module: "features/offline.rs",  spec: "XEP-0160 §3" },
    // Archived messages carry <stanza-id by=account/>; clients (Conversations, Monal) ask
    // the account's bare JID, as for MAM.
    Served { var: ns::SID,        announced: Disco(Account), module: "features/mam.rs",      spec: "XEP-0359 §5" },
    Served { var: ns::ROSTERVER,  announced: StreamFeature,  module: "features/roster.rs",   spec: "RFC 6121 §2.6" },
    Served { var: ns::SM,         announced: StreamFeature,  module: "c2s/session/sm.rs",    spec: "XEP-0198 §3" },
    Served { var: ns::CSI,        announced: StreamFeature,  module: "c2s/session/csi.rs",   spec: "XEP-0352 §4" },
    // XEP-0048 bookmarks in private storage are the XEP-0402 node's items, both ways.
    Served { var: herald_xep::bookmarks::COMPAT_FEATURE, announced: Disco(Account), module: "features/private.rs", spec: "XEP-0402 §5.3" },
    // XEP-0084 avatars and the vCard photo are converted both ways.
    Served { var: herald_xep::avatar::CONVERSION_FEATURE, announced: Disco(Account), module: "features/avatar.rs", spec: "XEP-0398 §2" },
    // The server's own entity capabilities, hashed from its disco#info.
    Served { var: ns::CAPS,       announced: StreamFeature,  module: "features/iq/disco.rs", spec: "XEP-0115 §6.3" },
    // A <displayed/> for the account's MDS node inside a message to the chat is published
    // by the server (and taken out of the message).
    // XEP-0048 bookmarks in PEP and in private storage are the XEP-0402 node's, both ways.
    Served { var: herald_xep::bookmarks::CONVERSION_FEATURE, announced: Disco(Account), module: "features/bookmarks.rs", spec: "XEP-0411 §2" },
    Served { var: herald_xep::bookmarks::COMPAT_PEP_FEATURE, announced: Disco(Account), module: "features/bookmarks.rs", spec: "XEP-0402 §6" },
    Served { var: ns::MDS_SERVER_ASSIST, announced: Disco(Account), module: "features/mds.rs", spec: "XEP-0490 §4.5" },
];
