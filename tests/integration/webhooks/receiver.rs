//! The webhook receiver of the tests: axum on 127.0.0.1, answering as a test
//! scripts it, and checking every signature with the Standard Webhooks
//! project's own library (`standardwebhooks`), never with weir's code.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};

use crate::support::PATIENCE;

/// How the receiver answers one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reply {
    Status(u16),
    /// Never answer (a receiver that hangs, or a host killed mid-POST).
    Hang,
    /// 200, after this many milliseconds (a POST still under way).
    SlowOk(u64),
}

/// One request as the receiver saw it.
#[derive(Debug, Clone)]
pub struct Hit {
    pub headers: HeaderMap,
    pub body: bytes::Bytes,
    /// The independent library's verdict on the signature.
    pub verified: Result<(), String>,
    pub reply: Reply,
}

struct Script {
    /// Replies for the next requests, in order...
    first: VecDeque<Reply>,
    /// ...then this one for every request after.
    then: Reply,
    hits: Vec<Hit>,
}

pub struct Receiver {
    pub addr: SocketAddr,
    script: Arc<Mutex<Script>>,
    task: tokio::task::JoinHandle<()>,
}

type Shared = (Arc<Mutex<Script>>, Arc<standardwebhooks::Webhook>);

impl Receiver {
    pub async fn start(secret: &str, first: &[Reply], then: Reply) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the receiver");
        Self::serve(listener, secret, first, then)
    }

    /// Serve on a port chosen earlier (the receiver "comes back").
    pub async fn start_on(addr: SocketAddr, secret: &str, then: Reply) -> Self {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .expect("bind the receiver's old port again");
        Self::serve(listener, secret, &[], then)
    }

    fn serve(
        listener: tokio::net::TcpListener,
        secret: &str,
        first: &[Reply],
        then: Reply,
    ) -> Self {
        let addr = listener.local_addr().expect("its address");
        let script = Arc::new(Mutex::new(Script {
            first: first.iter().copied().collect(),
            then,
            hits: Vec::new(),
        }));
        let verifier = Arc::new(
            standardwebhooks::Webhook::new(secret).expect("the spec library reads the secret"),
        );
        let app = axum::Router::new()
            .route("/hooks/{name}", axum::routing::post(accept))
            .with_state((script.clone(), verifier));
        let task = tokio::spawn(async move {
            axum::serve(listener, app)
                .await
                .expect("the receiver serves");
        });
        Self { addr, script, task }
    }

    pub fn url(&self, name: &str) -> String {
        format!("http://{}/hooks/{name}?token=URLTOKEN", self.addr)
    }

    pub fn set_then(&self, then: Reply) {
        self.script.lock().expect("lock").then = then;
    }

    pub fn hits(&self) -> Vec<Hit> {
        self.script.lock().expect("lock").hits.clone()
    }

    /// Requests answered 2xx.
    pub fn delivered(&self) -> Vec<Hit> {
        self.hits()
            .into_iter()
            .filter(|h| match h.reply {
                Reply::Status(s) => (200..300).contains(&s),
                Reply::SlowOk(_) => true,
                Reply::Hang => false,
            })
            .collect()
    }

    pub async fn wait_hits(&self, n: usize, what: &str) -> Vec<Hit> {
        wait_until(what, || self.hits().len() >= n).await;
        self.hits()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn accept(
    State((script, verifier)): State<Shared>,
    headers: HeaderMap,
    body: bytes::Bytes,
) -> StatusCode {
    let verified = verifier.verify(&body, &headers).map_err(|e| e.to_string());
    let reply = {
        let mut script = script.lock().expect("lock");
        let reply = script.first.pop_front().unwrap_or(script.then);
        script.hits.push(Hit {
            headers,
            body,
            verified,
            reply,
        });
        reply
    };
    match reply {
        Reply::Status(code) => StatusCode::from_u16(code).expect("a status code"),
        Reply::Hang => std::future::pending().await,
        Reply::SlowOk(ms) => {
            tokio::time::sleep(Duration::from_millis(ms)).await;
            StatusCode::OK
        }
    }
}

pub async fn wait_until(what: &str, done: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while !done() {
        assert!(tokio::time::Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A TLS listener whose certificate (self-signed, for 127.0.0.1) no trusted
/// root signed: it answers handshakes as far as a client goes. Its address.
pub fn untrusted_tls() -> SocketAddr {
    let key = rcgen::generate_simple_self_signed(vec!["127.0.0.1".into(), "localhost".into()])
        .expect("a self-signed certificate");
    let der = rustls::pki_types::PrivateKeyDer::Pkcs8(key.signing_key.serialize_der().into());
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_no_client_auth()
        .with_single_cert(vec![key.cert.der().clone()], der)
        .expect("the server's certificate");
    let config = Arc::new(config);
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    std::thread::spawn(move || {
        for tcp in listener.incoming() {
            let Ok(mut tcp) = tcp else { return };
            let config = config.clone();
            std::thread::spawn(move || {
                let Ok(mut conn) = rustls::ServerConnection::new(config) else {
                    return;
                };
                while conn.is_handshaking() && conn.complete_io(&mut tcp).is_ok() {}
            });
        }
    });
    addr
}
