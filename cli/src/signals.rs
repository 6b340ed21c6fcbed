//! Ctrl-C (SIGINT) and SIGTERM, listened for once for a whole command: a signal that lands
//! between two waits is kept for the next one, never lost.

use tokio::signal::unix::{Signal, SignalKind, signal};

/// The stop signals of a command.
pub struct Signals {
    interrupt: Signal,
    terminate: Signal,
}

impl Signals {
    /// Starts listening for SIGINT and SIGTERM (from now on they no longer end the process by
    /// default: the command decides).
    pub fn listen() -> anyhow::Result<Signals> {
        Ok(Signals {
            interrupt: signal(SignalKind::interrupt())?,
            terminate: signal(SignalKind::terminate())?,
        })
    }

    /// Waits for the next one and names it.
    pub async fn recv(&mut self) -> &'static str {
        tokio::select! {
            _ = self.interrupt.recv() => "SIGINT",
            _ = self.terminate.recv() => "SIGTERM",
        }
    }
}
