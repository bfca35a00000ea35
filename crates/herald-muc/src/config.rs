//! A room's configuration: the `muc#roomconfig` data form (XEP-0045 §10.2) both ways, and the
//! text a persistent room is saved as.

use herald_proto::ns;
use herald_proto::Element;
use herald_xep::stanza;

/// Who may see occupants' real JIDs (`muc#roomconfig_whois`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Whois {
    /// Semi-anonymous: moderators only.
    Moderators,
    /// Non-anonymous: every occupant.
    Anyone,
}

/// Who may send private messages to occupants (`muc#roomconfig_allowpm`, Prosody's values).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AllowPm {
    /// Every occupant.
    Anyone,
    /// Participants and moderators (not visitors).
    Participants,
    /// Moderators only.
    Moderators,
    /// Nobody.
    None,
}

impl AllowPm {
    fn as_str(self) -> &'static str {
        match self {
            AllowPm::Anyone => "anyone",
            AllowPm::Participants => "participants",
            AllowPm::Moderators => "moderators",
            AllowPm::None => "none",
        }
    }

    fn parse(s: &str) -> Option<AllowPm> {
        Some(match s {
            "anyone" => AllowPm::Anyone,
            "participants" => AllowPm::Participants,
            "moderators" => AllowPm::Moderators,
            "none" => AllowPm::None,
            _ => return None,
        })
    }
}

/// Everything an owner configures.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoomConfig {
    /// `muc#roomconfig_roomname`.
    pub name: String,
    /// `muc#roomconfig_roomdesc`.
    pub description: String,
    /// `muc#roomconfig_persistentroom`: kept when empty and across restarts.
    pub persistent: bool,
    /// `muc#roomconfig_publicroom`: listed in the service's disco#items.
    pub public: bool,
    /// `muc#roomconfig_membersonly`.
    pub members_only: bool,
    /// `muc#roomconfig_moderatedroom`: visitors may not speak.
    pub moderated: bool,
    /// `muc#roomconfig_roomsecret` when `muc#roomconfig_passwordprotectedroom` is on.
    pub password: Option<String>,
    /// `muc#roomconfig_maxusers`.
    pub max_users: usize,
    /// `muc#roomconfig_whois`.
    pub whois: Whois,
    /// `muc#roomconfig_allowpm`.
    pub allow_pm: AllowPm,
    /// `muc#roomconfig_changesubject`: participants may change the subject.
    pub change_subject: bool,
    /// `muc#roomconfig_allowinvites`: members may invite (else only admins and owners).
    pub allow_invites: bool,
    /// `muc#roomconfig_enablearchiving` (also accepted as `mam`): the room keeps an archive
    /// (XEP-0313) and serves history from it.
    pub archive: bool,
}

/// Room defaults the service starts new rooms with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Defaults {
    /// New rooms are listed.
    pub public: bool,
    /// New rooms outlive their last occupant.
    pub persistent: bool,
    /// New rooms archive their messages.
    pub archive: bool,
    /// `maxusers` of a new room.
    pub max_users: usize,
}

impl RoomConfig {
    /// A new room's configuration.
    pub fn new(d: &Defaults) -> RoomConfig {
        RoomConfig {
            name: String::new(),
            description: String::new(),
            persistent: d.persistent,
            public: d.public,
            members_only: false,
            moderated: false,
            password: None,
            max_users: d.max_users,
            whois: Whois::Moderators,
            allow_pm: AllowPm::Anyone,
            change_subject: false,
            allow_invites: false,
            archive: d.archive,
        }
    }

    /// The configuration form an owner gets (`<x type='form'/>`).
    pub fn form(&self, max_users_cap: usize) -> Element {
        let mut x = stanza::new("x", ns::DATA_FORMS, &[("type", "form")]);
        x.append_child(stanza::text("title", ns::DATA_FORMS, "Room configuration"));
        x.append_child(field(
            "FORM_TYPE",
            "hidden",
            &["http://jabber.org/protocol/muc#roomconfig"],
        ));
        let b = |v: bool| if v { "1" } else { "0" };
        let max = self.max_users.to_string();
        let cap = max_users_cap.to_string();
        let whois = match self.whois {
            Whois::Moderators => "moderators",
            Whois::Anyone => "anyone",
        };
        let password = self.password.as_deref().unwrap_or("");
        for (var, typ, value) in [
            ("muc#roomconfig_roomname", "text-single", self.name.as_str()),
            (
                "muc#roomconfig_roomdesc",
                "text-single",
                self.description.as_str(),
            ),
            (
                "muc#roomconfig_persistentroom",
                "boolean",
                b(self.persistent),
            ),
            ("muc#roomconfig_publicroom", "boolean", b(self.public)),
            (
                "muc#roomconfig_membersonly",
                "boolean",
                b(self.members_only),
            ),
            ("muc#roomconfig_moderatedroom", "boolean", b(self.moderated)),
            (
                "muc#roomconfig_passwordprotectedroom",
                "boolean",
                b(self.password.is_some()),
            ),
            ("muc#roomconfig_roomsecret", "text-private", password),
            (
                "muc#roomconfig_changesubject",
                "boolean",
                b(self.change_subject),
            ),
            (
                "muc#roomconfig_allowinvites",
                "boolean",
                b(self.allow_invites),
            ),
            ("muc#roomconfig_enablearchiving", "boolean", b(self.archive)),
        ] {
            x.append_child(field(var, typ, &[value]));
        }
        let mut users = field("muc#roomconfig_maxusers", "list-single", &[&max]);
        for o in ["10", "20", "50", "100", "200", "500", "1000", cap.as_str()] {
            if o.parse::<usize>().is_ok_and(|n| n <= max_users_cap) {
                users.append_child(option(o));
            }
        }
        x.append_child(users);
        let mut w = field("muc#roomconfig_whois", "list-single", &[whois]);
        w.append_child(option("moderators"));
        w.append_child(option("anyone"));
        x.append_child(w);
        let mut pm = field(
            "muc#roomconfig_allowpm",
            "list-single",
            &[self.allow_pm.as_str()],
        );
        for o in ["anyone", "participants", "moderators", "none"] {
            pm.append_child(option(o));
        }
        x.append_child(pm);
        x
    }

    /// Applies a submitted form (`<x type='submit'/>`) to a copy of this configuration.
    /// A field this service does not know, a value it cannot take or a text field longer
    /// than `max_field_bytes` is an error naming the field (XEP-0045 §10.2: not-acceptable).
    pub fn apply_form(
        &self,
        x: &Element,
        max_users_cap: usize,
        max_field_bytes: usize,
    ) -> Result<RoomConfig, String> {
        let mut c = self.clone();
        let mut protected = None;
        let mut secret = None;
        for f in x.children().filter(|f| f.is("field", ns::DATA_FORMS)) {
            let var = f.attr("var").unwrap_or("");
            let values: Vec<String> = f
                .children()
                .filter(|v| v.is("value", ns::DATA_FORMS))
                .map(|v| v.text())
                .collect();
            let value = values.first().cloned().unwrap_or_default();
            if value.len() > max_field_bytes {
                return Err(format!("{var}: longer than {max_field_bytes} bytes"));
            }
            let boolean = || match value.as_str() {
                "1" | "true" => Ok(true),
                "0" | "false" | "" => Ok(false),
                v => Err(format!("{var}: {v:?} is not a boolean")),
            };
            match var {
                "FORM_TYPE" => {
                    if value != "http://jabber.org/protocol/muc#roomconfig" {
                        return Err(format!("FORM_TYPE {value:?}"));
                    }
                }
                "muc#roomconfig_roomname" => c.name = value,
                "muc#roomconfig_roomdesc" => c.description = value,
                "muc#roomconfig_persistentroom" => c.persistent = boolean()?,
                "muc#roomconfig_publicroom" => c.public = boolean()?,
                "muc#roomconfig_membersonly" => c.members_only = boolean()?,
                "muc#roomconfig_moderatedroom" => c.moderated = boolean()?,
                "muc#roomconfig_passwordprotectedroom" => protected = Some(boolean()?),
                "muc#roomconfig_roomsecret" => secret = Some(value),
                "muc#roomconfig_changesubject" => c.change_subject = boolean()?,
                "muc#roomconfig_allowinvites" => c.allow_invites = boolean()?,
                "muc#roomconfig_enablearchiving" | "mam" => c.archive = boolean()?,
                "muc#roomconfig_maxusers" => {
                    c.max_users = match value.parse::<usize>() {
                        Ok(n) if (1..=max_users_cap).contains(&n) => n,
                        _ => {
                            return Err(format!(
                                "muc#roomconfig_maxusers: {value:?} is not 1 to {max_users_cap}"
                            ))
                        }
                    }
                }
                "muc#roomconfig_whois" => {
                    c.whois = match value.as_str() {
                        "moderators" => Whois::Moderators,
                        "anyone" => Whois::Anyone,
                        v => return Err(format!("muc#roomconfig_whois: {v:?}")),
                    }
                }
                "muc#roomconfig_allowpm" => {
                    c.allow_pm = AllowPm::parse(&value)
                        .ok_or_else(|| format!("muc#roomconfig_allowpm: {value:?}"))?
                }
                other => return Err(format!("unknown field {other:?}")),
            }
        }
        match (protected, secret) {
            (Some(false), _) => c.password = None,
            (_, Some(s)) if !s.is_empty() => c.password = Some(s),
            (Some(true), _) if c.password.is_none() => {
                return Err("muc#roomconfig_roomsecret: a protected room needs one".into())
            }
            _ => {}
        }
        Ok(c)
    }

    /// The configuration as saved text (one `key=value` line each, values escaped).
    pub fn to_saved(&self) -> String {
        let b = |v: bool| if v { "1" } else { "0" };
        let mut out = String::new();
        for (k, v) in [
            ("name", self.name.as_str()),
            ("description", self.description.as_str()),
            ("persistent", b(self.persistent)),
            ("public", b(self.public)),
            ("members_only", b(self.members_only)),
            ("moderated", b(self.moderated)),
            ("change_subject", b(self.change_subject)),
            ("allow_invites", b(self.allow_invites)),
            ("archive", b(self.archive)),
            (
                "whois",
                match self.whois {
                    Whois::Moderators => "moderators",
                    Whois::Anyone => "anyone",
                },
            ),
            ("allow_pm", self.allow_pm.as_str()),
        ] {
            push_line(&mut out, k, v);
        }
        push_line(&mut out, "max_users", &self.max_users.to_string());
        if let Some(p) = &self.password {
            push_line(&mut out, "password", p);
        }
        out
    }

    /// Reads [`RoomConfig::to_saved`]'s text back; unknown keys are skipped (a newer version
    /// may have written them), missing ones keep `d`'s values.
    pub fn from_saved(lines: &[(String, String)], d: &Defaults) -> RoomConfig {
        let mut c = RoomConfig::new(d);
        for (k, v) in lines {
            let b = v == "1";
            match k.as_str() {
                "name" => c.name = v.clone(),
                "description" => c.description = v.clone(),
                "persistent" => c.persistent = b,
                "public" => c.public = b,
                "members_only" => c.members_only = b,
                "moderated" => c.moderated = b,
                "change_subject" => c.change_subject = b,
                "allow_invites" => c.allow_invites = b,
                "archive" => c.archive = b,
                "whois" => {
                    c.whois = if v == "anyone" {
                        Whois::Anyone
                    } else {
                        Whois::Moderators
                    }
                }
                "allow_pm" => c.allow_pm = AllowPm::parse(v).unwrap_or(AllowPm::Anyone),
                "max_users" => c.max_users = v.parse().unwrap_or(d.max_users),
                "password" => c.password = Some(v.clone()),
                _ => {}
            }
        }
        c
    }
}

fn field(var: &str, typ: &str, values: &[&str]) -> Element {
    let mut f = stanza::new("field", ns::DATA_FORMS, &[("var", var), ("type", typ)]);
    for v in values {
        f.append_child(stanza::text("value", ns::DATA_FORMS, *v));
    }
    f
}

fn option(v: &str) -> Element {
    let mut o = stanza::new("option", ns::DATA_FORMS, &[("label", v)]);
    o.append_child(stanza::text("value", ns::DATA_FORMS, v));
    o
}

/// Appends `key=value\n`, escaping `\` and newlines in the value.
pub(crate) fn push_line(out: &mut String, key: &str, value: &str) {
    out.push_str(key);
    out.push('=');
    for ch in value.chars() {
        match ch {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c => out.push(c),
        }
    }
    out.push('\n');
}

/// Splits saved text into its `(key, value)` lines, unescaped.
pub(crate) fn parse_lines(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for line in text.lines() {
        let Some((k, v)) = line.split_once('=') else {
            continue;
        };
        let mut value = String::with_capacity(v.len());
        let mut chars = v.chars();
        while let Some(c) = chars.next() {
            if c == '\\' {
                match chars.next() {
                    Some('n') => value.push('\n'),
                    Some('r') => value.push('\r'),
                    Some(o) => value.push(o),
                    None => {}
                }
            } else {
                value.push(c);
            }
        }
        out.push((k.to_string(), value));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn defaults() -> Defaults {
        Defaults {
            public: true,
            persistent: false,
            archive: true,
            max_users: 200,
        }
    }

    fn submit(fields: &[(&str, &str)]) -> Element {
        let mut x = stanza::new("x", ns::DATA_FORMS, &[("type", "submit")]);
        for (var, v) in fields {
            x.append_child(field(var, "text-single", &[v]));
        }
        x
    }

    /// Submitted fields, then a check of the result or a part of the error.
    type Row<'a> = (
        &'a [(&'a str, &'a str)],
        Result<fn(&RoomConfig) -> bool, &'a str>,
    );

    #[test]
    fn forms_apply_and_refuse() {
        let c = RoomConfig::new(&defaults());
        let long = "n".repeat(2000);
        let table: &[Row<'_>] = &[
            (
                &[("muc#roomconfig_membersonly", "1")],
                Ok(|c| c.members_only),
            ),
            (&[("mam", "0")], Ok(|c| !c.archive)),
            (
                &[
                    ("muc#roomconfig_passwordprotectedroom", "1"),
                    ("muc#roomconfig_roomsecret", "s3"),
                ],
                Ok(|c| c.password.as_deref() == Some("s3")),
            ),
            (
                &[("muc#roomconfig_maxusers", "100")],
                Ok(|c| c.max_users == 100),
            ),
            (&[("muc#roomconfig_maxusers", "5000")], Err("maxusers")),
            (&[("muc#roomconfig_maxusers", "0")], Err("maxusers")),
            (
                &[("muc#roomconfig_whois", "anyone")],
                Ok(|c| c.whois == Whois::Anyone),
            ),
            (&[("muc#roomconfig_whois", "nobody")], Err("whois")),
            (
                &[("muc#roomconfig_allowpm", "none")],
                Ok(|c| c.allow_pm == AllowPm::None),
            ),
            (&[("muc#roomconfig_bogus", "1")], Err("unknown field")),
            (&[("muc#roomconfig_publicroom", "maybe")], Err("boolean")),
            (
                &[("muc#roomconfig_passwordprotectedroom", "1")],
                Err("needs one"),
            ),
            (&[("muc#roomconfig_roomname", &long)], Err("longer")),
        ];
        for (fields, want) in table {
            let got = c.apply_form(&submit(fields), 1000, 1024);
            match (got, want) {
                (Ok(n), Ok(check)) => assert!(check(&n), "{fields:?}"),
                (Err(e), Err(part)) => assert!(e.contains(part), "{fields:?}: {e}"),
                (got, _) => panic!("{fields:?}: {got:?}"),
            }
        }
    }

    #[test]
    fn the_form_round_trips_and_saved_text_too() {
        let mut c = RoomConfig::new(&defaults());
        c.name = "Tea\nroom \\ x".into();
        c.password = Some("pw".into());
        c.whois = Whois::Anyone;
        let form = c.form(1000);
        let mut submitted = form.clone();
        stanza::set(&mut submitted, "type", "submit");
        assert_eq!(c.apply_form(&submitted, 1000, 1024).unwrap(), c);
        let back = RoomConfig::from_saved(&parse_lines(&c.to_saved()), &defaults());
        assert_eq!(back, c);
    }
}
