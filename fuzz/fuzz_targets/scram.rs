//! Runs SCRAM (both hashes, known and unknown user) and PLAIN on arbitrary messages. Oracle:
//! no panic, and nothing but a correct proof is ever accepted.
#![no_main]

use herald_proto::sasl::{decode_payload, derive_keys, parse_plain, ScramHash, ScramServer};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = parse_plain(data);
    let _ = std::str::from_utf8(data).map(decode_payload);
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    // The two client messages are separated by the first 0xff byte (never valid UTF-8).
    let (first, last) = match rest.iter().position(|&b| b == 0xff) {
        Some(i) => (&rest[..i], &rest[i + 1..]),
        None => (rest, &b""[..]),
    };
    let hash = if flags & 1 != 0 {
        ScramHash::Sha256
    } else {
        ScramHash::Sha1
    };
    let mut s = ScramServer::with_nonce(hash, "srvnonce");
    if s.client_first(first).is_err() {
        assert!(s.client_final(last).is_err());
        return;
    }
    let keys = (flags & 2 != 0).then(|| derive_keys(hash, "pencil", b"salt", 1).expect("keys"));
    let known = keys.is_some();
    let sf = s.server_first(keys);
    assert!(sf.starts_with(b"r="));
    if let Ok(v) = s.client_final(last) {
        // Forging a proof without the password is not something a fuzzer should manage.
        assert!(known, "unknown user authenticated");
        assert!(v.starts_with(b"v="));
    }
    assert!(
        s.client_final(last).is_err(),
        "exchange must not be replayable"
    );
});
