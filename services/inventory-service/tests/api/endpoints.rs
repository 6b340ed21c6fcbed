use std::time::Duration;

use bytes::Bytes;
use contracts::names;
use contracts::{
    CheckReply, CheckRequest, ReleaseReply, ReleaseRequest, ReserveReply, ReserveRequest, StockLevel,
    StockReply, StockRequest,
};
use switchyard::client::RequestError;
use uuid::Uuid;

use crate::helpers::{item, spawn_inventory};

#[tokio::test]
async fn restock_then_stock_reports_the_new_levels() {
    let app = spawn_inventory().await;
    assert_eq!(app.restock("A-1", 10).await.available, 10);
    assert_eq!(app.restock("A-1", 5).await.available, 15);
    app.restock("B-2", 3).await;

    let all: StockReply = app.call(names::INVENTORY_STOCK, &StockRequest::default()).await.unwrap();
    assert_eq!(
        all.items,
        vec![
            StockLevel { sku: "A-1".into(), available: 15, reserved: 0 },
            StockLevel { sku: "B-2".into(), available: 3, reserved: 0 },
        ]
    );
    let some: StockReply = app
        .call(names::INVENTORY_STOCK, &StockRequest { skus: vec!["B-2".into(), "Z-9".into()] })
        .await
        .unwrap();
    assert_eq!(
        some.items,
        vec![
            StockLevel { sku: "B-2".into(), available: 3, reserved: 0 },
            StockLevel { sku: "Z-9".into(), available: 0, reserved: 0 },
        ]
    );
}

#[tokio::test]
async fn check_reports_short_and_unknown_skus_as_unavailable() {
    let app = spawn_inventory().await;
    app.restock("A-1", 2).await;
    app.restock("B-2", 1).await;

    let ok: CheckReply =
        app.call(names::INVENTORY_CHECK, &CheckRequest { items: vec![item("A-1", 2)] }).await.unwrap();
    assert_eq!(ok, CheckReply { all_available: true, unavailable_ids: vec![], unknown_ids: vec![] });

    let short: CheckReply = app
        .call(
            names::INVENTORY_CHECK,
            &CheckRequest { items: vec![item("A-1", 1), item("B-2", 2), item("NOPE", 1)] },
        )
        .await
        .unwrap();
    assert_eq!(
        short,
        CheckReply {
            all_available: false,
            unavailable_ids: vec!["B-2".into(), "NOPE".into()],
            unknown_ids: vec!["NOPE".into()]
        }
    );
}

#[tokio::test]
async fn reserve_moves_stock_and_release_puts_it_back() {
    let app = spawn_inventory().await;
    app.restock("A-1", 10).await;
    let order_id = Uuid::new_v4();

    let reserved: ReserveReply = app
        .call(names::INVENTORY_RESERVE, &ReserveRequest { order_id, items: vec![item("A-1", 4)] })
        .await
        .unwrap();
    assert!(reserved.reserved);
    let stock: StockReply =
        app.call(names::INVENTORY_STOCK, &StockRequest { skus: vec!["A-1".into()] }).await.unwrap();
    assert_eq!(stock.items[0], StockLevel { sku: "A-1".into(), available: 6, reserved: 4 });

    let released: ReleaseReply =
        app.call(names::INVENTORY_RELEASE, &ReleaseRequest { order_id }).await.unwrap();
    assert!(released.released);
    // Releasing again is a no-op that still says released.
    let again: ReleaseReply = app.call(names::INVENTORY_RELEASE, &ReleaseRequest { order_id }).await.unwrap();
    assert!(again.released);
    let stock: StockReply =
        app.call(names::INVENTORY_STOCK, &StockRequest { skus: vec!["A-1".into()] }).await.unwrap();
    assert_eq!(stock.items[0], StockLevel { sku: "A-1".into(), available: 10, reserved: 0 });

    // An order that never reserved has nothing to release.
    let none: ReleaseReply =
        app.call(names::INVENTORY_RELEASE, &ReleaseRequest { order_id: Uuid::new_v4() }).await.unwrap();
    assert!(!none.released);
    // A released reservation cannot be reserved again under the same order id.
    let err = app
        .call::<_, ReserveReply>(
            names::INVENTORY_RESERVE,
            &ReserveRequest { order_id, items: vec![item("A-1", 1)] },
        )
        .await
        .unwrap_err();
    assert_eq!(err.service_code(), Some(409), "{err:?}");
}

#[tokio::test]
async fn reserve_is_all_or_nothing_and_names_the_unknown_sku() {
    let app = spawn_inventory().await;
    app.restock("A-1", 10).await;
    let reply: ReserveReply = app
        .call(
            names::INVENTORY_RESERVE,
            &ReserveRequest { order_id: Uuid::new_v4(), items: vec![item("A-1", 1), item("GHOST", 1)] },
        )
        .await
        .unwrap();
    assert_eq!(
        reply,
        ReserveReply {
            reserved: false,
            unavailable_ids: vec!["GHOST".into()],
            unknown_ids: vec!["GHOST".into()]
        }
    );
    let stock: StockReply = app.call(names::INVENTORY_STOCK, &StockRequest::default()).await.unwrap();
    assert_eq!(stock.items[0], StockLevel { sku: "A-1".into(), available: 10, reserved: 0 });
}

#[tokio::test]
async fn a_repeated_reserve_answers_the_same_and_reserves_nothing_more() {
    let app = spawn_inventory().await;
    app.restock("A-1", 10).await;
    let request = ReserveRequest { order_id: Uuid::new_v4(), items: vec![item("A-1", 3)] };
    for _ in 0..3 {
        let reply: ReserveReply = app.call(names::INVENTORY_RESERVE, &request).await.unwrap();
        assert_eq!(reply, ReserveReply { reserved: true, unavailable_ids: vec![], unknown_ids: vec![] });
    }
    let stock: StockReply = app.call(names::INVENTORY_STOCK, &StockRequest::default()).await.unwrap();
    assert_eq!(stock.items[0], StockLevel { sku: "A-1".into(), available: 7, reserved: 3 });
}

#[tokio::test]
async fn malformed_json_gets_a_400_micro_error_with_a_json_body() {
    let app = spawn_inventory().await;
    let nats = app.client.nats();
    let reply = nats.request(names::INVENTORY_CHECK, Bytes::from_static(b"{not json")).await.unwrap();
    let headers = reply.headers.expect("error headers");
    assert_eq!(headers.get("Nats-Service-Error-Code").unwrap().as_str(), "400");
    assert!(headers.get("Nats-Service-Error").unwrap().as_str().starts_with("invalid json"));
    let body: serde_json::Value = serde_json::from_slice(&reply.payload).unwrap();
    assert_eq!(body["code"], 400);
    assert!(body["error"].as_str().unwrap().starts_with("invalid json"), "{body}");

    // The typed client turns it into a service error, and the service keeps serving.
    let err = app
        .client
        .request_raw(
            names::INVENTORY_RESERVE,
            Bytes::from_static(br#"{"order_id":"x"}"#),
            Duration::from_secs(5),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, RequestError::Service { code: 400, .. }), "{err:?}");
    let zero = app
        .client
        .request_raw(
            names::INVENTORY_CHECK,
            Bytes::from_static(br#"{"items":[{"sku":"A","quantity":0}]}"#),
            Duration::from_secs(5),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&zero, RequestError::Service { code: 400, message, .. } if message == "items[0].quantity must be between 1 and 1000000"),
        "{zero:?}"
    );
    // An array is not an object, even where serde could fill a struct by position.
    app.restock("A-1", 1).await;
    for (subject, payload) in [
        (names::INVENTORY_STOCK, &b"[]"[..]),
        (names::INVENTORY_CHECK, br#"[[{"sku":"A-1","quantity":1}]]"#),
        (names::INVENTORY_RESTOCK, br#"["A-1", 5]"#),
    ] {
        let err = app
            .client
            .request_raw(subject, Bytes::from_static(payload), Duration::from_secs(5))
            .await
            .unwrap_err();
        assert!(
            matches!(&err, RequestError::Service { code: 400, message, .. } if message.contains("expected a JSON object")),
            "{subject}: {err:?}"
        );
    }
}

#[tokio::test]
async fn a_stopped_service_answers_no_responders_at_once() {
    let mut app = spawn_inventory().await;
    app.instances.remove(0).stop().await;
    let err = app
        .client
        .request::<_, CheckReply>(names::INVENTORY_CHECK, &CheckRequest { items: vec![item("A", 1)] })
        .await
        .unwrap_err();
    // No responders, not a timeout: the client did not wait for an answer that could not come.
    assert!(matches!(err, RequestError::NoResponders { .. }), "{err:?}");
}
