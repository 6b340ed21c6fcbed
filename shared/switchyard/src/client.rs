//! A typed request client: JSON in, JSON out, with a per-call timeout cut to the caller's
//! [`deadline`](crate::deadline), which goes with the request as a header.
//!
//! "No responders" (nobody serves the subject) fails at once and is told apart from a timeout
//! (somebody may serve it, but no answer came in time). A micro error reply (headers
//! `Nats-Service-Error` / `Nats-Service-Error-Code`) becomes [`RequestError::Service`].

use std::time::Duration;

use async_nats::{Client, RequestErrorKind};
use bytes::Bytes;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tracing::Instrument;

use crate::breaker::TripsBreaker;
use crate::contract::ErrorBody;
use crate::micro::{SERVICE_ERROR_CODE_HEADER, SERVICE_ERROR_HEADER};
use crate::retry::{Retrier, RetryPolicy};

/// Why a request got no usable reply.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    /// Nobody is subscribed to the subject: the service is down.
    #[error("no responders for {subject}")]
    NoResponders {
        /// The subject.
        subject: String,
    },
    /// No reply came within the timeout.
    #[error("request to {subject} timed out after {timeout:?}")]
    TimedOut {
        /// The subject.
        subject: String,
        /// How long the caller waited.
        timeout: Duration,
    },
    /// The service answered with a micro error reply.
    #[error("{subject} answered with error {code}: {message}")]
    Service {
        /// The subject.
        subject: String,
        /// The micro error code.
        code: u16,
        /// The service's message.
        message: String,
    },
    /// The request could not be encoded as JSON.
    #[error("failed to encode request for {subject}")]
    Encode {
        /// The subject.
        subject: String,
        /// The underlying error.
        #[source]
        source: serde_json::Error,
    },
    /// The reply is not the expected JSON.
    #[error("invalid reply from {subject}")]
    Decode {
        /// The subject.
        subject: String,
        /// The underlying error.
        #[source]
        source: serde_json::Error,
    },
    /// The caller's deadline ([`crate::deadline`]) passed: before the request was sent, or
    /// before the reply came (the request's own timeout was cut to it).
    #[error("the caller's deadline passed before {subject} answered")]
    DeadlineExceeded {
        /// The subject.
        subject: String,
    },
    /// The request could not be sent (connection closed, payload too large, bad subject).
    #[error("request to {subject} failed")]
    Transport {
        /// The subject.
        subject: String,
        /// The underlying error.
        #[source]
        source: async_nats::RequestError,
    },
}

impl RequestError {
    /// The micro error code when the service answered with an error.
    pub fn service_code(&self) -> Option<u16> {
        match self {
            RequestError::Service { code, .. } => Some(*code),
            _ => None,
        }
    }
}

impl TripsBreaker for RequestError {
    /// A service that answers "bad request", "not found" or "conflict" is up and well: only
    /// transport failures, timeouts, no responders, 5xx replies and garbled replies trip a breaker.
    fn trips_breaker(&self) -> bool {
        match self {
            RequestError::Service { code, .. } => *code >= 500,
            RequestError::Encode { .. } | RequestError::DeadlineExceeded { .. } => false,
            _ => true,
        }
    }

    fn is_timeout(&self) -> bool {
        matches!(self, RequestError::TimedOut { .. })
    }

    /// The caller's own deadline is not the service's failure, nor its success.
    fn is_ignored(&self) -> bool {
        matches!(self, RequestError::DeadlineExceeded { .. })
    }
}

/// Sends typed requests on a NATS client.
#[derive(Debug, Clone)]
pub struct RequestClient {
    client: Client,
    timeout: Duration,
}

impl RequestClient {
    /// A client whose requests time out after `timeout` unless told otherwise.
    pub fn new(client: Client, timeout: Duration) -> Self {
        RequestClient { client, timeout }
    }

    /// The NATS client underneath.
    pub fn nats(&self) -> &Client {
        &self.client
    }

    /// Sends `request` as JSON to `subject` and decodes the JSON reply, with the default timeout.
    pub async fn request<Req, Resp>(&self, subject: &str, request: &Req) -> Result<Resp, RequestError>
    where
        Req: Serialize + ?Sized,
        Resp: DeserializeOwned,
    {
        self.request_with_timeout(subject, request, self.timeout).await
    }

    /// Like [`RequestClient::request`], with a timeout for this call.
    pub async fn request_with_timeout<Req, Resp>(
        &self,
        subject: &str,
        request: &Req,
        timeout: Duration,
    ) -> Result<Resp, RequestError>
    where
        Req: Serialize + ?Sized,
        Resp: DeserializeOwned,
    {
        let payload = serde_json::to_vec(request)
            .map_err(|source| RequestError::Encode { subject: subject.to_string(), source })?;
        let reply = self.request_raw(subject, payload.into(), timeout).await?;
        serde_json::from_slice(&reply)
            .map_err(|source| RequestError::Decode { subject: subject.to_string(), source })
    }

    /// Sends raw bytes and returns the raw reply; micro error replies become [`RequestError::Service`].
    pub async fn request_raw(
        &self,
        subject: &str,
        payload: Bytes,
        timeout: Duration,
    ) -> Result<Bytes, RequestError> {
        let span = tracing::info_span!(
            "request",
            otel.name = %subject,
            otel.kind = "client",
            rpc.system = "nats-micro",
            rpc.method = %subject,
            outcome = tracing::field::Empty,
            otel.status_code = tracing::field::Empty,
        );
        let started = std::time::Instant::now();
        let result = self.send(subject, payload, timeout).instrument(span.clone()).await;
        let outcome = match &result {
            Ok(_) => std::borrow::Cow::Borrowed("ok"),
            Err(RequestError::Service { code, .. }) => std::borrow::Cow::Owned(format!("error_{code}")),
            Err(RequestError::TimedOut { .. }) => "timeout".into(),
            Err(RequestError::NoResponders { .. }) => "no_responders".into(),
            Err(RequestError::DeadlineExceeded { .. }) => "deadline".into(),
            Err(_) => "failed".into(),
        };
        span.record("outcome", outcome.as_ref());
        if result.as_ref().is_err_and(|err| err.trips_breaker()) {
            span.record("otel.status_code", "error");
        }
        metrics::histogram!(crate::observe::CLIENT_DURATION, "subject" => subject.to_string(), "outcome" => outcome.into_owned())
            .record(started.elapsed().as_secs_f64());
        result
    }

    /// One request, its trace context and its deadline in the headers; `timeout` is cut to
    /// what is left of the current deadline.
    async fn send(&self, subject: &str, payload: Bytes, timeout: Duration) -> Result<Bytes, RequestError> {
        let requested = timeout;
        let timeout = crate::deadline::clamp(requested);
        // Cut short by the caller's deadline: a timeout then is the caller giving up.
        let cut = timeout < requested;
        if timeout.is_zero() {
            return Err(RequestError::DeadlineExceeded { subject: subject.to_string() });
        }
        let mut headers = async_nats::HeaderMap::new();
        crate::telemetry::inject(&mut headers);
        // The service may drop the work once this much time has passed: the caller is gone then.
        crate::deadline::inject(&mut headers, timeout);
        let request = async_nats::Request::new().payload(payload).headers(headers).timeout(Some(timeout));
        let message = self.client.send_request(subject.to_string(), request).await.map_err(|source| {
            match source.kind() {
                RequestErrorKind::NoResponders => RequestError::NoResponders { subject: subject.to_string() },
                RequestErrorKind::TimedOut if cut => {
                    RequestError::DeadlineExceeded { subject: subject.to_string() }
                }
                RequestErrorKind::TimedOut => {
                    RequestError::TimedOut { subject: subject.to_string(), timeout }
                }
                _ => RequestError::Transport { subject: subject.to_string(), source },
            }
        })?;
        if let Some(headers) = &message.headers
            && let Some(code) = headers.get(SERVICE_ERROR_CODE_HEADER)
        {
            let code = code.as_str().trim().parse::<u16>().unwrap_or(500);
            let message = serde_json::from_slice::<ErrorBody>(&message.payload)
                .map(|body| body.error)
                .ok()
                .or_else(|| headers.get(SERVICE_ERROR_HEADER).map(|v| v.as_str().to_string()))
                .unwrap_or_else(|| "unknown error".to_string());
            // The service dropped the work because this request's deadline passed: the same as
            // this side's own timeout (and retried like it when the call has time left).
            if code == crate::deadline::DEADLINE_EXCEEDED {
                return Err(if cut {
                    RequestError::DeadlineExceeded { subject: subject.to_string() }
                } else {
                    RequestError::TimedOut { subject: subject.to_string(), timeout }
                });
            }
            return Err(RequestError::Service { subject: subject.to_string(), code, message });
        }
        Ok(message.payload)
    }
}

/// A [`RequestClient`] behind a [`Breaker`](crate::breaker::Breaker), with retries for the
/// idempotent subjects: the way to call another service. Each call is admitted (or rejected at
/// once while the breaker is open), given the breaker's timeout as its deadline (all attempts
/// together; a sooner deadline of the caller's wins), retried as the [`RetryPolicy`] says when its
/// subject is one of those declared idempotent, and counted once in the breaker's window.
///
/// ```no_run
/// # async fn demo(nats: async_nats::Client) {
/// use switchyard::BreakerConfig;
/// use switchyard::client::GuardedClient;
/// use switchyard::retry::RetryPolicy;
///
/// let pricing = GuardedClient::new(nats, "pricing", BreakerConfig::default())
///     .with_retry(RetryPolicy::default(), &["pricing.quote"]);
/// let price: Option<serde_json::Value> = pricing
///     .call_or_else("pricing.quote", &serde_json::json!({ "item": "X" }), Some, |_| None)
///     .await;
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct GuardedClient {
    requests: RequestClient,
    breaker: std::sync::Arc<crate::breaker::Breaker>,
    retry: Option<std::sync::Arc<Retrier>>,
    idempotent: std::sync::Arc<[String]>,
}

impl GuardedClient {
    /// A client for the service `name`, with a breaker of `config` and no retries.
    pub fn new(client: Client, name: &str, config: crate::breaker::BreakerConfig) -> Self {
        let breaker = std::sync::Arc::new(crate::breaker::Breaker::new(name, config));
        GuardedClient::with_breaker(client, breaker)
    }

    /// A client behind an existing breaker (say one shared by several clients).
    pub fn with_breaker(client: Client, breaker: std::sync::Arc<crate::breaker::Breaker>) -> Self {
        let requests = RequestClient::new(client, breaker.config().timeout);
        GuardedClient { requests, breaker, retry: None, idempotent: std::sync::Arc::from(Vec::new()) }
    }

    /// Retries calls to the `idempotent` subjects under `policy` (other subjects get one attempt).
    pub fn with_retry(mut self, policy: RetryPolicy, idempotent: &[&str]) -> Self {
        self.retry = Some(std::sync::Arc::new(Retrier::new(self.breaker.name(), policy)));
        self.idempotent = idempotent.iter().map(|subject| subject.to_string()).collect();
        self
    }

    /// Sends `request` to `subject` through the breaker.
    pub async fn call<Req, Resp>(
        &self,
        subject: &str,
        request: &Req,
    ) -> Result<Resp, crate::breaker::BreakerError<RequestError>>
    where
        Req: Serialize + ?Sized,
        Resp: DeserializeOwned,
    {
        self.breaker.call(self.attempts(subject, request)).await
    }

    /// Like [`GuardedClient::call`], but the reply is turned into `T` by `answer`, and a
    /// rejection, timeout or failure is answered by `fallback` (and counted as a fallback).
    pub async fn call_or_else<Req, Resp, T, F, G>(
        &self,
        subject: &str,
        request: &Req,
        answer: F,
        fallback: G,
    ) -> T
    where
        Req: Serialize + ?Sized,
        Resp: DeserializeOwned,
        F: FnOnce(Resp) -> T,
        G: FnOnce(crate::breaker::BreakerError<RequestError>) -> T,
    {
        let call = async { self.attempts(subject, request).await.map(answer) };
        self.breaker.call_or_else(call, fallback).await
    }

    /// The call inside the breaker: one attempt, or several for an idempotent subject, all
    /// within the breaker's timeout.
    async fn attempts<Req, Resp>(&self, subject: &str, request: &Req) -> Result<Resp, RequestError>
    where
        Req: Serialize + ?Sized,
        Resp: DeserializeOwned,
    {
        let timeout = self.breaker.config().timeout;
        let payload: Bytes = serde_json::to_vec(request)
            .map_err(|source| RequestError::Encode { subject: subject.to_string(), source })?
            .into();
        // All attempts end by the breaker's timeout (a sooner deadline of the caller's still wins).
        let until = tokio::time::Instant::now() + timeout;
        let reply = match &self.retry {
            Some(retry) if self.idempotent.iter().any(|s| s == subject) => {
                let attempt = |timeout| self.requests.request_raw(subject, payload.clone(), timeout);
                retry.run(subject, Some(until), attempt).await?
            }
            _ => self.requests.request_raw(subject, payload, timeout).await?,
        };
        serde_json::from_slice(&reply)
            .map_err(|source| RequestError::Decode { subject: subject.to_string(), source })
    }

    /// The breaker, for its state and counters.
    pub fn breaker(&self) -> &crate::breaker::Breaker {
        &self.breaker
    }

    /// The shared breaker (to [`observe`](crate::breaker::Breaker::observe) it).
    pub fn breaker_arc(&self) -> &std::sync::Arc<crate::breaker::Breaker> {
        &self.breaker
    }

    /// The retrier, when retries are on.
    pub fn retrier(&self) -> Option<&Retrier> {
        self.retry.as_deref()
    }

    /// The request client underneath (for calls that bypass the breaker).
    pub fn requests(&self) -> &RequestClient {
        &self.requests
    }
}
