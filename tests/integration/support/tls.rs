//! TLS material for one test, made with rcgen.

use std::path::PathBuf;

/// TLS material for one test: a CA, a server certificate for 127.0.0.1 and
/// localhost, a client certificate.
pub struct Tls {
    dir: tempfile::TempDir,
}

impl Tls {
    pub fn new() -> Self {
        use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
        let dir = tempfile::tempdir().expect("tls dir");
        let write = |name: &str, text: String| {
            std::fs::write(dir.path().join(name), text).expect("write pem");
        };
        let ca_key = KeyPair::generate().expect("ca key");
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("ca params");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca_cert = ca_params.self_signed(&ca_key).expect("ca cert");
        let issuer = Issuer::new(ca_params, ca_key);
        write("ca.pem", ca_cert.pem());
        for (name, sans) in [
            (
                "server",
                vec!["127.0.0.1".to_owned(), "localhost".to_owned()],
            ),
            ("client", vec!["weir-host".to_owned()]),
        ] {
            let key = KeyPair::generate().expect("key");
            let cert = CertificateParams::new(sans)
                .expect("params")
                .signed_by(&key, &issuer)
                .expect("sign cert");
            write(&format!("{name}.pem"), cert.pem());
            write(&format!("{name}-key.pem"), key.serialize_pem());
        }
        Self { dir }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}
