//! `dlq replay` goes back to the one consumer that failed, and only to it.

use std::time::Duration;

use async_nats::jetstream;
use contracts::names;
use switchyard::dlq::{self, Outcome};
use switchyard::testkit::{SmtpSink, eventually, free_port};

use crate::helpers::{Stack, count, spawn_stack};

/// How many messages the replay durable of `consumer` has been handed (0: it never saw one).
async fn replays_delivered(js: &jetstream::Context, consumer: &str) -> u64 {
    let stream = js.get_stream(names::REPLAY_STREAM).await.expect("REPLAY");
    let info = stream
        .consumer_info(names::replay_durable(names::ORDERS_STREAM, consumer))
        .await
        .expect("the replay durable is bound");
    info.delivered.stream_sequence
}

async fn messages(js: &jetstream::Context, stream: &str) -> u64 {
    let mut stream = js.get_stream(stream).await.expect("stream");
    stream.info().await.expect("stream info").state.messages
}

async fn letters(stack: &Stack) -> Vec<dlq::DeadLetter> {
    dlq::list(&stack.js, 100).await.expect("list dead letters")
}

#[tokio::test]
async fn a_letter_from_an_smtp_outage_goes_back_to_email_alone_which_sends_it_once() {
    let mut stack = spawn_stack().await;
    stack.restock("A-1", 10).await;
    // email-service sends over SMTP to a port where nothing listens, and gives up after 2 tries.
    stack.emails.pop().expect("the stack's email-service").stop().await;
    let port = free_port().expect("free port");
    let smtp = format!("smtp://127.0.0.1:{port}");
    stack.add_email_with(&["--smtp-url", &smtp, "--max-deliver", "2"]).await;

    let (status, order) = stack.order("A-1", 1).await;
    assert_eq!(status, 201, "{order}");
    let id = order["id"].as_str().expect("id").to_string();
    eventually(Duration::from_secs(30), "email's letter", || async { letters(&stack).await.len() == 1 })
        .await;
    let letter = letters(&stack).await.remove(0);
    assert_eq!((letter.consumer.as_str(), letter.reason.as_str()), ("email", "max_deliver"), "{letter:?}");
    assert_eq!(letter.origin_subject, format!("events.orders.created.{id}"));
    // inventory and audit did their part once; nothing else moves.
    stack.wait_events("events.orders.stock_committed.*", 1).await;
    eventually(Duration::from_secs(15), "audit to record created and stock_committed", || async {
        count(&stack.audit_db, "SELECT COUNT(*) FROM audit_events").await == 2
    })
    .await;
    let orders_before = messages(&stack.js, names::ORDERS_STREAM).await;

    // SMTP comes back; the letter is replayed.
    let sink = SmtpSink::start_on(port).await;
    let replayed = dlq::replay(&stack.js, letter.seq).await.expect("replay");
    assert_eq!((replayed.consumer.as_str(), replayed.letter), ("email", letter.seq));
    let outcome = dlq::outcome(&stack.js, &replayed, Duration::from_secs(30)).await.expect("outcome");
    assert_eq!(outcome, Outcome::Applied);
    // The replay went out under a message id of its own, the original's kept beside it: no
    // duplicate window can swallow it as a repeat of the original.
    let replay = stack
        .js
        .get_stream(names::REPLAY_STREAM)
        .await
        .expect("REPLAY")
        .get_raw_message(replayed.replay_seq)
        .await
        .expect("the replayed message");
    let header = |name: &str| replay.headers.get(name).map(|v| v.as_str().to_string());
    let (replay_id, original_id) = (
        header(async_nats::header::NATS_MESSAGE_ID.as_ref()).expect("a message id"),
        header(dlq::headers::ORIGIN_MSG_ID).expect("the original's message id"),
    );
    assert!(replay_id.starts_with("replay:") && replay_id != original_id, "{replay_id} vs {original_id}");

    // Email sent it once (one message received by the server), recorded it, said so once.
    stack.wait_events("events.orders.confirmation_sent.*", 1).await;
    assert_eq!(sink.delivered().len(), 1, "one message over SMTP");
    assert_eq!(count(&stack.email_db, "SELECT COUNT(*) FROM emails").await, 1);
    assert!(letters(&stack).await.is_empty(), "the letter left the DLQ");
    // ORDERS kept its one copy of the event: the only new message is confirmation_sent.
    assert_eq!(messages(&stack.js, names::ORDERS_STREAM).await, orders_before + 1);
    assert_eq!(stack.events("events.orders.created.*").await, 1);
    // inventory and audit were handed nothing from REPLAY; audit's trail got only the new event.
    assert_eq!(replays_delivered(&stack.js, "inventory").await, 0);
    assert_eq!(replays_delivered(&stack.js, "audit").await, 0);
    assert_eq!(replays_delivered(&stack.js, "email").await, replayed.replay_seq);
    eventually(Duration::from_secs(15), "audit to record confirmation_sent", || async {
        count(&stack.audit_db, "SELECT COUNT(*) FROM audit_events").await == 3
    })
    .await;
    assert_eq!(stack.inbox(&stack.inventory_db, "inventory").await, 1);
}

#[tokio::test]
async fn a_replayed_poison_makes_exactly_one_new_letter_per_consumer_replayed() {
    let stack = spawn_stack().await;
    stack
        .js
        .publish("events.orders.created.x", "{not json".into())
        .await
        .expect("publish")
        .await
        .expect("ack");
    eventually(Duration::from_secs(15), "three letters", || async { letters(&stack).await.len() == 3 }).await;
    let first = letters(&stack).await;

    // Replay two consumers' letters of the same event (audit's and inventory's).
    let mut new_letters = Vec::new();
    for letter in first.iter().filter(|l| l.consumer != "email") {
        let replayed = dlq::replay(&stack.js, letter.seq).await.expect("replay");
        assert_eq!(replayed.consumer, letter.consumer);
        match dlq::outcome(&stack.js, &replayed, Duration::from_secs(30)).await.expect("outcome") {
            Outcome::FailedAgain(again) => {
                assert_eq!(again.consumer, letter.consumer, "the new letter is the same consumer's");
                assert_eq!(again.replay_of, Some(letter.seq));
                assert_eq!(again.reason, "poison");
                assert_eq!(again.origin_subject, "events.orders.created.x");
                assert_eq!(again.origin_seq, letter.origin_seq, "it names the original event");
                new_letters.push(again.seq);
            }
            other => panic!("a replayed poison must fail again, got {other:?}"),
        }
    }
    // Exactly one new letter per replayed letter: email's untouched original and two new ones.
    let now = letters(&stack).await;
    assert_eq!(now.len(), 3, "{now:?}");
    let email = first.iter().find(|l| l.consumer == "email").expect("email's letter");
    assert!(now.iter().any(|l| l.seq == email.seq), "email's letter was not replayed: {now:?}");
    for seq in new_letters {
        assert!(now.iter().any(|l| l.seq == seq));
    }
    // The event itself is still one message in ORDERS, and email was handed nothing again.
    assert_eq!(stack.events("events.orders.created.x").await, 1);
    assert_eq!(replays_delivered(&stack.js, "email").await, 0);

    // Replaying the new letters again still makes one each, naming the letter replayed.
    let again = now.iter().find(|l| l.consumer == "audit").expect("audit's new letter");
    let replayed = dlq::replay(&stack.js, again.seq).await.expect("replay");
    match dlq::outcome(&stack.js, &replayed, Duration::from_secs(30)).await.expect("outcome") {
        Outcome::FailedAgain(third) => assert_eq!(third.replay_of, Some(again.seq)),
        other => panic!("{other:?}"),
    }
    assert_eq!(letters(&stack).await.len(), 3);
}
