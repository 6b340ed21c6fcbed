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

/// Reserves race in batches: two-line orders short of one line put back the other, one-line
/// orders beside them are all reserved, and the stock adds up.
async fn batched_reserves_short_of_one_line_put_the_other_back(app: TestInventory) {
    app.restock("PLENTY", 1000).await;
    app.restock("SCARCE", 5).await;
    let mut calls = Vec::new();
    for i in 0..80 {
        let client = app.client.clone();
        let items =
            if i % 2 == 0 { vec![item("SCARCE", 1), item("PLENTY", 1)] } else { vec![item("PLENTY", 2)] };
        calls.push(tokio::spawn(async move {
            let request = ReserveRequest { order_id: Uuid::new_v4(), items };
            client.request::<_, ReserveReply>(names::INVENTORY_RESERVE, &request).await
        }));
    }
    let (mut pairs, mut singles, mut short) = (0, 0, 0);
    for (i, call) in calls.into_iter().enumerate() {
        let reply = call.await.unwrap().expect("every reserve gets an answer");
        match (i % 2, reply.reserved) {
            (0, true) => pairs += 1,
            (0, false) => {
                assert_eq!(reply.unavailable_ids, ["SCARCE"], "{reply:?}");
                short += 1;
            }
            (_, true) => singles += 1,
            (_, false) => panic!("a PLENTY-only order was refused: {reply:?}"),
        }
    }
    assert_eq!((pairs, short, singles), (5, 35, 40));
    let stock: StockReply = app.call(names::INVENTORY_STOCK, &StockRequest::default()).await.unwrap();
    assert_eq!(stock.items[0], StockLevel { sku: "PLENTY".into(), available: 1000 - 5 - 80, reserved: 85 });
    assert_eq!(stock.items[1], StockLevel { sku: "SCARCE".into(), available: 0, reserved: 5 });
}

#[tokio::test]
async fn batched_reserves_short_of_one_line_put_the_other_back_on_sqlite() {
    batched_reserves_short_of_one_line_put_the_other_back(spawn_inventory().await).await;
}

#[tokio::test]
async fn batched_reserves_short_of_one_line_put_the_other_back_on_postgres() {
    batched_reserves_short_of_one_line_put_the_other_back(spawn_inventory_on_postgres().await).await;
}

/// Two replicas on one Postgres database get the same order's reserve at once: each batches
/// its own, one commits the reservation, the other finds it and answers the same.
#[tokio::test]
async fn two_replicas_reserve_one_order_once_on_postgres() {
    let mut app = spawn_inventory_on_postgres().await;
    app.add_instance().await;
    app.restock("A-1", 100).await;
    for round in 0..5 {
        let request = ReserveRequest { order_id: Uuid::new_v4(), items: vec![item("A-1", 2)] };
        let mut calls = Vec::new();
        for _ in 0..10 {
            let (client, request) = (app.client.clone(), request.clone());
            calls.push(tokio::spawn(async move {
                client.request::<_, ReserveReply>(names::INVENTORY_RESERVE, &request).await
            }));
        }
        for call in calls {
            assert!(call.await.unwrap().expect("reserve answers").reserved, "round {round}");
        }
    }
    let stock: StockReply = app.call(names::INVENTORY_STOCK, &StockRequest::default()).await.unwrap();
    assert_eq!(stock.items, vec![StockLevel { sku: "A-1".into(), available: 90, reserved: 10 }]);
}

/// A reserve whose caller's deadline has passed when its batch is written reserves nothing and
/// answers that the deadline passed.
#[tokio::test]
async fn a_reserve_past_its_callers_deadline_is_not_written() {
    let test_db = switchyard::testkit::TestDatabase::sqlite();
    let db =
        switchyard::db::Db::connect(test_db.url(), &inventory_service::MIGRATIONS).await.expect("database");
    let inventory = inventory_service::Inventory::new(db, std::time::Duration::from_secs(900));
    inventory.restock(&contracts::RestockRequest { sku: "A-1".into(), quantity: 10 }).await.expect("restock");
    let request = ReserveRequest { order_id: Uuid::new_v4(), items: vec![item("A-1", 3)] };
    let passed = tokio::time::Instant::now() - std::time::Duration::from_millis(1);
    let answer = switchyard::deadline::scope(passed, inventory.reserve(&request)).await;
    assert!(matches!(answer, Err(inventory_service::InventoryError::DeadlineExceeded(_))), "{answer:?}");
    let stock = inventory.stock(&StockRequest::default()).await.expect("stock");
    assert_eq!(stock.items, vec![StockLevel { sku: "A-1".into(), available: 10, reserved: 0 }]);
    // Within its deadline the same reserve goes through.
    let later = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    let answer = switchyard::deadline::scope(later, inventory.reserve(&request)).await.expect("reserve");
    assert!(answer.reserved);
}
