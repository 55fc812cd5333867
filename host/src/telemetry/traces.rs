//! Trace export: one host's OpenTelemetry tracer provider, built from
//! `[telemetry]` only when `otlp_endpoint` is set, and [`Traces`], the cheap
//! handle the pipeline gets (off by default: then no span is ever made).
//!
//! Spans go to the OTLP/HTTP (protobuf) endpoint through the SDK's batch
//! processor: ending a span is a non-blocking send to a bounded queue, and a
//! full queue drops the span, so a slow or absent collector never slows an
//! event. The processor runs its exports on its own thread; the exporter's
//! HTTP client (hyper) needs tokio, so each export is run as a task on the
//! runtime the host started on ([`OnRuntime`]), which also warns once when
//! the collector cannot be reached and once when it can again.
//!
//! No global provider is installed: several hosts in one process (the tests)
//! each have their own. [`Traces::shutdown`] exports what is left; the host
//! calls it after its events finished, so no span of a stopped host is lost.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use opentelemetry::InstrumentationScope;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig as _;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};
use opentelemetry_sdk::trace::{
    BatchSpanProcessor, Sampler, SdkTracer, SdkTracerProvider, SpanData, SpanExporter,
};

use crate::config::TelemetryConfig;

/// How long [`Traces::shutdown`] waits for the last spans to be exported.
pub const SHUTDOWN_WAIT: Duration = Duration::from_secs(5);

/// The tracer of a host: off, or exporting to a collector. Cloning is an
/// `Arc` clone.
#[derive(Clone, Default)]
pub struct Traces(Option<Arc<Exporting>>);

struct Exporting {
    provider: SdkTracerProvider,
    /// weir's instrumentation scope on `provider`.
    tracer: SdkTracer,
    /// For log lines: the endpoint with any user:password hidden.
    endpoint: String,
}

impl std::fmt::Debug for Traces {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.0 {
            Some(on) => write!(f, "Traces(exporting to {})", on.endpoint),
            None => f.write_str("Traces(off)"),
        }
    }
}

impl Traces {
    /// No tracing: the pipeline makes no span and only passes an incoming
    /// `traceparent` on.
    pub fn off() -> Self {
        Self(None)
    }

    /// Off unless `otlp_endpoint` is set; then a provider exporting there,
    /// sampling new traces by `sample_ratio` (a parent's decision is kept).
    /// Must be called on the tokio runtime that is to run the exports.
    pub fn start(config: &TelemetryConfig) -> anyhow::Result<Self> {
        let Some(endpoint) = &config.otlp_endpoint else {
            return Ok(Self::off());
        };
        // The exporter's client (hyper's HttpConnector) speaks plain HTTP:
        // say so now rather than drop every span at the first export.
        if endpoint.starts_with("https://") {
            anyhow::bail!(
                "telemetry.otlp_endpoint: https is not supported (no TLS in this build's OTLP \
                 client); export over http:// to a collector on the same host or network"
            );
        }
        let runtime = tokio::runtime::Handle::try_current()
            .context("telemetry.otlp_endpoint: trace export needs a tokio runtime")?;
        // Credentials in the URL never reach an error or a log line: the
        // builder's own error (which quotes the URL) is replaced.
        let shown = crate::config::redact_url(endpoint);
        let otlp = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_endpoint(endpoint.clone())
            .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
            // Kept short: a dead collector holds the export thread for the
            // timeout, and spans queue (then drop) meanwhile.
            .with_timeout(Duration::from_secs(5))
            .build()
            .map_err(|_| {
                anyhow::anyhow!(
                    "telemetry.otlp_endpoint: cannot export to {shown:?} (not a usable OTLP/HTTP URL)"
                )
            })?;
        let exporter = OnRuntime {
            inner: Arc::new(otlp),
            runtime,
            endpoint: shown.clone(),
            failing: Arc::new(AtomicBool::new(false)),
        };
        let resource = Resource::builder()
            .with_service_name(config.service_name.clone())
            .with_attribute(opentelemetry::KeyValue::new(
                "service.version",
                env!("CARGO_PKG_VERSION"),
            ))
            .build();
        let provider = SdkTracerProvider::builder()
            .with_span_processor(BatchSpanProcessor::builder(exporter).build())
            .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
                config.sample_ratio,
            ))))
            .with_resource(resource)
            .build();
        let tracer = provider.tracer_with_scope(
            InstrumentationScope::builder("weir")
                .with_version(env!("CARGO_PKG_VERSION"))
                .build(),
        );
        tracing::info!(
            endpoint = %shown, service = %config.service_name, sample_ratio = config.sample_ratio,
            "traces: exporting spans over OTLP/HTTP"
        );
        Ok(Self(Some(Arc::new(Exporting {
            provider,
            tracer,
            endpoint: shown,
        }))))
    }

    pub fn is_on(&self) -> bool {
        self.0.is_some()
    }

    /// The tracer spans are made with; `None` when off.
    pub fn tracer(&self) -> Option<&SdkTracer> {
        self.0.as_ref().map(|on| &on.tracer)
    }

    /// Export what is queued and stop exporting, waiting at most
    /// [`SHUTDOWN_WAIT`]. Spans ended later are dropped (and an event that
    /// ends after this passes its incoming `traceparent` on, as when off).
    pub async fn shutdown(&self) {
        let Some(on) = &self.0 else { return };
        let provider = on.provider.clone();
        // The SDK blocks its caller until the export thread is done; that
        // thread's export runs as a task on this runtime, so wait off it.
        let done =
            tokio::task::spawn_blocking(move || provider.shutdown_with_timeout(SHUTDOWN_WAIT))
                .await;
        match done {
            Ok(Ok(())) | Ok(Err(OTelSdkError::AlreadyShutdown)) => {
                tracing::debug!(endpoint = %on.endpoint, "traces: flushed")
            }
            Ok(Err(e)) => tracing::warn!(
                endpoint = %on.endpoint, error = %e,
                "traces: the last spans may not have been exported"
            ),
            Err(e) => tracing::warn!(error = %e, "traces: shutdown did not finish"),
        }
    }
}

/// The OTLP exporter, each export run as a task on `runtime` (hyper needs
/// tokio; the batch processor calls from a plain thread). Counts nothing on
/// the event path: it only sees batches.
#[derive(Debug)]
struct OnRuntime {
    inner: Arc<opentelemetry_otlp::SpanExporter>,
    runtime: tokio::runtime::Handle,
    endpoint: String,
    /// Whether the last export failed: a warning when it starts failing and
    /// a line when it works again, not one per batch.
    failing: Arc<AtomicBool>,
}

impl SpanExporter for OnRuntime {
    fn export(&self, batch: Vec<SpanData>) -> impl Future<Output = OTelSdkResult> + Send {
        let inner = self.inner.clone();
        let failing = self.failing.clone();
        let endpoint = self.endpoint.clone();
        // Logged from the task, on the runtime, like the host's other lines.
        let task = self.runtime.spawn(async move {
            let count = batch.len();
            let result = inner.export(batch).await;
            match &result {
                Ok(()) if failing.swap(false, Ordering::Relaxed) => {
                    tracing::info!(%endpoint, "traces: the collector takes spans again")
                }
                Ok(()) => {}
                Err(e) if !failing.swap(true, Ordering::Relaxed) => tracing::warn!(
                    %endpoint, error = %e, spans = count,
                    "traces: cannot export spans; they are dropped until the collector answers \
                     (events are not affected; warned once)"
                ),
                Err(_) => {}
            }
            result
        });
        async move {
            task.await.unwrap_or_else(|e| {
                Err(OTelSdkError::InternalFailure(format!(
                    "the export task ended: {e}"
                )))
            })
        }
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn set_resource(&mut self, resource: &Resource) {
        // Called once, when the provider is built, before any export holds
        // a clone of `inner`.
        match Arc::get_mut(&mut self.inner) {
            Some(inner) => inner.set_resource(resource),
            None => tracing::warn!("traces: the resource could not be set on the exporter"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn off_unless_an_endpoint_is_set() {
        let traces = Traces::start(&TelemetryConfig::default()).expect("off");
        assert!(!traces.is_on() && traces.tracer().is_none());
    }

    #[tokio::test]
    async fn an_endpoint_starts_a_provider_and_shutdown_returns() {
        let config = TelemetryConfig {
            otlp_endpoint: Some("http://127.0.0.1:9/v1/traces".into()),
            ..TelemetryConfig::default()
        };
        let traces = Traces::start(&config).expect("on");
        assert!(traces.is_on());
        traces.shutdown().await;
    }

    #[test]
    fn credentials_never_reach_log_lines() {
        let config = TelemetryConfig {
            otlp_endpoint: Some("http://u:secret@collector:4318/v1/traces".into()),
            ..TelemetryConfig::default()
        };
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let traces = runtime
            .block_on(async { Traces::start(&config) })
            .expect("on");
        let shown = format!("{traces:?}");
        assert!(
            !shown.contains("secret") && shown.contains("collector:4318"),
            "{shown}"
        );
        runtime.block_on(traces.shutdown());
    }
}
