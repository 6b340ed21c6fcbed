//! The dashboard's collector: `status`'s report every interval, turned into what the page
//! draws: rates from successive reports, instances that stopped answering, short histories.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::Value;
use tokio::sync::watch;

use crate::connect::StackArgs;
use crate::status::{ConsumerReport, Report, StreamReport};

/// Seconds of history kept for the charts.
const HISTORY: usize = 300;
/// How long an instance that stopped answering stays on the page (red) before it is dropped.
const GONE_FOR: Duration = Duration::from_secs(300);
/// How long discovery replies are waited for, per verb.
const DISCOVERY_WAIT: Duration = Duration::from_millis(250);

/// What the page shows, at one moment.
#[derive(Debug, Clone, Serialize)]
pub struct Snapshot {
    /// When it was gathered (RFC 3339).
    pub at: String,
    /// Unix milliseconds of `at`.
    pub at_ms: u64,
    /// The NATS connection.
    pub nats: NatsView,
    /// Whether the DLQ actions are on.
    pub actions: bool,
    /// Micro services and their instances.
    pub services: Vec<ServiceView>,
    /// Streams.
    pub streams: Vec<StreamView>,
    /// Durable consumers.
    pub consumers: Vec<ConsumerView>,
    /// Orders placed, by outcome.
    pub orders: OrdersView,
}

/// The collector's NATS connection.
#[derive(Debug, Clone, Serialize)]
pub struct NatsView {
    /// Connected now.
    pub connected: bool,
    /// The server, and how it was found.
    pub origin: String,
    /// Why not, when not.
    pub error: Option<String>,
}

/// One micro service.
#[derive(Debug, Clone, Serialize)]
pub struct ServiceView {
    /// Its name.
    pub name: String,
    /// Its version.
    pub version: String,
    /// Instances answering now.
    pub up: usize,
    /// Every instance seen in the last five minutes.
    pub instances: Vec<InstanceView>,
    /// Its endpoints, summed over the instances.
    pub endpoints: Vec<EndpointView>,
    /// The breaker it reports for its calls (`data.breaker` of its STATS), if any.
    pub breaker: Option<Value>,
}

/// One instance.
#[derive(Debug, Clone, Serialize)]
pub struct InstanceView {
    /// Its micro id.
    pub id: String,
    /// Whether it answered the last STATS.
    pub up: bool,
    /// Seconds since it last answered.
    pub seen_ago_s: f64,
}

/// One endpoint.
#[derive(Debug, Clone, Serialize)]
pub struct EndpointView {
    /// Name.
    pub name: String,
    /// Subject.
    pub subject: String,
    /// Requests answered in all.
    pub requests: u64,
    /// Error replies in all.
    pub errors: u64,
    /// Requests per second since the last snapshot.
    pub rate: f64,
    /// Error replies per second since the last snapshot.
    pub error_rate: f64,
    /// Average processing time, microseconds.
    pub average_us: f64,
    /// The last error reported.
    pub last_error: String,
}

/// One stream, as `status` reports it, with its publish rate.
#[derive(Debug, Clone, Serialize)]
pub struct StreamView {
    /// What `status` reports.
    #[serde(flatten)]
    pub stream: StreamReport,
    /// Messages published per second since the last snapshot.
    pub publish_rate: f64,
}

/// One durable consumer, as `status` reports it, with its recent lag.
#[derive(Debug, Clone, Serialize)]
pub struct ConsumerView {
    /// What `status` reports.
    #[serde(flatten)]
    pub consumer: ConsumerReport,
    /// Lag (pending + ack pending), one value per snapshot, oldest first.
    pub lag_history: Vec<u64>,
}

/// Orders by outcome, from the order service's STATS data.
#[derive(Debug, Clone, Default, Serialize)]
pub struct OrdersView {
    /// Totals since the order service instances started, by outcome.
    pub totals: BTreeMap<String, u64>,
    /// Per second, oldest first: accepted, out of stock, unavailable (and the time).
    pub history: Vec<OrdersPoint>,
}

/// Orders per second at one moment.
#[derive(Debug, Clone, Default, Serialize)]
pub struct OrdersPoint {
    /// Unix milliseconds.
    pub at_ms: u64,
    /// Accepted per second.
    pub accepted: f64,
    /// Out of stock (or unknown SKU) per second.
    pub out_of_stock: f64,
    /// Inventory unavailable per second.
    pub unavailable: f64,
}

impl Snapshot {
    /// The snapshot before the first gathering.
    pub fn starting(actions: bool) -> Snapshot {
        Snapshot {
            at: switchyard::time::now_rfc3339(),
            at_ms: now_ms(),
            nats: NatsView { connected: false, origin: String::new(), error: Some("connecting".into()) },
            actions,
            services: Vec::new(),
            streams: Vec::new(),
            consumers: Vec::new(),
            orders: OrdersView::default(),
        }
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// What the collector remembers between reports.
#[derive(Default)]
struct Memory {
    last: Option<(Instant, Report)>,
    /// (service, instance) -> when it last answered.
    instances: HashMap<(String, String), Instant>,
    /// (stream, consumer) -> lag history.
    lags: HashMap<(String, String), VecDeque<u64>>,
    orders: VecDeque<OrdersPoint>,
    last_orders: Option<BTreeMap<String, u64>>,
    /// The last services seen, kept while NATS is away.
    services: Vec<ServiceView>,
}

/// Gathers every `interval` until `stop`, publishing snapshots and the current client.
pub async fn run(
    stack: StackArgs,
    interval: Duration,
    actions: bool,
    snapshots: watch::Sender<Arc<Snapshot>>,
    clients: watch::Sender<Option<async_nats::Client>>,
    stop: switchyard::Shutdown,
) {
    let mut memory = Memory::default();
    let mut client: Option<async_nats::Client> = None;
    let origin = stack.origin();
    loop {
        let started = Instant::now();
        if client.is_none() {
            match tokio::time::timeout(Duration::from_secs(3), stack.connect("dashboard")).await {
                Ok(Ok(connected)) => {
                    client = Some(connected.clone());
                    let _ = clients.send(Some(connected));
                }
                Ok(Err(err)) => {
                    snapshots.send_replace(Arc::new(memory.away(actions, &origin, format!("{err:#}"))));
                }
                Err(_) => {
                    snapshots.send_replace(Arc::new(memory.away(
                        actions,
                        &origin,
                        "connecting timed out".into(),
                    )));
                }
            }
        }
        if let Some(connected) = &client {
            let snapshot = if connected.connection_state() != async_nats::connection::State::Connected {
                memory.away(actions, &origin, "disconnected; reconnecting".into())
            } else {
                match tokio::time::timeout(
                    Duration::from_secs(5),
                    crate::status::collect(connected, DISCOVERY_WAIT),
                )
                .await
                {
                    Ok(Ok(report)) => memory.next(report, actions, &origin),
                    Ok(Err(err)) => memory.away(actions, &origin, format!("{err:#}")),
                    Err(_) => memory.away(actions, &origin, "gathering timed out".into()),
                }
            };
            snapshots.send_replace(Arc::new(snapshot));
        }
        let wait = interval.saturating_sub(started.elapsed()).max(Duration::from_millis(100));
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stop.wait() => break,
        }
    }
    if let Some(client) = client {
        switchyard::nats::drain(&client, Duration::from_secs(2)).await;
    }
}

impl Memory {
    /// A snapshot saying NATS is away, with what was last seen (every instance shown down).
    fn away(&mut self, actions: bool, origin: &str, error: String) -> Snapshot {
        let mut services = self.services.clone();
        for service in &mut services {
            service.up = 0;
            for instance in &mut service.instances {
                instance.up = false;
            }
            for endpoint in &mut service.endpoints {
                endpoint.rate = 0.0;
                endpoint.error_rate = 0.0;
            }
        }
        // The time between reports grows while away: the next rates start afresh.
        self.last = None;
        Snapshot {
            at: switchyard::time::now_rfc3339(),
            at_ms: now_ms(),
            nats: NatsView { connected: false, origin: origin.to_string(), error: Some(error) },
            actions,
            services,
            streams: Vec::new(),
            consumers: Vec::new(),
            orders: OrdersView {
                totals: self.last_orders.clone().unwrap_or_default(),
                history: self.orders.iter().cloned().collect(),
            },
        }
    }

    /// The next snapshot from a fresh report.
    fn next(&mut self, report: Report, actions: bool, origin: &str) -> Snapshot {
        let now = Instant::now();
        let elapsed =
            self.last.as_ref().map(|(at, _)| now.duration_since(*at).as_secs_f64()).filter(|s| *s > 0.0);
        let previous = self.last.as_ref().map(|(_, report)| report);
        let rate = |now: u64, before: Option<u64>| match (before, elapsed) {
            (Some(before), Some(seconds)) => now.saturating_sub(before) as f64 / seconds,
            _ => 0.0,
        };

        for service in &report.services {
            for id in &service.instances {
                self.instances.insert((service.name.clone(), id.clone()), now);
            }
        }
        self.instances.retain(|_, seen| now.duration_since(*seen) < GONE_FOR);
        let mut names: Vec<String> = self.instances.keys().map(|(service, _)| service.clone()).collect();
        names.sort();
        names.dedup();
        let mut services = Vec::new();
        for name in names {
            let current = report.services.iter().find(|s| s.name == name);
            let before = previous.and_then(|p| p.services.iter().find(|s| s.name == name));
            let kept = self.services.iter().find(|s| s.name == name);
            let mut instances: Vec<InstanceView> = self
                .instances
                .iter()
                .filter(|((service, _), _)| *service == name)
                .map(|((_, id), seen)| InstanceView {
                    id: id.clone(),
                    up: current.is_some_and(|s| s.instances.contains(id)),
                    seen_ago_s: now.duration_since(*seen).as_secs_f64(),
                })
                .collect();
            instances.sort_by(|a, b| a.id.cmp(&b.id));
            let endpoints = match current {
                Some(service) => service
                    .endpoints
                    .iter()
                    .map(|e| {
                        let earlier = before.and_then(|b| b.endpoints.iter().find(|x| x.name == e.name));
                        EndpointView {
                            name: e.name.clone(),
                            subject: e.subject.clone(),
                            requests: e.requests,
                            errors: e.errors,
                            rate: rate(e.requests, earlier.map(|x| x.requests)),
                            error_rate: rate(e.errors, earlier.map(|x| x.errors)),
                            average_us: e.average_us,
                            last_error: e.last_error.clone(),
                        }
                    })
                    .collect(),
                None => kept
                    .map(|k| k.endpoints.clone())
                    .unwrap_or_default()
                    .into_iter()
                    .map(|mut e| {
                        e.rate = 0.0;
                        e.error_rate = 0.0;
                        e
                    })
                    .collect(),
            };
            services.push(ServiceView {
                name: name.clone(),
                version: current
                    .map(|s| s.version.clone())
                    .or_else(|| kept.map(|k| k.version.clone()))
                    .unwrap_or_default(),
                up: instances.iter().filter(|i| i.up).count(),
                instances,
                endpoints,
                breaker: current.and_then(|s| s.data.as_ref()).and_then(|d| d.get("breaker")).cloned(),
            });
        }

        let streams = report
            .streams
            .iter()
            .map(|s| StreamView {
                stream: s.clone(),
                publish_rate: rate(
                    s.last_seq,
                    previous.and_then(|p| p.streams.iter().find(|x| x.name == s.name)).map(|x| x.last_seq),
                ),
            })
            .collect();

        let consumers = report
            .consumers
            .iter()
            .map(|c| {
                let history = self.lags.entry((c.stream.clone(), c.name.clone())).or_default();
                history.push_back(c.pending + c.ack_pending as u64);
                while history.len() > 60 {
                    history.pop_front();
                }
                ConsumerView { consumer: c.clone(), lag_history: history.iter().copied().collect() }
            })
            .collect();

        // Orders: the order service's tallies, summed over its instances.
        let totals: Option<BTreeMap<String, u64>> =
            report.services.iter().find(|s| s.name == contracts::names::ORDERS_SERVICE).map(|s| {
                let mut totals = BTreeMap::new();
                for data in s.data_by_instance.values() {
                    let tally: BTreeMap<String, u64> = data
                        .get("orders")
                        .and_then(|o| serde_json::from_value(o.clone()).ok())
                        .unwrap_or_default();
                    for (outcome, count) in tally {
                        *totals.entry(outcome).or_insert(0) += count;
                    }
                }
                totals
            });
        if let Some(totals) = &totals {
            let delta = |keys: &[&str]| -> f64 {
                let sum = |m: &BTreeMap<String, u64>| {
                    keys.iter().map(|k| m.get(*k).copied().unwrap_or(0)).sum::<u64>()
                };
                rate(sum(totals), self.last_orders.as_ref().map(sum))
            };
            self.orders.push_back(OrdersPoint {
                at_ms: now_ms(),
                accepted: delta(&["accepted"]),
                out_of_stock: delta(&["out_of_stock", "unknown_sku"]),
                unavailable: delta(&["inventory_unavailable"]),
            });
            while self.orders.len() > HISTORY {
                self.orders.pop_front();
            }
        }
        if totals.is_some() {
            self.last_orders = totals;
        }
        self.services = services.clone();
        self.last = Some((now, report));
        Snapshot {
            at: switchyard::time::now_rfc3339(),
            at_ms: now_ms(),
            nats: NatsView { connected: true, origin: origin.to_string(), error: None },
            actions,
            services,
            streams,
            consumers,
            orders: OrdersView {
                totals: self.last_orders.clone().unwrap_or_default(),
                history: self.orders.iter().cloned().collect(),
            },
        }
    }
}
