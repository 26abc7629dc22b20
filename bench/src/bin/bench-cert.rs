//! `bench-cert DIR`: writes a self-signed certificate for 127.0.0.1 and localhost to
//! `DIR/cert.pem` and its key to `DIR/key.pem`, for the TLS benchmark; made here rather
//! than with openssl, so the benchmark needs nothing the build does not bring.

use std::path::PathBuf;

fn main() {
    let dir = PathBuf::from(std::env::args().nth(1).expect("usage: bench-cert DIR"));
    let names = vec!["127.0.0.1".to_string(), "localhost".to_string()];
    let certified = rcgen::generate_simple_self_signed(names).expect("a self-signed certificate");
    std::fs::write(dir.join("cert.pem"), certified.cert.pem()).expect("write cert.pem");
    std::fs::write(dir.join("key.pem"), certified.signing_key.serialize_pem())
        .expect("write key.pem");
}
