//! Reading an app server's answer (crates/herald-push/RULES.md §9): which errors count
//! against a registration, which are retried, and who may answer.

use herald_proto::error::ErrorType;
use herald_push::engine::Reply;
use herald_push::reply::{answers_for, read, unreachable};
use minidom::Element;

fn iq(xml: &str) -> Element {
    xml.parse().unwrap()
}

fn error(typ: &str, cond: &str) -> Element {
    iq(&format!(
        "<iq xmlns='jabber:client' type='error' id='p1' from='push.example.net'>\
         <error type='{typ}'><{cond} xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></iq>"
    ))
}

#[test]
fn which_answers_count() {
    let table: &[(Element, Reply, Option<ErrorType>)] = &[
        (
            iq("<iq xmlns='jabber:client' type='result' id='p1'/>"),
            Reply::Result,
            None,
        ),
        // The app server's verdict: counted.
        (
            error("cancel", "item-not-found"),
            Reply::Error {
                wait: false,
                condition: "item-not-found".into(),
            },
            Some(ErrorType::Cancel),
        ),
        (
            error("auth", "not-authorized"),
            Reply::Error {
                wait: false,
                condition: "not-authorized".into(),
            },
            Some(ErrorType::Auth),
        ),
        // Temporary: retried, not counted.
        (
            error("wait", "resource-constraint"),
            Reply::Error {
                wait: true,
                condition: "resource-constraint".into(),
            },
            Some(ErrorType::Wait),
        ),
        // The path failed, not the app server: retried, not counted, whatever the type.
        (
            error("cancel", "remote-server-not-found"),
            Reply::Error {
                wait: true,
                condition: "remote-server-not-found".into(),
            },
            Some(ErrorType::Cancel),
        ),
        (
            error("cancel", "remote-server-timeout"),
            Reply::Error {
                wait: true,
                condition: "remote-server-timeout".into(),
            },
            Some(ErrorType::Cancel),
        ),
        // An error without a readable condition still counts.
        (
            iq("<iq xmlns='jabber:client' type='error' id='p1'/>"),
            Reply::Error {
                wait: false,
                condition: "undefined-condition".into(),
            },
            Some(ErrorType::Cancel),
        ),
    ];
    for (el, reply, typ) in table {
        assert_eq!(
            read(el),
            Some((reply.clone(), *typ)),
            "{}",
            String::from(el)
        );
    }
    assert_eq!(
        read(&iq("<iq xmlns='jabber:client' type='set' id='p1'/>")),
        None
    );
    // A local component that is not connected is our outage: a wait.
    assert!(matches!(
        unreachable(),
        (Reply::Error { wait: true, .. }, Some(ErrorType::Wait))
    ));
}

#[test]
fn only_the_app_server_answers() {
    assert!(answers_for("push.example.net", "push.example.net"));
    assert!(answers_for("PUSH.example.net", "push.example.net"));
    assert!(answers_for(
        "app@push.example.net/r",
        "app@push.example.net"
    ));
    assert!(!answers_for(
        "app@push.example.net",
        "app@push.example.net/r"
    ));
    assert!(!answers_for("evil.example", "push.example.net"));
    assert!(!answers_for("romeo@push.example.net", "push.example.net"));
    assert!(!answers_for("a@b@c", "push.example.net"));
}
