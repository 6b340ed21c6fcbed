//! NATS micro services from typed handlers.
//!
//! A [`ServiceSpec`] lists endpoints as typed async functions; [`ServiceSpec::start`] subscribes
//! them in the queue group [`QUEUE_GROUP`] and answers the micro
//! discovery subjects (`$SRV.PING|INFO|STATS[.name[.id]]`), so `nats micro ls|info|stats` and
//! every other language's micro tooling see the service.
//!
//! This speaks the micro protocol (v1) itself rather than through async-nats' `service` module,
//! because that module sends error replies with an empty body, while our contract puts a JSON body
//! `{"error","code"}` on every error reply *and* counts it in `num_errors`; doing both needs the
//! reply and the statistics in one place.
//!
//! Requests are handled concurrently (up to a limit per service); a request whose payload does not
//! decode or validate gets a 400 error reply; a handler that panics gets a 500. A request that
//! carries the caller's deadline ([`crate::deadline`]) is answered 504 instead of handled once that
//! deadline has passed, and its handler is cancelled if it is still running then; the handler reads
//! the deadline with [`crate::deadline::current`]. Stopping drains the subscriptions and finishes
//! every in-flight request before returning.

use std::collections::HashMap;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_nats::{Client, HeaderMap, Message, Subscriber};
use bytes::Bytes;
use futures_util::{FutureExt, StreamExt, stream};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::sync::{Semaphore, watch};
use tokio::task::{JoinHandle, JoinSet};
use tracing::Instrument;

use crate::contract::{ContractError, ErrorBody, Validate, decode};
use crate::names::{QUEUE_GROUP, srv_subject};

/// Header carrying the error description of a micro error reply.
pub const SERVICE_ERROR_HEADER: &str = "Nats-Service-Error";
/// Header carrying the error code of a micro error reply.
pub const SERVICE_ERROR_CODE_HEADER: &str = "Nats-Service-Error-Code";

/// How long stopping waits for a subscription to hand over what it already received.
const DRAIN_DEADLINE: Duration = Duration::from_secs(10);

/// An error a handler answers with; it becomes a micro error reply.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct ServiceError {
    /// 400 bad request, 404 unknown, 409 conflict, 500 internal, 504 the caller's deadline
    /// passed.
    pub code: u16,
    /// What went wrong, for the caller. Never internal details for a 500.
    pub message: String,
}

impl ServiceError {
    /// 400: the request is malformed.
    pub fn bad_request(message: impl Into<String>) -> Self {
        ServiceError { code: 400, message: message.into() }
    }

    /// 404: the thing asked for does not exist.
    pub fn not_found(message: impl Into<String>) -> Self {
        ServiceError { code: 404, message: message.into() }
    }

    /// 409: the request conflicts with the current state.
    pub fn conflict(message: impl Into<String>) -> Self {
        ServiceError { code: 409, message: message.into() }
    }

    /// 504: the caller's deadline ([`crate::deadline`]) passed before an answer was ready.
    pub fn deadline_exceeded(message: impl Into<String>) -> Self {
        ServiceError { code: crate::deadline::DEADLINE_EXCEEDED, message: message.into() }
    }

    /// 500: something broke inside. Logs `detail`; the caller sees only "internal error".
    pub fn internal(detail: impl std::fmt::Display) -> Self {
        tracing::error!(error = %detail, "request failed");
        ServiceError { code: 500, message: "internal error".into() }
    }
}

impl From<ContractError> for ServiceError {
    fn from(err: ContractError) -> Self {
        ServiceError::bad_request(err.to_string())
    }
}

/// Why a service could not start.
#[derive(Debug, thiserror::Error)]
pub enum MicroError {
    /// A subscription could not be made.
    #[error("failed to subscribe to {subject}")]
    Subscribe {
        /// The subject.
        subject: String,
        /// The underlying error.
        #[source]
        source: async_nats::SubscribeError,
    },
    /// The service name is not valid for the micro protocol.
    #[error("invalid service name {0:?}: only A-Z, a-z, 0-9, _ and - are allowed")]
    InvalidName(String),
}

type BoxFuture = Pin<Box<dyn Future<Output = Result<Bytes, ServiceError>> + Send>>;
type Handler = Arc<dyn Fn(Message) -> BoxFuture + Send + Sync>;

struct EndpointSpec {
    name: String,
    subject: String,
    handler: Handler,
}

/// Produces the `data` of each endpoint in a STATS reply (say, a circuit breaker's state).
pub type StatsData = Arc<dyn Fn() -> serde_json::Value + Send + Sync>;

/// A micro service to start: name, version and typed endpoints.
pub struct ServiceSpec {
    name: String,
    version: String,
    description: String,
    metadata: HashMap<String, String>,
    max_in_flight: usize,
    endpoints: Vec<EndpointSpec>,
    stats_data: Option<StatsData>,
}

impl ServiceSpec {
    /// A service named `name` (the micro name: `nats micro info <name>`) at `version` (semver).
    pub fn new(name: impl Into<String>, version: impl Into<String>) -> Self {
        ServiceSpec {
            name: name.into(),
            version: version.into(),
            description: String::new(),
            metadata: HashMap::new(),
            max_in_flight: 256,
            endpoints: Vec::new(),
            stats_data: None,
        }
    }

    /// Adds `data` to every endpoint of the STATS reply (`nats micro stats` shows it).
    pub fn stats_data(mut self, data: impl Fn() -> serde_json::Value + Send + Sync + 'static) -> Self {
        self.stats_data = Some(Arc::new(data));
        self
    }

    /// What the service does, shown by `nats micro info`.
    pub fn description(mut self, description: impl Into<String>) -> Self {
        self.description = description.into();
        self
    }

    /// A metadata entry, shown by `nats micro info`.
    pub fn metadata(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.metadata.insert(key.into(), value.into());
        self
    }

    /// Requests handled at once by this instance, over all endpoints (default 256). Past it,
    /// new requests wait in the subscription.
    pub fn max_in_flight(mut self, max: usize) -> Self {
        self.max_in_flight = max.max(1);
        self
    }

    /// Adds an endpoint: requests on `subject` are decoded and validated as `Req`, passed to
    /// `handler`, and its `Resp` is sent back as JSON.
    pub fn endpoint<Req, Resp, F, Fut>(
        mut self,
        name: impl Into<String>,
        subject: impl Into<String>,
        handler: F,
    ) -> Self
    where
        Req: DeserializeOwned + Validate + Send + 'static,
        Resp: Serialize + Send + 'static,
        F: Fn(Req) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Resp, ServiceError>> + Send + 'static,
    {
        let handler = Arc::new(handler);
        let handler: Handler = Arc::new(move |message: Message| {
            let handler = handler.clone();
            Box::pin(async move {
                let request = decode::<Req>(&message.payload)?;
                let response = handler(request).await?;
                serde_json::to_vec(&response).map(Bytes::from).map_err(ServiceError::internal)
            })
        });
        self.endpoints.push(EndpointSpec { name: name.into(), subject: subject.into(), handler });
        self
    }

    /// Subscribes every endpoint and the discovery subjects and starts serving.
    pub async fn start(self, client: Client) -> Result<ServiceHandle, MicroError> {
        if self.name.is_empty()
            || !self.name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            return Err(MicroError::InvalidName(self.name));
        }
        let id = nuid_like();
        let started = crate::time::now_rfc3339();
        let (stop_tx, stop_rx) = watch::channel(false);
        let permits = Arc::new(Semaphore::new(self.max_in_flight));
        let mut endpoints = Vec::with_capacity(self.endpoints.len());
        let mut endpoint_tasks = Vec::with_capacity(self.endpoints.len());
        for spec in self.endpoints {
            let subscriber = subscribe(&client, &spec.subject, Some(QUEUE_GROUP)).await?;
            let stats = Arc::new(Mutex::new(EndpointStats::default()));
            endpoints.push(EndpointState {
                name: spec.name.clone(),
                subject: spec.subject.clone(),
                stats: stats.clone(),
            });
            let worker = EndpointWorker {
                client: client.clone(),
                ok: metrics::histogram!(crate::observe::MICRO_DURATION, "endpoint" => spec.subject.clone(), "status" => "ok"),
                subject: spec.subject,
                handler: spec.handler,
                stats,
                permits: permits.clone(),
            };
            endpoint_tasks.push(tokio::spawn(worker.run(subscriber, stop_rx.clone())));
        }
        let shared = Arc::new(Shared {
            name: self.name.clone(),
            id: id.clone(),
            version: self.version,
            description: self.description,
            metadata: self.metadata,
            started,
            endpoints,
            stats_data: self.stats_data,
        });
        let mut verbs = Vec::new();
        for verb in [Verb::Ping, Verb::Info, Verb::Stats] {
            for subject in [
                srv_subject(verb.as_str(), None, None),
                srv_subject(verb.as_str(), Some(&shared.name), None),
                srv_subject(verb.as_str(), Some(&shared.name), Some(&id)),
            ] {
                let subscriber = subscribe(&client, &subject, None).await?;
                verbs.push(subscriber.map(move |message| (verb, message)).boxed());
            }
        }
        let discovery =
            tokio::spawn(answer_discovery(client, shared.clone(), stream::select_all(verbs), stop_rx));
        tracing::info!(service = %shared.name, id = %id, "micro service started");
        Ok(ServiceHandle { shared, stop: stop_tx, endpoint_tasks, discovery: Some(discovery) })
    }
}

async fn subscribe(client: &Client, subject: &str, queue: Option<&str>) -> Result<Subscriber, MicroError> {
    let result = match queue {
        Some(queue) => client.queue_subscribe(subject.to_string(), queue.to_string()).await,
        None => client.subscribe(subject.to_string()).await,
    };
    result.map_err(|source| MicroError::Subscribe { subject: subject.to_string(), source })
}

/// A 22-character random id, like the NUIDs other micro implementations use.
fn nuid_like() -> String {
    let a = uuid::Uuid::new_v4().simple().to_string();
    a[..22].to_uppercase()
}

#[derive(Debug, Clone, Copy)]
enum Verb {
    Ping,
    Info,
    Stats,
}

impl Verb {
    fn as_str(self) -> &'static str {
        match self {
            Verb::Ping => "PING",
            Verb::Info => "INFO",
            Verb::Stats => "STATS",
        }
    }
}

#[derive(Debug, Default, Clone)]
struct EndpointStats {
    requests: u64,
    errors: u64,
    processing_time: Duration,
    last_error: Option<String>,
}

struct EndpointState {
    name: String,
    subject: String,
    stats: Arc<Mutex<EndpointStats>>,
}

struct Shared {
    name: String,
    id: String,
    version: String,
    description: String,
    metadata: HashMap<String, String>,
    started: String,
    endpoints: Vec<EndpointState>,
    stats_data: Option<StatsData>,
}

impl Shared {
    fn ping(&self) -> PingResponse {
        PingResponse {
            kind: "io.nats.micro.v1.ping_response".into(),
            name: self.name.clone(),
            id: self.id.clone(),
            version: self.version.clone(),
            metadata: self.metadata.clone(),
        }
    }

    fn info(&self) -> InfoResponse {
        InfoResponse {
            kind: "io.nats.micro.v1.info_response".into(),
            name: self.name.clone(),
            id: self.id.clone(),
            version: self.version.clone(),
            metadata: self.metadata.clone(),
            description: self.description.clone(),
            endpoints: self
                .endpoints
                .iter()
                .map(|e| EndpointInfo {
                    name: e.name.clone(),
                    subject: e.subject.clone(),
                    queue_group: QUEUE_GROUP.into(),
                    metadata: None,
                })
                .collect(),
        }
    }

    fn stats(&self) -> StatsResponse {
        let data = self.stats_data.as_ref().map(|data| data());
        StatsResponse {
            kind: "io.nats.micro.v1.stats_response".into(),
            name: self.name.clone(),
            id: self.id.clone(),
            version: self.version.clone(),
            metadata: self.metadata.clone(),
            started: self.started.clone(),
            endpoints: self
                .endpoints
                .iter()
                .map(|e| {
                    let stats = lock(&e.stats).clone();
                    let average = if stats.requests == 0 {
                        0
                    } else {
                        (stats.processing_time.as_nanos() / u128::from(stats.requests)) as u64
                    };
                    EndpointStatsResponse {
                        name: e.name.clone(),
                        subject: e.subject.clone(),
                        queue_group: QUEUE_GROUP.into(),
                        num_requests: stats.requests,
                        num_errors: stats.errors,
                        processing_time: stats.processing_time.as_nanos() as u64,
                        average_processing_time: average,
                        last_error: stats.last_error.unwrap_or_default(),
                        data: data.clone(),
                    }
                })
                .collect(),
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// `$SRV.PING` reply (micro protocol v1).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PingResponse {
    /// `io.nats.micro.v1.ping_response`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Service name.
    pub name: String,
    /// Instance id.
    pub id: String,
    /// Service version.
    pub version: String,
    /// Service metadata.
    #[serde(default, deserialize_with = "null_as_default")]
    pub metadata: HashMap<String, String>,
}

/// `$SRV.INFO` reply (micro protocol v1).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InfoResponse {
    /// `io.nats.micro.v1.info_response`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Service name.
    pub name: String,
    /// Instance id.
    pub id: String,
    /// Service version.
    pub version: String,
    /// Service metadata.
    #[serde(default, deserialize_with = "null_as_default")]
    pub metadata: HashMap<String, String>,
    /// What the service does.
    #[serde(default)]
    pub description: String,
    /// The service's endpoints.
    #[serde(default, deserialize_with = "null_as_default")]
    pub endpoints: Vec<EndpointInfo>,
}

/// One endpoint in an INFO reply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointInfo {
    /// Endpoint name.
    pub name: String,
    /// Subject it answers.
    pub subject: String,
    /// Queue group it joins.
    #[serde(default)]
    pub queue_group: String,
    /// Endpoint metadata.
    #[serde(default)]
    pub metadata: Option<HashMap<String, String>>,
}

/// `$SRV.STATS` reply (micro protocol v1).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatsResponse {
    /// `io.nats.micro.v1.stats_response`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Service name.
    pub name: String,
    /// Instance id.
    pub id: String,
    /// Service version.
    pub version: String,
    /// Service metadata.
    #[serde(default, deserialize_with = "null_as_default")]
    pub metadata: HashMap<String, String>,
    /// When the instance started (RFC 3339).
    pub started: String,
    /// Per-endpoint statistics.
    #[serde(default, deserialize_with = "null_as_default")]
    pub endpoints: Vec<EndpointStatsResponse>,
}

/// One endpoint in a STATS reply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointStatsResponse {
    /// Endpoint name.
    pub name: String,
    /// Subject it answers.
    pub subject: String,
    /// Queue group it joins.
    #[serde(default)]
    pub queue_group: String,
    /// Requests answered.
    pub num_requests: u64,
    /// Requests answered with an error.
    pub num_errors: u64,
    /// Total processing time, in nanoseconds.
    pub processing_time: u64,
    /// Average processing time, in nanoseconds.
    pub average_processing_time: u64,
    /// The last error, `"<code>: <message>"`, or empty.
    #[serde(default)]
    pub last_error: String,
    /// Endpoint-specific data.
    #[serde(default)]
    pub data: Option<serde_json::Value>,
}

/// Resolves once the stop flag is set (or its sender is gone).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|stopped| *stopped).await;
}

fn null_as_default<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(deserializer)?.unwrap_or_default())
}

async fn answer_discovery(
    client: Client,
    shared: Arc<Shared>,
    mut requests: stream::SelectAll<stream::BoxStream<'static, (Verb, Message)>>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let (verb, message) = tokio::select! {
            next = requests.next() => match next {
                Some(next) => next,
                None => break,
            },
            _ = stopped(&mut stop) => break,
        };
        let Some(reply) = message.reply else { continue };
        let body = match verb {
            Verb::Ping => serde_json::to_vec(&shared.ping()),
            Verb::Info => serde_json::to_vec(&shared.info()),
            Verb::Stats => serde_json::to_vec(&shared.stats()),
        };
        match body {
            Ok(body) => {
                if let Err(err) = client.publish(reply, body.into()).await {
                    tracing::warn!(error = %err, "failed to answer micro discovery request");
                }
            }
            Err(err) => tracing::error!(error = %err, "failed to encode micro discovery reply"),
        }
    }
}

struct EndpointWorker {
    client: Client,
    subject: String,
    /// Its `status="ok"` latency series.
    ok: metrics::Histogram,
    handler: Handler,
    stats: Arc<Mutex<EndpointStats>>,
    permits: Arc<Semaphore>,
}

impl EndpointWorker {
    async fn run(self, mut subscriber: Subscriber, mut stop: watch::Receiver<bool>) {
        let this = Arc::new(self);
        let mut in_flight = JoinSet::new();
        let mut draining = false;
        let mut drain_deadline = None;
        loop {
            let next = tokio::select! {
                next = subscriber.next() => next,
                _ = stopped(&mut stop), if !draining => {
                    draining = true;
                    drain_deadline = Some(tokio::time::Instant::now() + DRAIN_DEADLINE);
                    if let Err(err) = subscriber.drain().await {
                        tracing::warn!(subject = %this.subject, error = %err, "failed to drain endpoint subscription");
                        break;
                    }
                    continue;
                }
                _ = tokio::time::sleep_until(drain_deadline.unwrap_or_else(tokio::time::Instant::now)), if drain_deadline.is_some() => {
                    tracing::warn!(subject = %this.subject, "endpoint subscription did not drain in time");
                    break;
                }
                Some(_) = in_flight.join_next(), if !in_flight.is_empty() => continue,
            };
            let Some(message) = next else { break };
            // A deadline counts from here: time spent waiting for a slot below is the request's.
            let received = tokio::time::Instant::now();
            // Wait for a slot before taking the next request: past the limit, requests queue in the
            // subscription instead of piling up as tasks.
            let Ok(permit) = this.permits.clone().acquire_owned().await else {
                break;
            };
            let worker = this.clone();
            in_flight.spawn(async move {
                worker.handle(message, received).await;
                drop(permit);
            });
        }
        while in_flight.join_next().await.is_some() {}
        tracing::debug!(subject = %this.subject, "endpoint stopped");
    }

    async fn handle(&self, message: Message, received: tokio::time::Instant) {
        let started = Instant::now();
        let deadline = crate::deadline::from_headers(message.headers.as_ref(), received);
        let reply = message.reply.clone();
        // The handler's span is a child of the caller's (its `traceparent` header).
        let span = tracing::info_span!(
            "request",
            otel.name = %self.subject,
            otel.kind = "server",
            rpc.system = "nats-micro",
            rpc.method = %self.subject,
            rpc.response.code = tracing::field::Empty,
            otel.status_code = tracing::field::Empty,
        );
        let parent = message.headers.as_ref().and_then(|h| h.get(crate::telemetry::TRACEPARENT));
        crate::telemetry::set_parent(&span, parent.map(|v| v.as_str()));
        let result = match deadline {
            None => self.run_handler(message, &span).await,
            // The caller has given up already: the work would be for nobody.
            Some(deadline) if tokio::time::Instant::now() >= deadline => {
                self.deadline_dropped("queued");
                Err(ServiceError::deadline_exceeded(
                    "the caller's deadline passed before the request was handled",
                ))
            }
            Some(deadline) => {
                let work = crate::deadline::scope(deadline, self.run_handler(message, &span));
                match tokio::time::timeout_at(deadline, work).await {
                    Ok(result) => result,
                    Err(_) => {
                        // Dropping the handler's future cancels its work (a transaction rolls back).
                        self.deadline_dropped("running");
                        Err(ServiceError::deadline_exceeded(
                            "the caller's deadline passed while the request was handled",
                        ))
                    }
                }
            }
        };
        match &result {
            Ok(_) => self.ok.record(started.elapsed().as_secs_f64()),
            Err(err) => {
                span.record("rpc.response.code", err.code);
                if err.code >= 500 {
                    span.record("otel.status_code", "error");
                }
                metrics::histogram!(crate::observe::MICRO_DURATION, "endpoint" => self.subject.clone(), "status" => err.code.to_string())
                    .record(started.elapsed().as_secs_f64());
            }
        }
        let Some(reply) = reply else {
            tracing::debug!(subject = %self.subject, "request without a reply subject: nothing to answer");
            return;
        };
        let sent = match &result {
            Ok(body) => self.client.publish(reply, body.clone()).await,
            Err(err) => {
                let mut headers = HeaderMap::new();
                headers.insert(SERVICE_ERROR_HEADER, err.message.as_str());
                headers.insert(SERVICE_ERROR_CODE_HEADER, err.code.to_string().as_str());
                let body = serde_json::to_vec(&ErrorBody { error: err.message.clone(), code: err.code })
                    .unwrap_or_default();
                self.client.publish_with_headers(reply, headers, body.into()).await
            }
        };
        if let Err(err) = sent {
            tracing::warn!(subject = %self.subject, error = %err, "failed to send reply");
        }
        let mut stats = lock(&self.stats);
        stats.requests += 1;
        stats.processing_time += started.elapsed();
        if let Err(err) = result {
            stats.errors += 1;
            stats.last_error = Some(err.to_string());
        }
    }
}

impl EndpointWorker {
    /// The handler, its panics turned into a 500.
    async fn run_handler(&self, message: Message, span: &tracing::Span) -> Result<Bytes, ServiceError> {
        AssertUnwindSafe((self.handler)(message).instrument(span.clone()))
            .catch_unwind()
            .await
            .unwrap_or_else(|_| Err(ServiceError::internal("request handler panicked")))
    }

    fn deadline_dropped(&self, stage: &'static str) {
        tracing::debug!(subject = %self.subject, stage, "request dropped: the caller's deadline passed");
        metrics::counter!(crate::observe::MICRO_DEADLINE_DROPPED, "endpoint" => self.subject.clone(), "stage" => stage)
            .increment(1);
    }
}

/// A running micro service. Call [`ServiceHandle::stop`] to finish in-flight requests and leave.
pub struct ServiceHandle {
    shared: Arc<Shared>,
    stop: watch::Sender<bool>,
    endpoint_tasks: Vec<JoinHandle<()>>,
    discovery: Option<JoinHandle<()>>,
}

impl ServiceHandle {
    /// The instance id, as discovery reports it.
    pub fn id(&self) -> &str {
        &self.shared.id
    }

    /// The service name.
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// This instance's statistics, as `$SRV.STATS` reports them.
    pub fn stats(&self) -> StatsResponse {
        self.shared.stats()
    }

    /// Stops taking requests, answers every request already received, then stops answering
    /// discovery.
    pub async fn stop(mut self) {
        self.stop.send_replace(true);
        for task in self.endpoint_tasks.drain(..) {
            if let Err(err) = task.await {
                tracing::error!(error = %err, "endpoint task failed");
            }
        }
        if let Some(discovery) = self.discovery.take() {
            let _ = discovery.await;
        }
        tracing::info!(service = %self.shared.name, id = %self.shared.id, "micro service stopped");
    }
}

impl Drop for ServiceHandle {
    fn drop(&mut self) {
        // A handle dropped without `stop` must not leave tasks serving behind it.
        for task in &self.endpoint_tasks {
            task.abort();
        }
        if let Some(discovery) = &self.discovery {
            discovery.abort();
        }
    }
}
