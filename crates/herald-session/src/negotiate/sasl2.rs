//! XEP-0388 SASL2 in the negotiation machine: `<authenticate/>` starts the same mechanisms as
//! `<auth/>` (with the same throttle, delays and failure limit), or a XEP-0484 FAST token; a
//! success completes inline — a new FAST token, XEP-0198 resumption, XEP-0386 Bind2 — without
//! a stream restart. Elements and parsing are [`crate::sasl2`]'s.

use super::*;
use crate::sasl2::{self as wire, Request, Success};
use herald_proto::sasl::ht;

/// Adds FAST to the SASL2 offer in `features` (when SASL2 is offered there).
pub(super) fn offer_fast(features: &mut Element, bindings: &ChannelBindings) {
    if features.remove_child("authentication", ns::SASL2).is_some() {
        let fast = wire::fast_offered(bindings);
        features.append_child(wire::authentication(&offered(bindings), &fast));
    }
}

/// Answers `<authenticate/>` (SASL2 offered: the stream is not refused SASL).
pub(super) fn start(mut ctx: Ctx, el: &Element, out: &mut Vec<Action>) -> Negotiation {
    ctx.attempt = None;
    ctx.records = None;
    if !ctx.tls && ctx.cfg.require_encryption {
        // RFC 6120 §5.3.1, as for `<auth/>`.
        out.push(Action::Send(wire::failure("encryption-required", None)));
        return Negotiation::Unauthenticated(Unauthenticated { ctx });
    }
    let req = match wire::parse(el) {
        Ok(r) => r,
        Err(e) => {
            ctx.sasl2 = Some(Box::default());
            return auth_failed(ctx, e.condition(), false, out);
        }
    };
    let mechanism = req.mechanism.clone();
    // An absent initial response is an empty one: every mechanism offered is client-first,
    // so the mechanism reports it malformed.
    let initial = req.initial.clone().unwrap_or_default();
    let client_id = req.client_id.clone();
    let invalidate = req.fast.is_some_and(|f| f.invalidate);
    ctx.sasl2 = Some(Box::new(req));
    if !wire::is_fast_mechanism(&mechanism) {
        return start_mechanism(ctx, Some(&mechanism), Some(initial), out);
    }
    if !ctx.cfg.fast || !wire::fast_offered(&ctx.bindings).contains(&mechanism.as_str()) {
        // Off, or a channel binding this connection does not have (not offered here).
        return auth_failed(ctx, "invalid-mechanism", false, out);
    }
    // XEP-0484 §3: tokens are bound to the client id; without one there is nothing to check.
    let Some(client_id) = client_id else {
        return auth_failed(ctx, "malformed-request", false, out);
    };
    let (user, proof) = match ht::parse(&initial) {
        Ok(v) => v,
        Err(e) => return auth_failed(ctx, e.condition(), false, out),
    };
    let jid = account_jid(&user, &ctx.domain);
    ctx.attempt = Some((user, jid.clone()));
    let started = Started::Token {
        jid,
        client_id,
        mechanism,
        proof,
        invalidate,
    };
    begin(ctx, started, out)
}

/// A token authentication of an existing account name: its tokens are looked up.
pub(super) fn lookup_tokens(
    ctx: Ctx,
    jid: BareJid,
    client_id: String,
    mechanism: String,
    proof: Vec<u8>,
    invalidate: bool,
    out: &mut Vec<Action>,
) -> Negotiation {
    out.push(Action::LookupFastTokens {
        jid: jid.clone(),
        client_id: client_id.clone(),
    });
    Negotiation::AwaitingTokens(AwaitingTokens {
        ctx,
        jid,
        client_id,
        mechanism,
        proof,
        invalidate,
    })
}

/// A FAST authentication waiting for [`Input::FastTokens`].
#[derive(Debug)]
pub struct AwaitingTokens {
    pub(super) ctx: Ctx,
    jid: BareJid,
    client_id: String,
    mechanism: String,
    proof: Vec<u8>,
    invalidate: bool,
}

impl AwaitingTokens {
    /// A token of this mechanism whose initiator message with this connection's channel
    /// binding (or, for a token from before salts, whose verifier) the proof matches
    /// authenticates, unless it
    /// expired (`credentials-expired`, XEP-0484 §4: the client falls back to its password);
    /// none is a wrong password (`not-authorized`, delayed and counted).
    pub fn handle(self, input: Input, out: &mut Vec<Action>) -> Negotiation {
        let Input::FastTokens { tokens, now_ms } = input else {
            return Negotiation::AwaitingTokens(self);
        };
        let AwaitingTokens {
            mut ctx,
            jid,
            client_id,
            mechanism,
            proof,
            invalidate,
        } = self;
        // The channel-binding data the messages include: none for -NONE; a connection
        // without the mechanism's type was refused at the start.
        let cb = match ht::channel_binding(&mechanism) {
            Some(Some(ty)) => ctx.bindings.get(ty).map(<[u8]>::to_vec),
            Some(None) => Some(Vec::new()),
            None => None,
        };
        // Only tokens issued for this very mechanism: a -EXPR/-ENDP token is refused with
        // -NONE (and its derivation includes the mechanism besides).
        let found = cb.and_then(|cb| {
            tokens
                .iter()
                .filter(|t| t.mechanism == mechanism)
                .find_map(|t| match &t.token {
                    Some(tok) => ht::proves(tok.as_bytes(), &cb, &proof)
                        .then(|| (t, ht::responder_cb(tok.as_bytes(), &cb))),
                    None => (mechanism == ht::SHA256_NONE && ht::matches(&t.verifier, &proof))
                        .then(|| (t, t.responder.clone())),
                })
        });
        let Some((t, responder)) = found else {
            return auth_failed(ctx, "not-authorized", true, out);
        };
        if t.expires_at_ms <= now_ms {
            // The client holds the token: not a guess, so neither delayed nor counted.
            return auth_failed(ctx, "credentials-expired", false, out);
        }
        out.push(Action::FastTokenUsed {
            jid: jid.clone(),
            client_id,
            current: t.current,
            invalidate,
        });
        // Rotation (XEP-0484 §5): past half its life, a token is replaced at the next login;
        // the one just used stays valid until the client has used the new one.
        let half = t.issued_at_ms + (t.expires_at_ms - t.issued_at_ms) / 2;
        if let Some(r) = ctx.sasl2.as_mut() {
            if !invalidate && now_ms >= half && r.request_token.is_none() {
                r.request_token = Some(mechanism);
            }
            if invalidate {
                r.request_token = None;
            }
        }
        succeed(ctx, jid, Some(responder), out)
    }
}

/// SASL2 authenticated `jid` (`data`: the mechanism's final message): a FAST token first if
/// one was asked for, then the inline features.
pub(super) fn succeeded(
    ctx: Ctx,
    jid: BareJid,
    data: Option<Vec<u8>>,
    out: &mut Vec<Action>,
) -> Negotiation {
    out.push(Action::Authenticated(jid.clone()));
    let success = Success {
        additional: data,
        results: Vec::new(),
    };
    let token = ctx.sasl2.as_ref().and_then(|r| {
        let m = r.request_token.clone()?;
        let id = r.client_id.clone()?;
        // Only a mechanism this connection offers (a -EXPR token asked for over a
        // connection without tls-exporter could not be checked here).
        let offered = wire::fast_offered(&ctx.bindings).contains(&m.as_str());
        (ctx.cfg.fast && offered).then_some((m, id))
    });
    if let Some((mechanism, client_id)) = token {
        out.push(Action::IssueFastToken {
            jid: jid.clone(),
            client_id,
            mechanism,
        });
        return Negotiation::IssuingToken(IssuingToken { ctx, jid, success });
    }
    finish(ctx, jid, success, out)
}

/// A SASL2 success waiting for [`Input::FastTokenIssued`].
#[derive(Debug)]
pub struct IssuingToken {
    pub(super) ctx: Ctx,
    jid: BareJid,
    success: Success,
}

impl IssuingToken {
    /// The token joins the `<success/>` (none when it could not be stored).
    pub fn handle(self, input: Input, out: &mut Vec<Action>) -> Negotiation {
        let Input::FastTokenIssued(issued) = input else {
            return Negotiation::IssuingToken(self);
        };
        let IssuingToken {
            ctx,
            jid,
            mut success,
        } = self;
        if let Some((token, expiry)) = issued {
            success.results.push(wire::token(&token, &expiry));
        }
        finish(ctx, jid, success, out)
    }
}

/// The inline features: XEP-0198 resumption first (a resumed session needs no binding),
/// then Bind2, else the stream stays authenticated and unbound (legacy binding offered).
fn finish(mut ctx: Ctx, jid: BareJid, success: Success, out: &mut Vec<Action>) -> Negotiation {
    out.push(Action::FullLimits);
    let resume = ctx.sasl2.as_ref().and_then(|r| r.resume.clone());
    if let Some((previd, h)) = resume {
        out.push(Action::Sasl2Resume {
            user: jid.clone(),
            previd,
            h,
            success: Box::new(success.clone()),
        });
        return Negotiation::AwaitingResume(AwaitingResume {
            ctx,
            user: jid,
            sasl2: Some(Box::new(success)),
        });
    }
    let req = ctx.sasl2.take();
    bind_or_continue(ctx, jid, req, success, out)
}

/// No session took the inline `<resume/>`: `<failed/>` joins the `<success/>` and Bind2
/// binds a fresh session if asked (XEP-0198 §5 with XEP-0388).
pub(super) fn resume_failed(
    mut ctx: Ctx,
    user: BareJid,
    mut success: Success,
    last_h: Option<u32>,
    out: &mut Vec<Action>,
) -> Negotiation {
    success
        .results
        .push(crate::sm_nonza::resume_unknown(last_h));
    let req = ctx.sasl2.take();
    bind_or_continue(ctx, user, req, success, out)
}

fn bind_or_continue(
    ctx: Ctx,
    user: BareJid,
    req: Option<Box<Request>>,
    success: Success,
    out: &mut Vec<Action>,
) -> Negotiation {
    let req = req.map(|r| *r).unwrap_or_default();
    if let Some(bind) = req.bind {
        let resource = wire::resource(bind.tag.as_deref(), req.client_id.as_deref());
        out.push(Action::Bind2 {
            user,
            resource,
            bind: Box::new(bind),
            success: Box::new(success),
            client_id: req.client_id,
        });
        return Negotiation::Done;
    }
    // Authenticated and not bound: the client binds the legacy way on this same stream.
    out.push(Action::Send(
        success.into_element(user.as_str(), Vec::new()),
    ));
    // After authentication only bind and the post-login features are offered, caps among them.
    let caps = ctx.cfg.caps.clone();
    out.push(Action::Features(features(
        true,
        false,
        true,
        caps.as_ref(),
        false,
        &ChannelBindings::default(),
    )));
    Negotiation::Authenticated(Authenticated { ctx, user })
}
