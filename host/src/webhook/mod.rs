//! Placeholder until the webhook delivery lands: the job format only.

use crate::event::Message;

pub const STREAM: &str = "WEIR_WEBHOOKS";
pub const SUBJECT_PREFIX: &str = "weir.webhooks";

/// A delivery job: one final status document to POST to `url`.
pub fn job(plugin: &str, url: &str, webhook_id: &str, body: bytes::Bytes) -> Message {
    Message {
        subject: format!("{SUBJECT_PREFIX}.{plugin}"),
        payload: body,
        headers: vec![
            ("Weir-Callback-Url".into(), url.into()),
            ("Webhook-Id".into(), webhook_id.into()),
            ("Nats-Msg-Id".into(), webhook_id.into()),
            ("Content-Type".into(), "application/json".into()),
        ],
    }
}

/// Make sure of the webhooks stream (placeholder).
pub async fn ensure_stream(
    js: &async_nats::jetstream::Context,
    replicas: usize,
) -> anyhow::Result<()> {
    use async_nats::jetstream::stream;
    js.get_or_create_stream(stream::Config {
        name: STREAM.into(),
        subjects: vec![format!("{SUBJECT_PREFIX}.>")],
        retention: stream::RetentionPolicy::WorkQueue,
        num_replicas: replicas,
        duplicate_window: std::time::Duration::from_secs(120),
        ..Default::default()
    })
    .await
    .map(|_| ())
    .map_err(anyhow::Error::from)
}
