//! The connection to NATS: credentials and TLS from `[nats]`, a first
//! connection tried again while no server answers, and reconnects for good
//! after that. A server that *answers* and turns the host down — its
//! credentials refused, its certificate not trusted, TLS spoken where the
//! server does not, or not where the server does — ends start-up at once with an error naming the setting
//! to fix: trying again cannot mend those, and a host that waits in silence
//! looks like one that works.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use async_nats::{Client, ConnectError, ConnectErrorKind, ConnectOptions, rustls};

use super::server;
use crate::auth::secret::{NatsCredentials, credentials_source, nats_credentials};
use crate::config::NatsConfig;

/// How often a start-up that finds no server says so again.
const WAITING_EVERY: Duration = Duration::from_secs(10);

/// The longest pause between two rounds of the server list at start-up.
const MAX_DELAY: Duration = Duration::from_secs(2);

/// Connect to NATS. Until a server answers, the server list is tried again
/// and again (a host may start before its server); once connected, the
/// client reconnects for good, so a host outlives a restart of its server.
/// A refusal ([`turned_down`]) fails at once.
pub async fn connect(config: &NatsConfig) -> anyhow::Result<Client> {
    let credentials = nats_credentials(config)?;
    let source: Arc<str> = credentials_source(config)
        .unwrap_or_else(|| "no credentials".to_owned())
        .into();
    let url = config.url.to_string();
    let started = Instant::now();
    let mut said = None::<Instant>;
    let mut delay = Duration::from_millis(50);
    let client = loop {
        let options = options(config, &credentials, source.clone()).await?;
        let error = match options.connect(config.url.for_client()).await {
            Ok(client) => break client,
            Err(error) => error,
        };
        if let Some(reason) = turned_down(&error, config) {
            bail!("cannot connect to NATS at {url}: {reason}");
        }
        if said.is_none_or(|at| at.elapsed() >= WAITING_EVERY) {
            tracing::warn!(
                url = %url,
                "no NATS server answers yet ({} s so far; trying again): {error}",
                started.elapsed().as_secs(),
            );
            said = Some(Instant::now());
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(MAX_DELAY);
    };
    let info = client.server_info();
    let features =
        server::Features::of(&info.version).with_context(|| format!("the NATS server at {url}"))?;
    server::announce(&features, &info.server_name);
    Ok(client)
}

/// The connection as the metrics and `/readyz` see it, read at scrape time.
#[derive(Debug)]
pub struct Link(pub Client);

impl crate::telemetry::metrics::Connection for Link {
    fn connected(&self) -> bool {
        self.0.connection_state() == async_nats::connection::State::Connected
    }

    fn reconnects(&self) -> u64 {
        let connects = self
            .0
            .statistics()
            .connects
            .load(std::sync::atomic::Ordering::Relaxed);
        connects.saturating_sub(1)
    }
}

/// The client's options for one attempt. Secrets come from files or the
/// environment and go straight to the client: they are in no message and no
/// log line. `source` names them in the log lines of a refused reconnect.
async fn options(
    config: &NatsConfig,
    credentials: &NatsCredentials,
    source: Arc<str>,
) -> anyhow::Result<ConnectOptions> {
    let mut options = match credentials {
        NatsCredentials::None => ConnectOptions::new(),
        NatsCredentials::Token(token) => ConnectOptions::new().token(token.expose().to_owned()),
        NatsCredentials::UserPassword { user, password } => {
            ConnectOptions::new().user_and_password(user.clone(), password.expose().to_owned())
        }
        NatsCredentials::NkeySeed(seed) => ConnectOptions::new().nkey(seed.expose().to_owned()),
        NatsCredentials::CredsFile(path) => ConnectOptions::new()
            .credentials_file(path)
            .await
            .with_context(|| format!("nats.creds_file: cannot use {}", path.display()))?,
    };
    if let Some(ca) = &config.tls_ca_file {
        options = options.add_root_certificates(ca.clone());
    }
    if let (Some(cert), Some(key)) = (&config.tls_cert_file, &config.tls_key_file) {
        options = options.add_client_certificate(cert.clone(), key.clone());
    }
    if config.require_tls {
        options = options.require_tls(true);
    }
    if config.tls_first {
        options = options.tls_first();
    }
    if !config.randomize_servers {
        options = options.retain_servers_order();
    }
    Ok(options
        .name(&config.name)
        .subscription_capacity(config.subscription_capacity)
        .max_reconnects(None)
        .event_callback(move |event| {
            let source = source.clone();
            async move { log_event(event, &source) }
        }))
}

fn log_event(event: async_nats::Event, source: &str) {
    use async_nats::{ClientError, Event, ServerError};
    match event {
        Event::SlowConsumer(sid) => tracing::error!(
            subscription = sid,
            "NATS slow consumer: the client dropped messages of a subscription"
        ),
        Event::Disconnected => tracing::warn!("disconnected from NATS, reconnecting"),
        Event::Connected => tracing::info!("connected to NATS"),
        // A reconnect the server refused: the client tries again (the
        // credentials may be restored), and says so each time.
        Event::ClientError(ClientError::Other(text))
            if text == ConnectErrorKind::AuthorizationViolation.to_string() =>
        {
            tracing::error!(
                "NATS refused {source} on reconnecting (authorization violation); trying again"
            )
        }
        Event::ServerError(ServerError::AuthorizationViolation) => {
            tracing::error!("NATS revoked {source} (authorization violation)")
        }
        other => tracing::debug!("NATS: {other}"),
    }
}

/// Why the server turned this host down for good, if it did: the refusal,
/// naming the settings to fix. `None` for what may pass (no server listening
/// yet, a timeout, a connection that broke).
fn turned_down(error: &ConnectError, config: &NatsConfig) -> Option<String> {
    let source = credentials_source(config);
    let credentials = || match &source {
        Some(source) => format!("the server refused {source}"),
        None => "the server requires credentials and [nats] gives none (token_file or \
                 token_env, user with password_file or password_env, nkey_seed_file, creds_file)"
            .to_owned(),
    };
    match error.kind() {
        ConnectErrorKind::AuthorizationViolation => {
            return Some(format!("{} (authorization violation)", credentials()));
        }
        ConnectErrorKind::Authentication => {
            return Some(format!(
                "cannot sign the server's challenge with {}",
                source.as_deref().unwrap_or("no credentials")
            ));
        }
        ConnectErrorKind::Tls => {
            return Some(format!(
                "TLS setup failed ({error}): check {}",
                tls_files(config)
            ));
        }
        _ => {}
    }
    // A server with `handshake_first` says nothing until the client starts
    // TLS, then gives up on it and closes: a client that waits for its INFO
    // gets nothing at all. A NATS server that accepted a connection always
    // says something first, so no retry will hear more.
    if !config.tls_first && error.to_string().contains("expected INFO, got nothing") {
        return Some(
            "the server closed the connection without a word (no INFO): a server with \
             tls { handshake_first: true } waits for TLS first: set nats.tls_first = true"
                .to_owned(),
        );
    }
    // An authentication error the client does not name (an expired or
    // revoked user JWT, an authentication timeout) arrives as a server error.
    if let Some(server) = find::<async_nats::ServerError>(error) {
        let text = server.to_string().to_lowercase();
        if text.contains("authentication") || text.contains("authorization") {
            return Some(format!("{} ({server})", credentials()));
        }
    }
    let tls = tls_error(error)?;
    Some(match tls {
        rustls::Error::InvalidCertificate(_) => format!(
            "the server's certificate is not trusted ({tls}): {}",
            match &config.tls_ca_file {
                Some(ca) => format!("check nats.tls_ca_file ({})", ca.display()),
                None => "give its CA in nats.tls_ca_file".to_owned(),
            }
        ),
        rustls::Error::AlertReceived(_) => format!(
            "the server turned the TLS handshake down ({tls}): {}",
            match &config.tls_cert_file {
                Some(cert) => format!(
                    "check nats.tls_cert_file ({}) and nats.tls_key_file",
                    cert.display()
                ),
                None => "it may want a client certificate (nats.tls_cert_file and \
                         nats.tls_key_file)"
                    .to_owned(),
            }
        ),
        rustls::Error::InvalidMessage(_) if config.tls_first => format!(
            "nats.tls_first is set, but the server does not start with TLS ({tls}): \
             it needs tls {{ handshake_first: true }} (nats-server {}+), or unset nats.tls_first",
            server::TLS_FIRST
        ),
        other => format!("TLS failed ({other}): check {}", tls_files(config)),
    })
}

fn tls_files(config: &NatsConfig) -> String {
    let files: Vec<String> = [
        ("nats.tls_ca_file", &config.tls_ca_file),
        ("nats.tls_cert_file", &config.tls_cert_file),
        ("nats.tls_key_file", &config.tls_key_file),
    ]
    .into_iter()
    .filter_map(|(field, path)| path.as_ref().map(|p| format!("{field} ({})", p.display())))
    .collect();
    if files.is_empty() {
        "the server's TLS settings".to_owned()
    } else {
        files.join(", ")
    }
}

/// The rustls error under a connect error: the client wraps it in an
/// `io::Error`, whose `source` skips it, so each link is unwrapped by hand.
fn tls_error(error: &ConnectError) -> Option<&rustls::Error> {
    find::<rustls::Error>(error)
}

/// The first error of type `E` in `error`'s chain, looking inside `io::Error`s.
fn find<E: std::error::Error + 'static>(error: &ConnectError) -> Option<&E> {
    let mut next: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(error);
    while let Some(link) = next {
        if let Some(found) = link.downcast_ref::<E>() {
            return Some(found);
        }
        if let Some(inner) = link
            .downcast_ref::<std::io::Error>()
            .and_then(std::io::Error::get_ref)
            && let Some(found) = inner.downcast_ref::<E>()
        {
            return Some(found);
        }
        next = link.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn io(inner: rustls::Error) -> ConnectError {
        ConnectError::with_source(
            ConnectErrorKind::Io,
            std::io::Error::new(std::io::ErrorKind::InvalidData, inner),
        )
    }

    #[test]
    fn refusals_name_the_setting_to_fix() {
        let config = NatsConfig {
            token_file: Some("/run/secrets/nats-token".into()),
            ..Default::default()
        };
        let denied = ConnectError::new(ConnectErrorKind::AuthorizationViolation);
        let text = turned_down(&denied, &config).expect("a refusal");
        assert_eq!(
            text,
            "the server refused nats.token_file (/run/secrets/nats-token) (authorization violation)"
        );
        let none = turned_down(&denied, &NatsConfig::default()).expect("a refusal");
        assert!(none.contains("gives none"), "{none}");

        let untrusted = io(rustls::Error::InvalidCertificate(
            rustls::CertificateError::UnknownIssuer,
        ));
        let text = turned_down(&untrusted, &config).expect("a refusal");
        assert!(
            text.contains("not trusted") && text.contains("nats.tls_ca_file"),
            "{text}"
        );

        let plain = io(rustls::Error::InvalidMessage(
            rustls::InvalidMessage::InvalidContentType,
        ));
        let tls_first = NatsConfig {
            tls_first: true,
            ..Default::default()
        };
        let text = turned_down(&plain, &tls_first).expect("a refusal");
        assert!(text.contains("handshake_first"), "{text}");
        let silent = ConnectError::with_source(ConnectErrorKind::Io, "expected INFO, got nothing");
        let text = turned_down(&silent, &config).expect("a refusal");
        assert!(text.contains("set nats.tls_first = true"), "{text}");
    }

    #[test]
    fn what_may_pass_is_no_refusal() {
        let config = NatsConfig::default();
        let refused = ConnectError::with_source(
            ConnectErrorKind::Io,
            std::io::Error::from(std::io::ErrorKind::ConnectionRefused),
        );
        assert_eq!(turned_down(&refused, &config), None);
        assert_eq!(
            turned_down(&ConnectError::new(ConnectErrorKind::TimedOut), &config),
            None
        );
    }
}
