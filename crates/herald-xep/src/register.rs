//! XEP-0077 in-band registration payloads (`jabber:iq:register`) and XEP-0401/XEP-0445
//! invite tokens (`<preauth xmlns='urn:xmpp:pars:0' token='…'/>`): parsing what a client
//! submits, checking a new account's name and password, and building the answers. What is
//! allowed (registration on or off, rate limits, invites) is the caller's.

use herald_proto::jid::BareJid;
use herald_proto::ns;
use herald_proto::Element;

/// What a `set` of `<query xmlns='jabber:iq:register'/>` asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Submit {
    /// `<remove/>`: cancel the registration (XEP-0077 §3.2).
    Remove,
    /// `<username/>` and `<password/>`: a new account (§3.1), or a password change when
    /// logged in (§3.3).
    Credentials {
        /// As sent (not prepared).
        username: String,
        /// As sent.
        password: String,
    },
    /// Neither: `bad-request`.
    Incomplete,
}

/// Parses the `<query/>` of a registration `set`.
pub fn parse_submit(query: &Element) -> Submit {
    if query.get_child("remove", ns::REGISTER).is_some() {
        return Submit::Remove;
    }
    let text = |n: &str| query.get_child(n, ns::REGISTER).map(|c| c.text());
    match (text("username"), text("password")) {
        (Some(username), Some(password)) => Submit::Credentials { username, password },
        _ => Submit::Incomplete,
    }
}

/// Why a new account's name or password is refused (`not-acceptable`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refused {
    /// Empty, not a valid JID localpart after preparation (RFC 7622 §3.3), or with `@`/`/`.
    BadUsername,
    /// Longer than the configured limit.
    UsernameTooLong,
    /// Empty.
    EmptyPassword,
    /// Longer than the configured limit.
    PasswordTooLong,
}

impl Refused {
    /// The text of the `not-acceptable` error.
    pub fn text(self) -> &'static str {
        match self {
            Refused::BadUsername => "The requested username is invalid.",
            Refused::UsernameTooLong => "The requested username is too long.",
            Refused::EmptyPassword => "The password must not be empty.",
            Refused::PasswordTooLong => "The password is too long.",
        }
    }
}

/// The account `username` names at `domain`, prepared (nodeprep, via the JID crate).
pub fn account(username: &str, domain: &str, max_chars: usize) -> Result<BareJid, Refused> {
    if username.is_empty() || username.contains(['@', '/']) {
        return Err(Refused::BadUsername);
    }
    if username.chars().count() > max_chars {
        return Err(Refused::UsernameTooLong);
    }
    let jid = BareJid::new(&format!("{username}@{domain}")).map_err(|_| Refused::BadUsername)?;
    match jid.node() {
        Some(n) if !n.as_str().is_empty() && n.as_str().chars().count() <= max_chars => Ok(jid),
        Some(n) if !n.as_str().is_empty() => Err(Refused::UsernameTooLong),
        _ => Err(Refused::BadUsername),
    }
}

/// Checks a password given in band.
pub fn password(password: &str, max_bytes: usize) -> Result<(), Refused> {
    if password.is_empty() {
        Err(Refused::EmptyPassword)
    } else if password.len() > max_bytes {
        Err(Refused::PasswordTooLong)
    } else {
        Ok(())
    }
}

/// The answer to a `get` before login (XEP-0077 §3.1 example 2): the fields to fill in.
pub fn form(instructions: &str) -> Element {
    let mut q = Element::bare("query", ns::REGISTER);
    q.append_child(crate::stanza::text(
        "instructions",
        ns::REGISTER,
        instructions,
    ));
    q.append_child(Element::bare("username", ns::REGISTER));
    q.append_child(Element::bare("password", ns::REGISTER));
    q
}

/// The answer to a `get` when logged in (§3.1 example 4): `<registered/>` and the name.
pub fn registered(username: &str) -> Element {
    let mut q = Element::bare("query", ns::REGISTER);
    q.append_child(Element::bare("registered", ns::REGISTER));
    q.append_child(crate::stanza::text("username", ns::REGISTER, username));
    q.append_child(Element::bare("password", ns::REGISTER));
    q
}

/// The token of a XEP-0401 `<preauth xmlns='urn:xmpp:pars:0' token='…'/>`.
pub fn preauth_token(payload: &Element) -> Option<&str> {
    payload
        .is("preauth", ns::PARS)
        .then(|| payload.attr("token"))
        .flatten()
        .filter(|t| !t.is_empty())
}

/// A new invite: its public id (8 hex digits) and its secret token (128 random bits,
/// base64url), which only the invitee gets; the store keeps [`token_hash`] of it.
pub fn new_invite() -> (String, String) {
    use base64::Engine as _;
    let id: [u8; 4] = rand::random();
    let token: [u8; 16] = rand::random();
    (
        hex::encode(id),
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(token),
    )
}

/// What the store keeps of a token (SHA-256, so the database alone gives no usable token).
pub fn token_hash(token: &str) -> Vec<u8> {
    use sha2::Digest as _;
    sha2::Sha256::digest(token.as_bytes()).to_vec()
}

/// The XEP-0401 §5 URI of an account-creation invite: `xmpp:DOMAIN?register;preauth=TOKEN`,
/// or with the one account name it registers, `xmpp:USER@DOMAIN?register;preauth=TOKEN`.
pub fn invite_uri(jid: &str, token: &str) -> String {
    format!("xmpp:{jid}?register;preauth={token}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(inner: &str) -> Element {
        format!("<query xmlns='jabber:iq:register'>{inner}</query>")
            .parse()
            .unwrap()
    }

    #[test]
    fn submissions() {
        assert_eq!(parse_submit(&q("<remove/>")), Submit::Remove);
        assert_eq!(
            parse_submit(&q("<username>Bill</username><password>Calliope</password>")),
            Submit::Credentials {
                username: "Bill".into(),
                password: "Calliope".into()
            }
        );
        assert_eq!(
            parse_submit(&q("<username>bill</username>")),
            Submit::Incomplete
        );
        assert_eq!(parse_submit(&q("")), Submit::Incomplete);
        // Another namespace's <remove/> is not ours.
        assert_eq!(
            parse_submit(&q("<remove xmlns='urn:example'/>")),
            Submit::Incomplete
        );
    }

    #[test]
    fn names_are_prepared_and_bounded() {
        assert_eq!(
            account("Bill", "localhost", 64).map(|j| j.to_string()),
            Ok("bill@localhost".to_string())
        );
        for bad in ["", "a@b", "a/b", "a b", "a\"b", "a<b"] {
            assert_eq!(
                account(bad, "localhost", 64),
                Err(Refused::BadUsername),
                "{bad:?}"
            );
        }
        assert_eq!(
            account(&"x".repeat(65), "localhost", 64),
            Err(Refused::UsernameTooLong)
        );
        assert!(account(&"x".repeat(64), "localhost", 64).is_ok());
        assert_eq!(password("", 10), Err(Refused::EmptyPassword));
        assert_eq!(password(&"p".repeat(11), 10), Err(Refused::PasswordTooLong));
        assert_eq!(password("secret", 10), Ok(()));
    }

    #[test]
    fn invites_are_random_and_only_hashes_are_kept() {
        let (id, token) = new_invite();
        let (id2, token2) = new_invite();
        assert_eq!(id.len(), 8);
        assert!(token.len() >= 22 && !token.contains(['+', '/', '=', ';', '&']));
        assert!(id != id2 && token != token2);
        assert_eq!(token_hash(&token), token_hash(&token));
        assert_ne!(token_hash(&token), token_hash(&token2));
        assert_eq!(
            invite_uri("localhost", "abc"),
            "xmpp:localhost?register;preauth=abc"
        );
    }

    #[test]
    fn answers_and_tokens() {
        let f = form("Choose a name");
        assert!(f.get_child("username", ns::REGISTER).is_some());
        assert!(f.get_child("password", ns::REGISTER).is_some());
        assert_eq!(
            f.get_child("instructions", ns::REGISTER).map(|i| i.text()),
            Some("Choose a name".into())
        );
        let r = registered("bill");
        assert!(r.get_child("registered", ns::REGISTER).is_some());
        let p: Element = "<preauth xmlns='urn:xmpp:pars:0' token='abc'/>"
            .parse()
            .unwrap();
        assert_eq!(preauth_token(&p), Some("abc"));
        let p: Element = "<preauth xmlns='urn:xmpp:pars:0' token=''/>"
            .parse()
            .unwrap();
        assert_eq!(preauth_token(&p), None);
        let p: Element = "<preauth xmlns='urn:example' token='abc'/>"
            .parse()
            .unwrap();
        assert_eq!(preauth_token(&p), None);
    }
}
