//! Declaring the streams against a real nats-server: created once, left alone when equal,
//! updated on purpose when a limit differs, refused (naming the field) when a field cannot change
//! in place; verifying without declaring.

use std::time::Duration;

use async_nats::jetstream::{self, stream};
use switchyard::streams::{self, Declared, StreamError, StreamSettings};
use switchyard::testkit::NatsServer;

async fn js(nats: &NatsServer) -> jetstream::Context {
    jetstream::new(nats.client().await)
}

#[tokio::test]
async fn streams_are_created_then_left_alone_then_updated_when_a_limit_changes() {
    let nats = NatsServer::start();
    let js = js(&nats).await;
    let settings = StreamSettings::default();
    let configs = streams::stream_configs(contracts::streams::ALL, &settings);
    for config in configs.clone() {
        assert_eq!(streams::ensure(&js, config).await.expect("create"), Declared::Created);
    }
    for config in configs {
        assert_eq!(streams::ensure(&js, config).await.expect("again"), Declared::Unchanged);
    }
    // A different duplicate window is a limit: the stream is updated, and says so.
    let changed = StreamSettings { duplicate_window: Duration::from_secs(60), ..settings };
    let orders = contracts::streams::ORDERS.config(&changed);
    assert_eq!(streams::ensure(&js, orders).await.expect("update"), Declared::Updated);
    let mut stream = js.get_stream("ORDERS").await.expect("ORDERS");
    assert_eq!(stream.info().await.expect("info").config.duplicate_window, Duration::from_secs(60));
    // Verification sees the difference but changes nothing (a service may not).
    streams::verify_streams(&js, contracts::streams::ALL, &settings)
        .await
        .expect("verify logs a difference, no error");
    let mut stream = js.get_stream("ORDERS").await.expect("ORDERS");
    assert_eq!(stream.info().await.expect("info").config.duplicate_window, Duration::from_secs(60));
}

#[tokio::test]
async fn a_field_that_cannot_change_in_place_is_an_error_naming_it() {
    let nats = NatsServer::start();
    let js = js(&nats).await;
    let settings = StreamSettings::default();
    // ORDERS exists with other subjects, DLQ with memory storage.
    js.create_stream(stream::Config {
        name: "ORDERS".into(),
        subjects: vec!["orders.other.>".into()],
        ..Default::default()
    })
    .await
    .expect("ORDERS");
    js.create_stream(stream::Config {
        name: "DLQ".into(),
        subjects: vec!["dlq.>".into()],
        storage: stream::StorageType::Memory,
        ..Default::default()
    })
    .await
    .expect("DLQ");
    let err = streams::ensure(&js, contracts::streams::ORDERS.config(&settings))
        .await
        .expect_err("subjects differ");
    assert!(matches!(&err, StreamError::Conflict { field: "subjects", .. }), "{err:?}");
    assert!(err.to_string().contains("subjects") && err.to_string().contains("orders.other.>"), "{err}");
    let err = streams::ensure(&js, streams::dlq_config(&settings)).await.expect_err("storage differs");
    assert!(matches!(&err, StreamError::Conflict { field: "storage", .. }), "{err:?}");
    let err = streams::verify_streams(&js, contracts::streams::ALL, &settings)
        .await
        .expect_err("verify refuses too");
    assert!(matches!(&err, StreamError::Conflict { field: "subjects", .. }), "{err:?}");
}

#[tokio::test]
async fn verifying_a_missing_stream_says_to_provision_it() {
    let nats = NatsServer::start();
    let js = js(&nats).await;
    let err = streams::verify_streams(&js, contracts::streams::ALL, &StreamSettings::default())
        .await
        .expect_err("nothing provisioned");
    assert!(matches!(&err, StreamError::Missing { stream } if stream == "ORDERS"), "{err:?}");
    assert!(err.to_string().contains("switchyard provision"), "{err}");
}
