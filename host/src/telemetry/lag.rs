//! JetStream consumer lag as the host last saw it: the transport's poller
//! writes each consumer's `num_pending` and `num_ack_pending` onto the
//! [`LagBoard`]; scrapes read the figures and `/readyz` the consumers found
//! missing.

use std::sync::RwLock;

/// What the server last said of one JetStream consumer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConsumerState {
    /// Not asked yet.
    NotYet,
    Present {
        pending: u64,
        ack_pending: u64,
    },
    /// The consumer (or its stream) does not exist: why, for `/readyz`.
    Missing(String),
    /// The server did not answer (its figures are the last known, if any).
    Unknown(String),
}

/// One watched consumer and its last figures.
#[derive(Debug, Clone)]
pub struct LagSample {
    pub plugin: String,
    pub stream: String,
    pub consumer: String,
    pub state: ConsumerState,
    /// The last figures the server gave: (num_pending, num_ack_pending).
    pub last: Option<(u64, u64)>,
}

impl LagSample {
    pub fn new(plugin: &str, stream: &str, consumer: &str) -> Self {
        Self {
            plugin: plugin.to_owned(),
            stream: stream.to_owned(),
            consumer: consumer.to_owned(),
            state: ConsumerState::NotYet,
            last: None,
        }
    }
}

/// The consumers' lag as last polled: written by the transport's poller, read
/// by scrapes and `/readyz`.
#[derive(Debug, Default)]
pub struct LagBoard(RwLock<Vec<LagSample>>);

impl LagBoard {
    pub fn set(&self, samples: Vec<LagSample>) {
        if let Ok(mut board) = self.0.write() {
            *board = samples;
        }
    }

    /// Record what the server said of consumer `i`.
    pub fn update(&self, i: usize, state: ConsumerState) {
        let Ok(mut board) = self.0.write() else {
            return;
        };
        let Some(sample) = board.get_mut(i) else {
            return;
        };
        match &state {
            ConsumerState::Present {
                pending,
                ack_pending,
            } => sample.last = Some((*pending, *ack_pending)),
            ConsumerState::Missing(_) => sample.last = None,
            ConsumerState::NotYet | ConsumerState::Unknown(_) => {}
        }
        sample.state = state;
    }

    pub fn samples(&self) -> Vec<LagSample> {
        self.0.read().map(|b| b.clone()).unwrap_or_default()
    }

    /// Why a plugin is not ready: its consumers found missing.
    pub fn missing(&self) -> Vec<String> {
        self.samples()
            .into_iter()
            .filter_map(|s| match s.state {
                ConsumerState::Missing(why) => Some(format!("plugin {}: {why}", s.plugin)),
                _ => None,
            })
            .collect()
    }
}
