//! Leases against the NATS server on 127.0.0.1:4222, each test in a bucket of its own
//! (deleted at the end). Skipped with the reason without NATS; failing under
//! `YAGURA_TEST_STRICT=1`.

use std::time::Duration;

use async_nats::jetstream;

use super::leases::{self, Changes, Leases, Member};

async fn context() -> Option<jetstream::Context> {
    super::testing::nats_or_skip().await.map(jetstream::new)
}

fn member(node: &str) -> Member {
    Member {
        node: node.into(),
        url: Some(format!("https://{node}.invalid")),
        fingerprint: None,
    }
}

#[tokio::test]
async fn members_share_the_partitions_and_a_survivor_takes_over_an_expired_lease() {
    let Some(context) = context().await else {
        return;
    };
    let name = format!("YAGURA_TEST_{}", uuid::Uuid::new_v4().simple());
    let lease = Duration::from_secs(2);
    let kv = leases::bucket(&context, &name, lease, 1)
        .await
        .expect("bucket");
    let mut a = Leases::new(kv.clone(), "indexer", member("a"), 6);
    let mut b = Leases::new(kv.clone(), "indexer", member("b"), 6);

    // A node's first renewal announces it and takes nothing; alone, a then takes every
    // partition.
    assert_eq!(a.renew().await.expect("announce"), Changes::default());
    let first = a.renew().await.expect("renew");
    assert_eq!(first.acquired, vec![0, 1, 2, 3, 4, 5]);
    // b joins (announces), and a gives back what exceeds its half.
    assert_eq!(b.renew().await.expect("announce"), Changes::default());
    let given = a.renew().await.expect("renew");
    assert_eq!(given.surplus, vec![5, 4, 3]);
    for partition in given.surplus {
        a.release(partition).await.expect("release");
    }
    assert_eq!(b.renew().await.expect("renew").acquired, vec![3, 4, 5]);
    let owners = a.owners().await.expect("owners");
    assert_eq!(
        owners.values().map(String::as_str).collect::<Vec<_>>(),
        ["a", "a", "a", "b", "b", "b"]
    );
    let mut names: Vec<String> = leases::members(&kv, "indexer")
        .await
        .expect("members")
        .into_iter()
        .map(|m| m.node)
        .collect();
    names.sort();
    assert_eq!(names, ["a", "b"]);
    // Renewing keeps what each holds; another role's leases are apart.
    assert_eq!(a.renew().await.expect("renew"), Changes::default());
    let mut d = Leases::new(kv.clone(), "detector", member("a"), 2);
    d.renew().await.expect("announce");
    assert_eq!(d.renew().await.expect("renew").acquired, vec![0, 1]);

    // a stops renewing (killed): after the lease time its partitions are free and b,
    // now the only member, takes them all.
    // b renews a third of a lease apart meanwhile, as its node would.
    let mut acquired = Vec::new();
    for _ in 0..5 {
        tokio::time::sleep(lease / 3).await;
        let changes = b.renew().await.expect("renew");
        assert!(changes.lost.is_empty(), "b kept renewing: {changes:?}");
        acquired.extend(changes.acquired);
    }
    assert_eq!(acquired, vec![0, 1, 2]);
    // a comes back: its leases are gone, it says so, and takes nothing while b holds all
    // but gives back half at b's next renewal.
    let back = a.renew().await.expect("renew");
    assert_eq!(back.lost, vec![0, 1, 2]);
    assert!(back.acquired.is_empty());
    assert_eq!(b.renew().await.expect("renew").surplus.len(), 3);

    b.leave().await.expect("leave");
    context
        .delete_key_value(&name)
        .await
        .expect("delete bucket");
}

/// Two nodes with their own state stores share agents through the directory: an agent
/// enrolled on one is verified on the other, a revocation on the other holds on the
/// first, and a node's own signing identity is readable everywhere but stays out of the
/// other node's store.
#[tokio::test]
async fn agents_enrolled_on_one_node_are_known_and_revoked_on_another() {
    use crate::cluster::directory::AgentDirectory;
    use crate::fleet::AgentRegistry;
    use crate::store::Store;

    let Some(context) = context().await else {
        return;
    };
    let stream = format!("YAGURA_TEST_{}", uuid::Uuid::new_v4().simple());
    let dir = tempfile::tempdir().expect("tempdir");
    let directory = AgentDirectory::open(&context, &stream, 1)
        .await
        .expect("directory");
    let store_a = Store::open_sqlite(&dir.path().join("a.db"))
        .await
        .expect("store a");
    let store_b = Store::open_sqlite(&dir.path().join("b.db"))
        .await
        .expect("store b");
    let identity_a = store_a
        .collector_identity(
            &yagura_shared::AgentKey::generate()
                .expect("key")
                .public_key_base64(),
            "test",
        )
        .await
        .expect("identity a");
    store_b
        .collector_identity(
            &yagura_shared::AgentKey::generate()
                .expect("key")
                .public_key_base64(),
            "test",
        )
        .await
        .expect("identity b");
    let a = AgentRegistry::new(store_a.clone()).with_directory(directory.clone());
    let b = AgentRegistry::new(store_b.clone()).with_directory(directory.clone());
    a.publish_missing().await.expect("publish a");
    let cancel = tokio_util::sync::CancellationToken::new();
    let following = tokio::spawn({
        let a = a.clone();
        let cancel = cancel.clone();
        async move { a.follow_directory(cancel).await }
    });

    let token = store_a
        .create_enrollment_token(chrono::Duration::minutes(5), 1, &Default::default())
        .await
        .expect("token");
    let key = yagura_shared::AgentKey::generate().expect("key");
    let enrolled = a
        .enroll(token.expose(), &key.public_key_base64(), "host-1", "test")
        .await
        .expect("enroll");

    // b has never seen it: it reads the directory, verifies, and keeps a copy.
    let known = b.get(enrolled.id).await.expect("get").expect("known on b");
    assert_eq!(known.record.public_key, key.public_key_base64());
    assert!(store_b.agent(enrolled.id).await.expect("store b").is_some());
    // a's signing identity is known on b, but b's store still finds its own by kind.
    let other = b.get(identity_a.id).await.expect("get").expect("identity");
    assert!(other.record.is_internal());
    assert!(store_b.agent(identity_a.id).await.expect("b").is_none());

    // A key rotation on b (which holds only a copy) is published; a takes it.
    let next = yagura_shared::AgentKey::generate().expect("key");
    let rotation = yagura_shared::key_rotation::KeyRotation::sign(&key, &next, enrolled.id, 10);
    b.rotate_key(enrolled.id, &rotation, Some(9))
        .await
        .expect("rotate on b");
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while a
        .get(enrolled.id)
        .await
        .expect("get")
        .expect("a")
        .record
        .public_key
        != next.public_key_base64()
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the rotation did not reach node a"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let before_revocation = directory
        .entry(enrolled.id)
        .await
        .expect("entry")
        .expect("there");

    // a has cached the agent; a revocation on b reaches it through the directory.
    assert!(
        a.get(enrolled.id)
            .await
            .expect("get")
            .expect("a")
            .record
            .is_active()
    );
    b.revoke(enrolled.id).await.expect("revoke");
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let now = a.get(enrolled.id).await.expect("get").expect("a");
        if !now.record.is_active() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the revocation did not reach node a"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        !store_a
            .agent(enrolled.id)
            .await
            .expect("a")
            .expect("row")
            .is_active()
    );
    // A change decided on the record before the revocation is refused, and a stale
    // active copy never replaces a revoked one.
    assert!(
        !directory
            .replace(&before_revocation.record, before_revocation.revision)
            .await
            .expect("replace")
    );
    let revoked = store_a.agent(enrolled.id).await.expect("a").expect("row");
    assert!(!super::directory::supersedes(
        &before_revocation.record,
        &revoked
    ));
    // A rotation asked now of a is refused: the agent is revoked everywhere.
    let again = yagura_shared::AgentKey::generate().expect("key");
    let late = yagura_shared::key_rotation::KeyRotation::sign(&next, &again, enrolled.id, 20);
    assert!(a.rotate_key(enrolled.id, &late, Some(19)).await.is_err());
    let now = directory.entry(enrolled.id).await.expect("entry");
    assert!(!now.expect("there").record.is_active());

    cancel.cancel();
    let _ = following.await;
    let _ = context
        .delete_stream(format!("KV_{}", super::directory::bucket_name(&stream)))
        .await;
}
