//! Feeds arbitrary bytes in arbitrary chunks through the stream decoder into the c2s
//! negotiation machine, answering its actions as the server would (fixed credentials).
//! Oracles (in `run_bytes`): no panic; nothing after a final action; a bind or resume only
//! after authentication; PLAIN never offered in the clear when encryption is required.
#![no_main]

use herald_session::negotiate::run_bytes;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    run_bytes(data, std::time::Instant::now());
});
