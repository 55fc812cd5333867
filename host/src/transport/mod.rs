//! NATS: the connection, core subscriptions feeding each plugin's bounded
//! queue, and the [`NatsSink`] that publishes outputs and dead letters.
//! async-nats types stay in this module.

pub mod jetstream;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use async_nats::jetstream as js;
use async_nats::{Client, HeaderMap, HeaderName, HeaderValue};
use futures::StreamExt as _;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::config::{DeadLetterConfig, NatsConfig, Subscription};
use crate::event::{Event, Headers, Message};
use crate::pipeline::{Plugin, Sink};

/// Connect to NATS, retrying the first connection and every later one, for
/// good: a host outlives a restart of its server.
pub async fn connect(config: &NatsConfig) -> anyhow::Result<Client> {
    use crate::auth::secret::{NatsCredentials, nats_credentials};
    let url = config.url.to_string();
    // Secrets come from files or the environment and go straight to the
    // client: they are in no message and no log line.
    let mut options = match nats_credentials(config)? {
        NatsCredentials::None => async_nats::ConnectOptions::new(),
        NatsCredentials::Token(token) => {
            async_nats::ConnectOptions::new().token(token.expose().to_owned())
        }
        NatsCredentials::UserPassword { user, password } => {
            async_nats::ConnectOptions::new().user_and_password(user, password.expose().to_owned())
        }
        NatsCredentials::NkeySeed(seed) => {
            async_nats::ConnectOptions::new().nkey(seed.expose().to_owned())
        }
        NatsCredentials::CredsFile(path) => async_nats::ConnectOptions::new()
            .credentials_file(&path)
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
    let client = options
        .name(&config.name)
        .subscription_capacity(config.subscription_capacity)
        .retry_on_initial_connect()
        .max_reconnects(None)
        .event_callback(|event| async move {
            match event {
                async_nats::Event::SlowConsumer(sid) => {
                    tracing::error!(
                        subscription = sid,
                        "NATS slow consumer: the client dropped messages of a subscription"
                    )
                }
                async_nats::Event::Disconnected => {
                    tracing::warn!("disconnected from NATS, reconnecting")
                }
                async_nats::Event::Connected => tracing::info!("connected to NATS"),
                other => tracing::debug!("NATS: {other}"),
            }
        })
        .connect(config.url.for_client())
        .await
        .with_context(|| format!("cannot connect to NATS at {url}"))?;
    // With retry_on_initial_connect the client comes back before it is
    // connected: wait here, so start-up does not mistake a server that is not
    // up yet for one without JetStream.
    let mut waited = Duration::ZERO;
    while client.connection_state() != async_nats::connection::State::Connected {
        if waited.as_secs() > 0 && waited.as_millis().is_multiple_of(10_000) {
            tracing::warn!(url = %url, "waiting for the NATS server ({} s so far)", waited.as_secs());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        waited += Duration::from_millis(100);
    }
    Ok(client)
}

/// Wait until the server has processed everything sent so far on `client`
/// (subscriptions included). `Client::flush` only empties the socket buffer;
/// a request and its answer — even "no responders" — is a real round trip.
pub async fn sync_with_server(client: &Client) -> anyhow::Result<()> {
    match client.request("$JS.API.INFO", bytes::Bytes::new()).await {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == async_nats::RequestErrorKind::NoResponders => Ok(()),
        Err(e) => Err(e).context("no answer from the NATS server"),
    }
}

/// Whether a JetStream stream captures `subject`, as the server says.
pub async fn stream_captures(js: &js::Context, subject: &str) -> anyhow::Result<bool> {
    match js.stream_by_subject(subject).await {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == js::context::GetStreamByNameErrorKind::NotFound => Ok(false),
        Err(e) => Err(e)
            .with_context(|| format!("cannot ask JetStream which stream captures {subject:?}")),
    }
}

/// Turn a NATS message into an event. Its id is the producer's `Nats-Msg-Id`
/// when it set one, else one made up by `ids`.
pub fn to_event(msg: async_nats::Message, ids: &IdSource) -> Event {
    let headers = msg
        .headers
        .as_ref()
        .map(from_header_map)
        .unwrap_or_default();
    let id = crate::event::header(&headers, "Nats-Msg-Id")
        .map(str::to_owned)
        .unwrap_or_else(|| ids.next());
    Event {
        id,
        subject: msg.subject.to_string(),
        payload: msg.payload,
        headers,
        reply_to: msg.reply.map(|r| r.to_string()),
        attempt: 1,
        principal: None,
    }
}

pub fn from_header_map(map: &HeaderMap) -> Headers {
    let mut out = Vec::new();
    for (name, values) in map.iter() {
        let name: &str = name.as_ref();
        for value in values {
            out.push((name.to_owned(), value.as_str().to_owned()));
        }
    }
    // NATS header maps do not keep the order between names; sort for a
    // stable order.
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

pub fn to_header_map(headers: &[(String, String)]) -> anyhow::Result<HeaderMap> {
    let mut map = HeaderMap::new();
    for (name, value) in headers {
        let name: HeaderName = name
            .parse()
            .with_context(|| format!("header name {name:?} is not valid"))?;
        let value: HeaderValue = value
            .parse()
            .with_context(|| format!("header {name} has an invalid value"))?;
        map.append(name, value);
    }
    Ok(map)
}

/// Event ids for core messages that carry none: a random prefix per host
/// process and a counter.
pub struct IdSource {
    prefix: String,
    next: AtomicU64,
}

impl Default for IdSource {
    fn default() -> Self {
        Self {
            prefix: format!("{:012x}", rand::random::<u64>() & 0xffff_ffff_ffff),
            next: AtomicU64::new(1),
        }
    }
}

impl IdSource {
    pub fn next(&self) -> String {
        format!(
            "{}-{}",
            self.prefix,
            self.next.fetch_add(1, Ordering::Relaxed)
        )
    }
}

/// Publishes through one NATS connection. Dead letters go through JetStream
/// with a publish ack when the server has JetStream, so none is lost silently.
pub struct NatsSink {
    client: Client,
    jetstream: Option<js::Context>,
    /// Whether a stream captures an output subject, as the server said, with
    /// when it said so: asked again after a minute, so a stream created or
    /// deleted later is noticed.
    captured: std::sync::Mutex<std::collections::HashMap<String, (Instant, bool)>>,
}

impl NatsSink {
    /// Make sure the dead-letter stream exists (file storage, capturing
    /// `<prefix>.>`); without JetStream, dead letters go out on core NATS.
    pub async fn new(client: Client, dead_letter: &DeadLetterConfig) -> Self {
        let js = js::new(client.clone());
        let config = js::stream::Config {
            name: dead_letter.stream.clone(),
            subjects: vec![format!("{}.>", dead_letter.subject_prefix)],
            storage: js::stream::StorageType::File,
            allow_direct: true,
            description: Some("weir dead letters".into()),
            ..Default::default()
        };
        let jetstream = match js.get_or_create_stream(config).await {
            Ok(_) => Some(js),
            Err(e) => {
                tracing::warn!(
                    stream = %dead_letter.stream, error = %e,
                    "no JetStream dead-letter stream: dead letters go out on core NATS only"
                );
                None
            }
        };
        Self {
            client,
            jetstream,
            captured: std::sync::Mutex::new(Default::default()),
        }
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    pub fn jetstream(&self) -> Option<&js::Context> {
        self.jetstream.as_ref()
    }

    /// Whether a stream captures `subject`. Asking the server (not trying a
    /// JetStream publish and watching for "no responders") matters: a core
    /// subscriber on the subject would swallow the publish's request.
    async fn is_captured(&self, js: &js::Context, subject: &str) -> anyhow::Result<bool> {
        const FRESH: Duration = Duration::from_secs(60);
        if let Ok(known) = self.captured.lock()
            && let Some((at, captured)) = known.get(subject)
            && at.elapsed() < FRESH
        {
            return Ok(*captured);
        }
        let captured = stream_captures(js, subject).await?;
        if let Ok(mut known) = self.captured.lock() {
            if known.len() >= 10_000 {
                known.retain(|_, (at, _)| at.elapsed() < FRESH);
            }
            known.insert(subject.to_owned(), (Instant::now(), captured));
        }
        Ok(captured)
    }

    /// Publish to a stream and wait for its ack.
    async fn publish_stored(&self, js: &js::Context, msg: &Message) -> anyhow::Result<()> {
        let headers = to_header_map(&msg.headers)?;
        js.publish_with_headers(msg.subject.clone(), headers, msg.payload.clone())
            .await
            .with_context(|| format!("cannot publish to {:?}", msg.subject))?
            .await
            .with_context(|| format!("no ack from JetStream for {:?}", msg.subject))?;
        Ok(())
    }

    async fn publish_core(&self, msg: Message) -> anyhow::Result<()> {
        let headers = to_header_map(&msg.headers)?;
        self.client
            .publish_with_headers(msg.subject, headers, msg.payload)
            .await
            .context("cannot publish")
    }
}

impl Sink for NatsSink {
    async fn publish(&self, outputs: Vec<Message>, confirm: bool) -> anyhow::Result<()> {
        let mut unconfirmed = false;
        for msg in outputs {
            if confirm
                && let Some(js) = &self.jetstream
                && self.is_captured(js, &msg.subject).await?
            {
                self.publish_stored(js, &msg).await?;
                continue;
            }
            let subject = msg.subject.clone();
            self.publish_core(msg)
                .await
                .with_context(|| format!("output to {subject:?}"))?;
            unconfirmed = true;
        }
        if confirm && unconfirmed {
            sync_with_server(&self.client).await?;
        }
        Ok(())
    }

    async fn dead_letter(&self, msg: Message) -> anyhow::Result<()> {
        let Some(js) = &self.jetstream else {
            return self.publish_core(msg).await;
        };
        let headers = to_header_map(&msg.headers)?;
        let ack = js
            .publish_with_headers(msg.subject.clone(), headers, msg.payload)
            .await
            .with_context(|| format!("cannot publish the dead letter to {:?}", msg.subject))?;
        ack.await.with_context(|| {
            format!(
                "the server did not store the dead letter on {:?}",
                msg.subject
            )
        })?;
        Ok(())
    }
}

/// Subscribe to one core subscription of a plugin.
pub async fn subscribe_core(
    client: &Client,
    plugin: &Plugin,
    sub: &Subscription,
) -> anyhow::Result<async_nats::Subscriber> {
    let subscriber = match &sub.queue {
        Some(group) => {
            client
                .queue_subscribe(sub.subject.clone(), group.clone())
                .await
        }
        None => client.subscribe(sub.subject.clone()).await,
    }
    .with_context(|| {
        format!(
            "plugin {:?}: cannot subscribe to {:?}",
            plugin.name(),
            sub.subject
        )
    })?;
    tracing::info!(plugin = plugin.name(), subject = %sub.subject, queue = sub.queue.as_deref().unwrap_or(""), "subscribed");
    Ok(subscriber)
}

/// Feed a plugin's queue from one core subscription until `stop` fires, then
/// drain: unsubscribe and queue what the client had already received.
///
/// The reader never waits on the plugin: when the queue is full the event is
/// shed — counted and logged — instead of letting async-nats' own buffer
/// overflow, where it would be dropped without a word.
pub async fn read_core(
    mut subscriber: async_nats::Subscriber,
    plugin: Arc<Plugin>,
    queue: mpsc::Sender<crate::host::Job>,
    ids: Arc<IdSource>,
    stop: CancellationToken,
) {
    let mut last_warning: Option<Instant> = None;
    loop {
        let msg = tokio::select! {
            msg = subscriber.next() => msg,
            _ = stop.cancelled() => break,
        };
        let Some(msg) = msg else { return };
        plugin.stats.received.fetch_add(1, Ordering::Relaxed);
        let event = to_event(msg, &ids);
        if let Err(mpsc::error::TrySendError::Full(crate::host::Job::Core(event))) =
            queue.try_send(crate::host::Job::Core(event))
        {
            let shed = plugin.stats.shed.fetch_add(1, Ordering::Relaxed) + 1;
            if last_warning.is_none_or(|t| t.elapsed() > Duration::from_secs(5)) {
                last_warning = Some(Instant::now());
                tracing::warn!(
                    plugin = plugin.name(), subject = %event.subject, shed_total = shed,
                    "queue full (limits.queue = {}): shedding core events; use jetstream mode for no loss",
                    plugin.manifest.limits.queue
                );
            }
        }
    }
    if let Err(e) = subscriber.drain().await {
        tracing::warn!(plugin = plugin.name(), error = %e, "cannot drain the subscription");
        return;
    }
    while let Some(msg) = subscriber.next().await {
        plugin.stats.received.fetch_add(1, Ordering::Relaxed);
        if queue
            .send(crate::host::Job::Core(to_event(msg, &ids)))
            .await
            .is_err()
        {
            return;
        }
    }
}
