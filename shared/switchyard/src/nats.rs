//! The NATS connection every service opens from the shared flags.
//!
//! Services reconnect forever with capped exponential backoff, because a broker restart or a
//! cluster node failure must never turn into a crashed service; each connection event is logged.

use std::time::Duration;

use async_nats::{Client, ConnectOptions, Event};

use crate::config::NatsArgs;

/// Why a NATS connection could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The credentials file could not be read.
    #[error("failed to read nats credentials file {path}")]
    Credentials {
        /// The path.
        path: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The first connection attempt failed.
    #[error("failed to connect to nats at {url}")]
    Connect {
        /// The server URLs.
        url: String,
        /// The underlying error.
        #[source]
        source: async_nats::ConnectError,
    },
}

/// Connects to NATS as `<service>-<instance>`, with the flags' credentials.
///
/// The first attempt must succeed (a wrong URL fails fast at start-up); after that, the client
/// reconnects forever.
pub async fn connect(args: &NatsArgs, service: &str, instance: &str) -> Result<Client, ConnectError> {
    let mut options = ConnectOptions::new();
    if let Some(path) = &args.nats_creds {
        options = options
            .credentials_file(path)
            .await
            .map_err(|source| ConnectError::Credentials { path: path.display().to_string(), source })?;
    }
    if let (Some(user), Some(password)) = (&args.nats_user, &args.nats_password) {
        options = options.user_and_password(user.clone(), password.clone());
    }
    if let Some(prefix) = args.inbox_prefix() {
        options = options.custom_inbox_prefix(prefix);
    }
    let name = format!("{service}-{instance}");
    let log_name = name.clone();
    let options = options
        .name(name)
        .max_reconnects(None)
        .connection_timeout(Duration::from_secs(5))
        .reconnect_delay_callback(crate::backoff::delay)
        .event_callback(move |event| {
            let name = log_name.clone();
            async move {
                match event {
                    Event::Connected => tracing::info!(client = %name, "nats connected"),
                    Event::Disconnected => tracing::warn!(client = %name, "nats disconnected, reconnecting"),
                    Event::LameDuckMode => {
                        tracing::warn!(client = %name, "nats server entered lame duck mode")
                    }
                    Event::SlowConsumer(sid) => {
                        tracing::warn!(client = %name, sid, "nats slow consumer, messages dropped")
                    }
                    other => tracing::info!(client = %name, event = %other, "nats event"),
                }
            }
        });
    // A comma-separated list names the nodes of a cluster; the client fails over between them.
    let urls: Vec<&str> = args.nats_url.split(',').map(str::trim).filter(|url| !url.is_empty()).collect();
    options
        .connect(urls)
        .await
        .map_err(|source| ConnectError::Connect { url: redact_urls(&args.nats_url), source })
}

/// A comma-separated URL list with every password replaced by `***` (a URL may carry one:
/// `nats://user:pass@host`), for messages.
pub fn redact_urls(urls: &str) -> String {
    urls.split(',').map(|url| crate::db::redact(url.trim())).collect::<Vec<_>>().join(",")
}

/// Drains a client: pending subscriptions deliver what they hold, then the connection closes.
/// Waits at most `deadline` for the connection to go away.
pub async fn drain(client: &Client, deadline: Duration) {
    if let Err(err) = client.flush().await {
        tracing::debug!(error = %err, "flush before drain failed");
    }
    if let Err(err) = client.drain().await {
        tracing::debug!(error = %err, "nats drain failed");
        return;
    }
    // Once the drain completes the connection task exits, and with it every command fails: a
    // flush that errors is the sign the client is closed.
    let wait = async {
        while client.flush().await.is_ok() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    if tokio::time::timeout(deadline, wait).await.is_err() {
        tracing::warn!("nats drain did not finish in {deadline:?}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_failed_connection_is_reported_without_the_urls_password() {
        let port = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port());
        let url = format!("nats://ops:s3cret@127.0.0.1:{}", port.unwrap_or(1));
        let err = connect(&NatsArgs::plain(url), "test", "1").await.unwrap_err();
        let text = crate::telemetry::error_chain(&err);
        assert!(text.contains("nats://ops:***@127.0.0.1:"), "{text}");
        assert!(!text.contains("s3cret"), "{text}");
    }
}
