//! Building and sending the confirmation email.

use std::path::{Path, PathBuf};

use contracts::OrderCreated;
use lettre::message::{Mailbox, header::ContentType};
use lettre::transport::smtp::authentication::Credentials;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use switchyard::consumer::HandleError;

/// Where emails go.
#[derive(Clone)]
pub enum Mailer {
    /// `.eml` files in a directory, one per order.
    Files(PathBuf),
    /// An SMTP server.
    Smtp(AsyncSmtpTransport<Tokio1Executor>),
}

impl std::fmt::Debug for Mailer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Mailer::Files(dir) => write!(f, "Files({})", dir.display()),
            Mailer::Smtp(_) => write!(f, "Smtp"),
        }
    }
}

/// Why a mailer could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum MailerError {
    /// The SMTP URL is not valid.
    #[error("invalid smtp url: {0}")]
    SmtpUrl(String),
    /// The email directory could not be created.
    #[error("failed to create email directory {path}")]
    Dir {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

impl Mailer {
    /// Files under `dir` (created when missing).
    pub fn files(dir: PathBuf) -> Result<Self, MailerError> {
        std::fs::create_dir_all(&dir)
            .map_err(|source| MailerError::Dir { path: dir.display().to_string(), source })?;
        Ok(Mailer::Files(dir))
    }

    /// SMTP at `url`: `smtp://[user:password@]host[:port]` (plain SMTP, port 25 by default; for a
    /// relay on the same host or a private network: this build has no TLS).
    pub fn smtp(url: &str) -> Result<Self, MailerError> {
        let rest = url.strip_prefix("smtp://").ok_or_else(|| {
            // The URL may hold a password: never in a message.
            MailerError::SmtpUrl(format!("{:?} does not start with smtp://", switchyard::db::redact(url)))
        })?;
        let rest = rest.trim_end_matches('/');
        let (credentials, address) = match rest.rsplit_once('@') {
            Some((userinfo, address)) => (Some(userinfo), address),
            None => (None, rest),
        };
        let (host, port) = match address.rsplit_once(':') {
            Some((host, port)) => (
                host,
                port.parse::<u16>()
                    .map_err(|_| MailerError::SmtpUrl(format!("invalid port in {address:?}")))?,
            ),
            None => (address, 25),
        };
        if host.is_empty() {
            return Err(MailerError::SmtpUrl("the smtp url has no host".into()));
        }
        let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host).port(port);
        if let Some(userinfo) = credentials {
            let (user, password) = userinfo.split_once(':').unwrap_or((userinfo, ""));
            builder = builder.credentials(Credentials::new(user.to_string(), password.to_string()));
        }
        Ok(Mailer::Smtp(builder.build()))
    }

    /// The transport's name, as recorded.
    pub fn kind(&self) -> &'static str {
        match self {
            Mailer::Files(_) => "file",
            Mailer::Smtp(_) => "smtp",
        }
    }

    /// Sends each `(order, message)`, one result each in the same order: files are written in one
    /// trip to a blocking thread, SMTP messages are sent concurrently. File writes are idempotent
    /// (same path); SMTP is at least once, with a Message-ID derived from the order so a
    /// receiving system can drop a repeat.
    pub async fn send_all(&self, emails: &[(&str, &Message)]) -> Vec<Result<(), HandleError>> {
        match self {
            Mailer::Files(dir) => {
                let files: Vec<(PathBuf, PathBuf, Vec<u8>)> = emails
                    .iter()
                    .map(|(order, message)| {
                        (
                            dir.join(format!(".{order}.eml.tmp")),
                            dir.join(format!("{order}.eml")),
                            message.formatted(),
                        )
                    })
                    .collect();
                let count = files.len();
                // Each written beside its name, then renamed: a reader never sees half a file.
                tokio::task::spawn_blocking(move || {
                    files.into_iter().map(|(tmp, path, bytes)| write_file(&tmp, &path, &bytes)).collect()
                })
                .await
                .unwrap_or_else(|e| {
                    let err = HandleError::Transient(format!("the file writes did not finish: {e}"));
                    vec![Err(err); count]
                })
            }
            Mailer::Smtp(transport) => {
                futures_util::future::join_all(emails.iter().map(|(_, message)| async move {
                    transport.send((*message).clone()).await.map(|_| ()).map_err(|e| {
                        if e.is_permanent() {
                            HandleError::Poison(format!("smtp refused the email: {e}"))
                        } else {
                            HandleError::Transient(format!("smtp failed: {e}"))
                        }
                    })
                }))
                .await
            }
        }
    }
}

fn write_file(tmp: &Path, path: &Path, bytes: &[u8]) -> Result<(), HandleError> {
    std::fs::write(tmp, bytes)
        .map_err(|e| HandleError::Transient(format!("failed to write {}: {e}", tmp.display())))?;
    std::fs::rename(tmp, path)
        .map_err(|e| HandleError::Transient(format!("failed to write {}: {e}", path.display())))
}

/// The Message-ID of an order's confirmation.
pub fn message_id(order: &OrderCreated) -> String {
    format!("<order-{}@switchyard>", order.order_id)
}

/// The confirmation email for `order`, to `to`. An address that does not parse is poison.
pub fn confirmation(order: &OrderCreated, from: &Mailbox, to: &str) -> Result<Message, HandleError> {
    let to: Mailbox =
        to.parse().map_err(|e| HandleError::Poison(format!("invalid recipient {to:?}: {e}")))?;
    let mut body = format!("Hello {},\n\nyour order {} is confirmed:\n\n", order.user_id, order.order_id);
    for item in &order.items {
        body.push_str(&format!("  {} x {}\n", item.quantity, item.sku));
    }
    body.push_str(&format!("\nOrdered at {}.\n\nThank you,\nSwitchyard\n", order.created_at));
    Message::builder()
        .from(from.clone())
        .to(to)
        .subject(format!("Order {} confirmed", order.order_id))
        .message_id(Some(message_id(order)))
        .header(ContentType::TEXT_PLAIN)
        .body(body)
        .map_err(|e| HandleError::Poison(format!("cannot build the email: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bad_smtp_url_is_reported_without_its_password() {
        let err = Mailer::smtp("smtps://mailer:s3cret@mail.example.com:465").unwrap_err().to_string();
        assert!(err.contains("mailer:***@mail.example.com"), "{err}");
        assert!(!err.contains("s3cret"), "{err}");
    }
}
