//! XEP-0115 entity capabilities: the verification string (§5.1) of a disco#info answer, the
//! `<c/>` element that carries it, and the §5.4 checks a receiver makes before trusting a
//! hash (duplicate identities or features, malformed forms).
//!
//! Pure: the server computes its own `ver` once from its disco#info; whoever verifies a
//! contact's caps (PEP `+notify`) calls [`ver_of_info`] on the answer it got and compares.

use base64::Engine as _;
use herald_proto::Element;
use sha1::{Digest, Sha1};

use herald_proto::ns;

/// The namespace of `xml:lang`.
const XML_NS: &str = "http://www.w3.org/XML/1998/namespace";

/// XEP-0115 namespace.
pub const NS: &str = ns::CAPS;

/// The `node` Herald puts in its own `<c/>` (XEP-0115 §4: a URI identifying the software,
/// usually its homepage). Herald has no public homepage yet, hence the reserved `.invalid`
/// name (RFC 2606); clients only use it to ask `node#ver` back.
pub const NODE: &str = "https://herald.invalid";

/// One `<identity/>` of a disco#info answer.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Identity {
    /// `category`.
    pub category: String,
    /// `type`.
    pub typ: String,
    /// `xml:lang`, empty when absent.
    pub lang: String,
    /// `name`, empty when absent.
    pub name: String,
}

/// One XEP-0004 form of a disco#info answer (XEP-0128), as the hash sees it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Form {
    /// The value of its hidden `FORM_TYPE` field.
    pub form_type: String,
    /// Its other fields: `var` and values.
    pub fields: Vec<(String, Vec<String>)>,
}

/// Why a disco#info answer cannot be hashed (XEP-0115 §5.4 step 3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Invalid {
    /// Two identities with the same category, type, lang and name.
    DuplicateIdentity,
    /// The same feature twice.
    DuplicateFeature,
    /// Two forms with the same FORM_TYPE.
    DuplicateForm,
    /// A form whose FORM_TYPE has values that differ (§5.4 step 3.5).
    BadFormType,
    /// Not a disco#info `<query/>`.
    NotInfo,
}

/// The §5.1 verification string: SHA-1 over identities, features and forms, each sorted,
/// base64-encoded. Forms without a FORM_TYPE must have been left out by the caller
/// (§5.4 step 3.6 ignores them).
pub fn ver(identities: &[Identity], features: &[&str], forms: &[Form]) -> String {
    let mut s = String::new();
    let mut ids: Vec<&Identity> = identities.iter().collect();
    ids.sort_by(|a, b| {
        (&a.category, &a.typ, &a.lang, &a.name).cmp(&(&b.category, &b.typ, &b.lang, &b.name))
    });
    for i in ids {
        s.push_str(&format!("{}/{}/{}/{}<", i.category, i.typ, i.lang, i.name));
    }
    let mut fs: Vec<&str> = features.to_vec();
    fs.sort_unstable();
    for f in fs {
        s.push_str(f);
        s.push('<');
    }
    let mut forms: Vec<&Form> = forms.iter().collect();
    forms.sort_by(|a, b| a.form_type.cmp(&b.form_type));
    for form in forms {
        s.push_str(&form.form_type);
        s.push('<');
        let mut fields: Vec<&(String, Vec<String>)> = form.fields.iter().collect();
        fields.sort_by(|a, b| a.0.cmp(&b.0));
        for (var, values) in fields {
            s.push_str(var);
            s.push('<');
            let mut values: Vec<&String> = values.iter().collect();
            values.sort();
            for v in values {
                s.push_str(v);
                s.push('<');
            }
        }
    }
    base64::engine::general_purpose::STANDARD.encode(Sha1::digest(s.as_bytes()))
}

/// The verification string of a disco#info `<query/>`, after the §5.4 checks: duplicates
/// and forms whose FORM_TYPE is not one hidden value make it unverifiable; forms with no
/// FORM_TYPE at all are ignored.
pub fn ver_of_info(query: &Element) -> Result<String, Invalid> {
    let mut identities: Vec<Identity> = Vec::new();
    let mut features: Vec<String> = Vec::new();
    let mut forms: Vec<Form> = Vec::new();
    for c in query.children() {
        if c.is("identity", ns::DISCO_INFO) {
            let attr = |n: &str| c.attr(n).unwrap_or("").to_string();
            let id = Identity {
                category: attr("category"),
                typ: attr("type"),
                lang: c.attr_ns(XML_NS, "lang").unwrap_or("").to_string(),
                name: attr("name"),
            };
            if identities.contains(&id) {
                return Err(Invalid::DuplicateIdentity);
            }
            identities.push(id);
        } else if c.is("feature", ns::DISCO_INFO) {
            let f = c.attr("var").unwrap_or("").to_string();
            if features.contains(&f) {
                return Err(Invalid::DuplicateFeature);
            }
            features.push(f);
        } else if c.is("x", ns::DATA_FORMS) {
            let Some(form) = parse_form(c)? else { continue };
            if forms.iter().any(|f| f.form_type == form.form_type) {
                return Err(Invalid::DuplicateForm);
            }
            forms.push(form);
        }
    }
    let fs: Vec<&str> = features.iter().map(String::as_str).collect();
    Ok(ver(&identities, &fs, &forms))
}

/// A form as the hash sees it; None when it has no FORM_TYPE (ignored, §5.4 step 3.6).
fn parse_form(x: &Element) -> Result<Option<Form>, Invalid> {
    let mut form_type = None;
    let mut fields = Vec::new();
    for f in x.children().filter(|f| f.is("field", ns::DATA_FORMS)) {
        let values: Vec<String> = f
            .children()
            .filter(|v| v.is("value", ns::DATA_FORMS))
            .map(|v| v.text())
            .collect();
        let var = f.attr("var").unwrap_or("");
        if var == "FORM_TYPE" {
            // §5.4 step 3.5: more than one FORM_TYPE value, unless all the same, is ill-formed.
            let mut distinct = values.clone();
            distinct.sort();
            distinct.dedup();
            if form_type.is_some() || distinct.len() != 1 {
                return Err(Invalid::BadFormType);
            }
            // §5.4 step 3.6: a FORM_TYPE that is not hidden: the form is ignored.
            if f.attr("type") != Some("hidden") {
                return Ok(None);
            }
            form_type = distinct.into_iter().next();
        } else {
            fields.push((var.to_string(), values));
        }
    }
    Ok(form_type.map(|form_type| Form { form_type, fields }))
}

/// The `<c/>` element announcing `ver` (XEP-0115 §4, `hash='sha-1'`).
pub fn element(node: &str, ver: &str) -> Element {
    crate::stanza::new("c", NS, &[("hash", "sha-1"), ("node", node), ("ver", ver)])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(category: &str, typ: &str, lang: &str, name: &str) -> Identity {
        Identity {
            category: category.into(),
            typ: typ.into(),
            lang: lang.into(),
            name: name.into(),
        }
    }

    const FEATURES: [&str; 4] = [
        "http://jabber.org/protocol/caps",
        "http://jabber.org/protocol/disco#info",
        "http://jabber.org/protocol/disco#items",
        "http://jabber.org/protocol/muc",
    ];

    #[test]
    fn xep_0115_simple_example() {
        // §5.2.
        let v = ver(&[id("client", "pc", "", "Exodus 0.9.1")], &FEATURES, &[]);
        assert_eq!(v, "QgayPKawpkPSDYmwT/WM94uAlu0=");
    }

    #[test]
    fn xep_0115_complex_example() {
        // §5.3, identities and features given out of order.
        let form = Form {
            form_type: "urn:xmpp:dataforms:softwareinfo".into(),
            fields: vec![
                ("os_version".into(), vec!["10.5.1".into()]),
                ("ip_version".into(), vec!["ipv6".into(), "ipv4".into()]),
                ("os".into(), vec!["Mac".into()]),
                ("software".into(), vec!["Psi".into()]),
                ("software_version".into(), vec!["0.11".into()]),
            ],
        };
        let mut features = FEATURES;
        features.reverse();
        let v = ver(
            &[
                id("client", "pc", "el", "Ψ 0.11"),
                id("client", "pc", "en", "Psi 0.11"),
            ],
            &features,
            &[form],
        );
        assert_eq!(v, "q07IKJEyjvHSyhy//CH0CxmKi8w=");
    }

    #[test]
    fn the_complex_example_from_its_xml() {
        let q: Element = "<query xmlns='http://jabber.org/protocol/disco#info'>\
            <identity xml:lang='en' category='client' name='Psi 0.11' type='pc'/>\
            <identity xml:lang='el' category='client' name='Ψ 0.11' type='pc'/>\
            <feature var='http://jabber.org/protocol/caps'/>\
            <feature var='http://jabber.org/protocol/disco#info'/>\
            <feature var='http://jabber.org/protocol/disco#items'/>\
            <feature var='http://jabber.org/protocol/muc'/>\
            <x xmlns='jabber:x:data' type='result'>\
              <field var='FORM_TYPE' type='hidden'><value>urn:xmpp:dataforms:softwareinfo</value></field>\
              <field var='ip_version' type='text-multi'><value>ipv4</value><value>ipv6</value></field>\
              <field var='os'><value>Mac</value></field>\
              <field var='os_version'><value>10.5.1</value></field>\
              <field var='software'><value>Psi</value></field>\
              <field var='software_version'><value>0.11</value></field>\
            </x></query>"
            .parse()
            .unwrap();
        assert_eq!(ver_of_info(&q), Ok("q07IKJEyjvHSyhy//CH0CxmKi8w=".into()));
    }

    #[test]
    fn duplicates_and_bad_form_types_are_unverifiable() {
        let parse = |s: &str| -> Element {
            format!("<query xmlns='http://jabber.org/protocol/disco#info'>{s}</query>")
                .parse()
                .unwrap()
        };
        let q =
            parse("<identity category='client' type='pc'/><identity category='client' type='pc'/>");
        assert_eq!(ver_of_info(&q), Err(Invalid::DuplicateIdentity));
        let q = parse("<feature var='a'/><feature var='a'/>");
        assert_eq!(ver_of_info(&q), Err(Invalid::DuplicateFeature));
        let form = "<x xmlns='jabber:x:data' type='result'><field var='FORM_TYPE' type='hidden'><value>t</value></field></x>";
        let q = parse(&format!("{form}{form}"));
        assert_eq!(ver_of_info(&q), Err(Invalid::DuplicateForm));
        let q = parse("<x xmlns='jabber:x:data' type='result'><field var='FORM_TYPE' type='hidden'><value>t</value><value>u</value></field></x>");
        assert_eq!(ver_of_info(&q), Err(Invalid::BadFormType));
        // §5.4 step 3.6: a FORM_TYPE that is not hidden leaves the form out.
        let q = parse("<feature var='a'/><x xmlns='jabber:x:data' type='result'><field var='FORM_TYPE'><value>t</value></field></x>");
        assert_eq!(ver_of_info(&q), Ok(ver(&[], &["a"], &[])));
        // No FORM_TYPE at all: the form is ignored.
        let q = parse("<feature var='a'/><x xmlns='jabber:x:data' type='result'><field var='x'><value>1</value></field></x>");
        assert_eq!(ver_of_info(&q), Ok(ver(&[], &["a"], &[])));
    }

    #[test]
    fn the_element_carries_hash_node_and_ver() {
        let c = element(NODE, "abc=");
        assert!(c.is("c", NS));
        assert_eq!(c.attr("hash"), Some("sha-1"));
        assert_eq!(c.attr("node"), Some(NODE));
        assert_eq!(c.attr("ver"), Some("abc="));
    }
}
