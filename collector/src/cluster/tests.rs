//! Leases against the NATS server on 127.0.0.1:4222, each test in a bucket of its own
//! (deleted at the end). Skipped with the reason without NATS; failing under
//! `YAGURA_TEST_STRICT=1`.

use std::time::Duration;

use async_nats::jetstream;

use super::leases::{self, Changes, Leases, Member};

async fn context() -> Option<jetstream::Context> {
    let url =
        std::env::var("YAGURA_TEST_NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".into());
    match crate::archive::connect_nats(&url, "yagura-test").await {
        Ok(client) => Some(jetstream::new(client)),
        Err(error) => {
            let strict = std::env::var("YAGURA_TEST_STRICT").is_ok_and(|v| v == "1");
            assert!(
                !strict,
                "YAGURA_TEST_STRICT=1 and NATS is not usable: {error}"
            );
            eprintln!("skipped: NATS is not usable at {url}: {error}");
            None
        }
    }
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
