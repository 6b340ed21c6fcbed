use contracts::names;
use contracts::{ReserveReply, ReserveRequest, StockLevel, StockReply, StockRequest};
use uuid::Uuid;

use crate::helpers::{TestInventory, item, spawn_inventory, spawn_inventory_on_postgres};

/// 100 orders race for 10 units: exactly 10 are reserved and stock never goes negative.
async fn hundred_concurrent_reserves_for_ten_units(app: TestInventory) {
    app.restock("HOT", 10).await;
    let mut calls = Vec::new();
    for _ in 0..100 {
        let client = app.client.clone();
        calls.push(tokio::spawn(async move {
            let request = ReserveRequest { order_id: Uuid::new_v4(), items: vec![item("HOT", 1)] };
            client.request::<_, ReserveReply>(names::INVENTORY_RESERVE, &request).await
        }));
    }
    let mut reserved = 0;
    let mut refused = 0;
    for call in calls {
        let reply = call.await.unwrap().expect("every reserve gets an answer");
        if reply.reserved {
            reserved += 1;
        } else {
            assert_eq!(reply.unavailable_ids, vec!["HOT".to_string()]);
            refused += 1;
        }
    }
    assert_eq!((reserved, refused), (10, 90));
    let stock: StockReply = app.call(names::INVENTORY_STOCK, &StockRequest::default()).await.unwrap();
    assert_eq!(stock.items, vec![StockLevel { sku: "HOT".into(), available: 0, reserved: 10 }]);
}

#[tokio::test]
async fn hundred_concurrent_reserves_for_ten_units_accept_exactly_ten_on_sqlite() {
    hundred_concurrent_reserves_for_ten_units(spawn_inventory().await).await;
}

#[tokio::test]
async fn hundred_concurrent_reserves_for_ten_units_accept_exactly_ten_on_postgres() {
    hundred_concurrent_reserves_for_ten_units(spawn_inventory_on_postgres().await).await;
}

#[tokio::test]
async fn concurrent_repeats_of_one_reserve_on_postgres_reserve_once() {
    let app = spawn_inventory_on_postgres().await;
    app.restock("A-1", 100).await;
    let request = ReserveRequest { order_id: Uuid::new_v4(), items: vec![item("A-1", 5)] };
    let mut calls = Vec::new();
    for _ in 0..20 {
        let (client, request) = (app.client.clone(), request.clone());
        calls.push(tokio::spawn(async move {
            client.request::<_, ReserveReply>(names::INVENTORY_RESERVE, &request).await
        }));
    }
    for call in calls {
        assert!(call.await.unwrap().expect("reserve answers").reserved);
    }
    let stock: StockReply = app.call(names::INVENTORY_STOCK, &StockRequest::default()).await.unwrap();
    assert_eq!(stock.items, vec![StockLevel { sku: "A-1".into(), available: 95, reserved: 5 }]);
}

#[tokio::test]
async fn opposite_line_orders_do_not_deadlock_on_postgres() {
    let app = spawn_inventory_on_postgres().await;
    app.restock("A", 1000).await;
    app.restock("B", 1000).await;
    let mut calls = Vec::new();
    for i in 0..60 {
        let client = app.client.clone();
        let items =
            if i % 2 == 0 { vec![item("A", 1), item("B", 1)] } else { vec![item("B", 1), item("A", 1)] };
        calls.push(tokio::spawn(async move {
            let request = ReserveRequest { order_id: Uuid::new_v4(), items };
            client.request::<_, ReserveReply>(names::INVENTORY_RESERVE, &request).await
        }));
    }
    for call in calls {
        assert!(call.await.unwrap().expect("reserve answers").reserved);
    }
    let stock: StockReply = app.call(names::INVENTORY_STOCK, &StockRequest::default()).await.unwrap();
    assert_eq!(stock.items[0], StockLevel { sku: "A".into(), available: 940, reserved: 60 });
    assert_eq!(stock.items[1], StockLevel { sku: "B".into(), available: 940, reserved: 60 });
}
