//! The same contract suite against the embedded implementations and Postgres/Redis.

use std::sync::Arc;
use std::time::Duration;

use apex_backend::bus::{Delivery, EventBus, MemBus, RedisBus, RedisBusOptions};
use apex_backend::protocol::{EventDraft, EventType};
use apex_backend::store::{
    MemStore, MessageRecord, PgStore, PgStoreOptions, RefreshRecord, RefreshUse, Role, RunRecord,
    RunStatus, Store, UserRecord,
};
use serde_json::json;
use uuid::Uuid;

use crate::services_or_skip;

fn user(email: &str) -> UserRecord {
    UserRecord {
        id: Uuid::new_v4(),
        email: email.into(),
        name: "T".into(),
        password_hash: "$argon2id$x".into(),
        is_demo: false,
    }
}

fn draft(run_id: Uuid) -> EventDraft {
    EventDraft {
        kind: EventType::AgentThinking,
        run_id,
        thread_id: Uuid::nil(),
        agent_name: "optimizer".into(),
        payload: json!({ "thought": "x" }),
    }
}

async fn store_contract(store: Arc<dyn Store>) {
    store.ping().await.unwrap();
    let alice = user("Alice@Contract.test");
    let bob = user("bob@contract.test");
    store.upsert_user(alice.clone()).await.unwrap();
    store.upsert_user(bob.clone()).await.unwrap();
    assert_eq!(
        store
            .user_by_email("alice@contract.TEST")
            .await
            .unwrap()
            .unwrap()
            .id,
        alice.id,
        "email lookup ignores case"
    );
    assert_eq!(
        store.user_by_id(bob.id).await.unwrap().unwrap().email,
        bob.email
    );
    assert!(
        store
            .user_by_email("nobody@contract.test")
            .await
            .unwrap()
            .is_none()
    );
    let taken = store
        .upsert_user(UserRecord {
            id: Uuid::new_v4(),
            ..alice.clone()
        })
        .await;
    assert!(
        taken.is_err(),
        "a second user with the same email is refused"
    );

    let records = apex_backend::fixtures::read_usage(
        &crate::support::fixtures_dir().join("usage/alice.jsonl"),
    )
    .unwrap();
    store.set_usage(alice.id, records.clone()).await.unwrap();
    assert_eq!(
        *store.usage(alice.id).await.unwrap(),
        records,
        "usage keeps file order"
    );
    assert!(store.usage(bob.id).await.unwrap().is_empty());

    let thread = Uuid::new_v4();
    assert!(store.claim_thread(thread, alice.id).await.unwrap());
    assert!(store.claim_thread(thread, alice.id).await.unwrap());
    assert!(
        !store.claim_thread(thread, bob.id).await.unwrap(),
        "another user's thread"
    );
    let run_id = Uuid::new_v4();
    for (role, content) in [(Role::User, "q"), (Role::Assistant, "a")] {
        store
            .append_message(MessageRecord {
                id: Uuid::new_v4(),
                thread_id: thread,
                user_id: alice.id,
                run_id: Some(run_id),
                role,
                content: content.into(),
            })
            .await
            .unwrap();
    }
    let messages = store.messages(thread).await.unwrap();
    assert_eq!(
        messages
            .iter()
            .map(|m| m.content.as_str())
            .collect::<Vec<_>>(),
        ["q", "a"]
    );

    let run = RunRecord {
        id: run_id,
        user_id: alice.id,
        thread_id: thread,
        server_id: "contract-a".into(),
        status: RunStatus::Running,
        result: None,
    };
    store.start_run(run.clone()).await.unwrap();
    store
        .record_progress(run_id, json!({ "data_helper": { "total_calls": 3 } }))
        .await
        .unwrap();
    assert_eq!(
        store.run(run_id).await.unwrap().unwrap().result.unwrap()["data_helper"]["total_calls"],
        3
    );
    // Another owner with a fresh heartbeat: nothing to interrupt.
    assert!(
        store
            .interrupt_orphaned_runs("contract-b", false, Duration::from_secs(60))
            .await
            .unwrap()
            .is_empty()
    );
    // Its owner, sweeping its live runs: untouched.
    assert!(
        store
            .interrupt_orphaned_runs("contract-a", false, Duration::from_secs(60))
            .await
            .unwrap()
            .is_empty()
    );
    // Its owner, restarted: its runs are leftovers.
    let interrupted = store
        .interrupt_orphaned_runs("contract-a", true, Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(
        interrupted.iter().map(|r| r.id).collect::<Vec<_>>(),
        [run_id]
    );
    assert_eq!(
        store.run(run_id).await.unwrap().unwrap().status,
        RunStatus::Interrupted
    );
    assert_eq!(
        store
            .recently_interrupted_runs(alice.id, Duration::from_secs(60))
            .await
            .unwrap(),
        [run_id]
    );
    assert!(
        store
            .recently_interrupted_runs(bob.id, Duration::from_secs(60))
            .await
            .unwrap()
            .is_empty()
    );
    // What a connection opens with: the user and the same runs, read together.
    assert_eq!(
        store
            .user_for_connection(alice.id, Duration::from_secs(60))
            .await
            .unwrap(),
        Some((alice.clone(), vec![run_id]))
    );
    assert_eq!(
        store
            .user_for_connection(bob.id, Duration::from_secs(60))
            .await
            .unwrap(),
        Some((bob.clone(), Vec::new()))
    );
    assert_eq!(
        store
            .user_for_connection(Uuid::new_v4(), Duration::from_secs(60))
            .await
            .unwrap(),
        None
    );

    let second = Uuid::new_v4();
    store
        .start_run(RunRecord { id: second, ..run })
        .await
        .unwrap();
    store
        .finish_run(second, RunStatus::Completed, Some(json!({ "ok": true })))
        .await
        .unwrap();
    assert_eq!(
        store.run(second).await.unwrap().unwrap().status,
        RunStatus::Completed
    );
    assert!(
        store
            .finish_run(Uuid::new_v4(), RunStatus::Completed, None)
            .await
            .is_err()
    );

    // The run lifecycle in the pipeline's units.
    let third = Uuid::new_v4();
    let lifecycle_thread = Uuid::new_v4();
    let message = |run_id, role, content: &str| MessageRecord {
        id: Uuid::new_v4(),
        thread_id: lifecycle_thread,
        user_id: alice.id,
        run_id: Some(run_id),
        role,
        content: content.into(),
    };
    let begun = RunRecord {
        id: third,
        user_id: alice.id,
        thread_id: lifecycle_thread,
        server_id: "contract-a".into(),
        status: RunStatus::Running,
        result: None,
    };
    assert!(
        store
            .begin_run(begun.clone(), message(third, Role::User, "question"))
            .await
            .unwrap()
    );
    let foreign = RunRecord {
        id: Uuid::new_v4(),
        user_id: bob.id,
        ..begun.clone()
    };
    assert!(
        !store
            .begin_run(
                foreign.clone(),
                MessageRecord {
                    user_id: bob.id,
                    ..message(foreign.id, Role::User, "intruder")
                }
            )
            .await
            .unwrap()
    );
    assert!(
        store.run(foreign.id).await.unwrap().is_none(),
        "nothing stored for a foreign thread"
    );
    let lifecycle_event = |seq| Arc::new(apex_backend::protocol::Event::new(draft(third), seq));
    store
        .checkpoint_run(
            third,
            alice.id,
            &[lifecycle_event(10), lifecycle_event(11)],
            Some(json!({ "step": 1 })),
        )
        .await
        .unwrap();
    assert_eq!(
        store.run(third).await.unwrap().unwrap().result.unwrap()["step"],
        1
    );
    store
        .complete_run(
            message(third, Role::Assistant, "answer"),
            json!({ "done": true }),
            &[lifecycle_event(12)],
        )
        .await
        .unwrap();
    let done = store.run(third).await.unwrap().unwrap();
    assert_eq!(
        (done.status, done.result.unwrap()["done"].clone()),
        (RunStatus::Completed, json!(true))
    );
    assert_eq!(
        store
            .run_events(third)
            .await
            .unwrap()
            .iter()
            .map(|e| e.seq)
            .collect::<Vec<_>>(),
        [10, 11, 12]
    );
    let contents: Vec<String> = store
        .messages(lifecycle_thread)
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.content)
        .collect();
    assert_eq!(contents, ["question", "answer"]);

    let event = |seq| Arc::new(apex_backend::protocol::Event::new(draft(second), seq));
    store
        .append_events(alice.id, &[event(2), event(1)])
        .await
        .unwrap();
    store.append_events(alice.id, &[event(2)]).await.unwrap();
    let logged = store.run_events(second).await.unwrap();
    assert_eq!(
        logged.iter().map(|e| e.seq).collect::<Vec<_>>(),
        [1, 2],
        "ordered, idempotent per seq"
    );

    // Refresh tokens: each use spends one and stores its successor; a spent one presented
    // again revokes the family; unknown, expired and revoked ones are refused.
    let now = apex_backend::auth::unix_now();
    let later = now + 3600;
    let (family, first, second_jti, third_jti) = (
        Uuid::new_v4(),
        Uuid::new_v4(),
        Uuid::new_v4(),
        Uuid::new_v4(),
    );
    store
        .store_refresh(RefreshRecord {
            jti: first,
            family,
            user_id: bob.id,
            expires_at: later,
        })
        .await
        .unwrap();
    let rotate = |jti, next| store.rotate_refresh(jti, now, next, later);
    assert_eq!(
        rotate(first, second_jti).await.unwrap(),
        RefreshUse::Rotated
    );
    assert_eq!(
        rotate(second_jti, third_jti).await.unwrap(),
        RefreshUse::Rotated
    );
    assert_eq!(
        rotate(first, Uuid::new_v4()).await.unwrap(),
        RefreshUse::Reused
    );
    assert_eq!(
        rotate(third_jti, Uuid::new_v4()).await.unwrap(),
        RefreshUse::Refused,
        "the family is revoked"
    );
    assert_eq!(
        rotate(Uuid::new_v4(), Uuid::new_v4()).await.unwrap(),
        RefreshUse::Refused
    );
    let expired = Uuid::new_v4();
    store
        .store_refresh(RefreshRecord {
            jti: expired,
            family: Uuid::new_v4(),
            user_id: bob.id,
            expires_at: now - 1,
        })
        .await
        .unwrap();
    assert_eq!(
        rotate(expired, Uuid::new_v4()).await.unwrap(),
        RefreshUse::Refused
    );
    let other_family = Uuid::new_v4();
    store
        .store_refresh(RefreshRecord {
            jti: other_family,
            family: Uuid::new_v4(),
            user_id: bob.id,
            expires_at: later,
        })
        .await
        .unwrap();
    assert_eq!(
        rotate(other_family, Uuid::new_v4()).await.unwrap(),
        RefreshUse::Rotated,
        "other families are untouched"
    );

    // Deleting a user (expired demo users) takes everything of theirs and frees the email.
    store.delete_user(alice.id).await.unwrap();
    assert!(store.user_by_id(alice.id).await.unwrap().is_none());
    assert!(
        store
            .user_by_email("alice@contract.test")
            .await
            .unwrap()
            .is_none()
    );
    assert!(store.run(second).await.unwrap().is_none());
    assert!(store.run_events(second).await.unwrap().is_empty());
    assert!(store.messages(lifecycle_thread).await.unwrap().is_empty());
    store.delete_user(alice.id).await.unwrap();
    store.upsert_user(alice.clone()).await.unwrap();
    assert_eq!(
        store.user_by_id(bob.id).await.unwrap().unwrap().email,
        bob.email,
        "other users are untouched"
    );
}

/// The event a live receiver got in time.
fn delivered(
    received: Result<
        Result<Delivery, tokio::sync::broadcast::error::RecvError>,
        tokio::time::error::Elapsed,
    >,
) -> Arc<apex_backend::protocol::Event> {
    match received {
        Ok(Ok(Delivery::Event(event))) => event,
        other => panic!("expected an event, got {other:?}"),
    }
}

async fn bus_contract(bus: Arc<dyn EventBus>) {
    bus.ping().await.unwrap();
    let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
    let mut live = bus.subscribe(a);
    let run = Uuid::new_v4();
    for expected in 1..=5 {
        let event = bus.append(a, draft(run)).await.unwrap();
        assert_eq!(event.seq, expected);
        bus.fan_out(a, &event).await.unwrap();
    }
    assert_eq!(
        bus.append(b, draft(run)).await.unwrap().seq,
        1,
        "seq is per user"
    );
    // A block: the next seqs, in the drafts' order, delivered and replayed like the others.
    let thoughts = ["first", "second", "third"];
    let drafts = thoughts
        .iter()
        .map(|thought| EventDraft {
            payload: json!({ "thought": thought }),
            ..draft(run)
        })
        .collect();
    // The first two delivered with the append, the third by fan_out.
    let block = bus.append_all(a, drafts, 2).await.unwrap();
    assert_eq!(block.iter().map(|e| e.seq).collect::<Vec<_>>(), [6, 7, 8]);
    assert_eq!(
        block
            .iter()
            .map(|e| e.payload["thought"].as_str().unwrap())
            .collect::<Vec<_>>(),
        thoughts
    );
    for expected in 1..=7 {
        let event = delivered(tokio::time::timeout(Duration::from_secs(5), live.recv()).await);
        assert_eq!(event.seq, expected);
    }
    assert!(live.try_recv().is_err(), "the third waits for its fan_out");
    bus.fan_out(a, &block[2]).await.unwrap();
    assert!(bus.append_all(a, Vec::new(), 0).await.unwrap().is_empty());
    assert_eq!(bus.head_seq(a).await.unwrap(), 8);
    let event = delivered(tokio::time::timeout(Duration::from_secs(5), live.recv()).await);
    assert_eq!(event.seq, 8);
    let replay = bus.replay(a, 2).await.unwrap();
    assert_eq!(
        replay.events.iter().map(|e| e.seq).collect::<Vec<_>>(),
        [3, 4, 5, 6, 7, 8]
    );
    assert_eq!(replay.events[0].run_id, run);
    assert_eq!(replay.events[4].payload["thought"], "second");
    assert!(replay.truncated_from.is_none());
    assert!(bus.replay(a, 8).await.unwrap().events.is_empty());

    bus.issue_ticket("contract-ticket", a, Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(bus.redeem_ticket("contract-ticket").await.unwrap(), Some(a));
    assert_eq!(
        bus.redeem_ticket("contract-ticket").await.unwrap(),
        None,
        "single use"
    );
    assert_eq!(bus.redeem_ticket("never-issued").await.unwrap(), None);
}

async fn bus_retention_contract(bus: Arc<dyn EventBus>) {
    let user = Uuid::new_v4();
    for _ in 0..400 {
        bus.append(user, draft(Uuid::nil())).await.unwrap();
    }
    let replay = bus.replay(user, 0).await.unwrap();
    let oldest = replay.truncated_from.expect("old events were dropped");
    assert!(
        replay.events.len() < 400 && replay.events.len() >= 100,
        "{}",
        replay.events.len()
    );
    assert_eq!(replay.events[0].seq, oldest);
    assert_eq!(replay.events.last().unwrap().seq, 400);
}

#[tokio::test]
async fn embedded_store_meets_the_contract() {
    store_contract(Arc::new(MemStore::new())).await;
}

#[tokio::test]
async fn embedded_bus_meets_the_contract() {
    bus_contract(Arc::new(MemBus::new(100))).await;
    bus_retention_contract(Arc::new(MemBus::new(100))).await;
}

#[tokio::test]
async fn postgres_store_meets_the_contract() {
    let services = services_or_skip!("postgres_store_meets_the_contract");
    let store = PgStore::connect(&PgStoreOptions {
        url: services.urls.database.clone(),
        schema: services.schema.clone(),
        timeout: Duration::from_secs(5),
        run_migrations: true,
        max_connections: 4,
    })
    .await
    .unwrap();
    store_contract(Arc::new(store)).await;
    services.cleanup().await;
}

#[tokio::test]
async fn redis_bus_meets_the_contract() {
    let services = services_or_skip!("redis_bus_meets_the_contract");
    let options = |retain| RedisBusOptions {
        url: services.urls.redis.clone(),
        prefix: services.prefix.clone(),
        timeout: Duration::from_secs(2),
        retain,
    };
    bus_contract(Arc::new(RedisBus::connect(options(100)).await.unwrap())).await;
    bus_retention_contract(Arc::new(RedisBus::connect(options(100)).await.unwrap())).await;
    services.cleanup().await;
}

#[tokio::test]
async fn two_redis_bus_instances_share_one_gap_free_stream() {
    let services = services_or_skip!("two_redis_bus_instances_share_one_gap_free_stream");
    let options = RedisBusOptions {
        url: services.urls.redis.clone(),
        prefix: services.prefix.clone(),
        timeout: Duration::from_secs(2),
        retain: 1000,
    };
    let a = Arc::new(RedisBus::connect(options.clone()).await.unwrap());
    let b = Arc::new(RedisBus::connect(options).await.unwrap());
    let user = Uuid::new_v4();
    let mut on_b = b.subscribe(user);
    tokio::time::sleep(Duration::from_millis(200)).await; // the tails subscribe
    // Single events delivered by fan_out and blocks of three delivered with their append
    // (published by the append itself), from both instances at once.
    let appends = (0..50).map(|i| {
        let bus = if i % 2 == 0 { a.clone() } else { b.clone() };
        async move {
            let events = if i % 5 == 0 {
                bus.append_all(user, vec![draft(Uuid::nil()); 3], 3)
                    .await
                    .unwrap()
            } else {
                let events = bus
                    .append_all(user, vec![draft(Uuid::nil())], 0)
                    .await
                    .unwrap();
                bus.fan_out(user, &events[0]).await.unwrap();
                events
            };
            events.iter().map(|e| e.seq).collect::<Vec<_>>()
        }
    });
    let blocks = futures_util::future::join_all(appends).await;
    for block in &blocks {
        assert!(
            block.windows(2).all(|w| w[1] == w[0] + 1),
            "a block is consecutive: {block:?}"
        );
    }
    let mut seqs: Vec<u64> = blocks.into_iter().flatten().collect();
    seqs.sort_unstable();
    assert_eq!(
        seqs,
        (1..=70).collect::<Vec<u64>>(),
        "gap-free across instances"
    );
    let mut seen = std::collections::BTreeSet::new();
    while seen.len() < 70 {
        let event = delivered(tokio::time::timeout(Duration::from_secs(5), on_b.recv()).await);
        assert!(seen.insert(event.seq), "delivered once on b: {}", event.seq);
    }
    services.cleanup().await;
}
