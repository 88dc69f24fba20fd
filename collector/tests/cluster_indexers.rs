//! Two indexer nodes share a JetStream archive's partitions; an api node's fan-out finds
//! every event once, aggregations equal one indexer's over the same data, and when a node
//! stops renewing (killed) the survivor takes its partitions over within a lease and the
//! search is whole again. Against the NATS server on 127.0.0.1:4222, in a stream and a
//! lease bucket of the test's own; skipped with the reason without NATS, failing under
//! `YAGURA_TEST_STRICT=1`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream;
use chrono::Utc;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;
use yagura_collector::archive::{Archive, JetStreamArchive, JetStreamConfig};
use yagura_collector::cluster::indexer::ClusterIndexer;
use yagura_collector::cluster::leases::{self, Leases, Member};
use yagura_collector::cluster::search::{self, FanOut};
use yagura_collector::index::{
    IndexRetention, Indexer, IndexerOptions, SearchRequest, SearchResult,
};
use yagura_shared::{AgentKey, Event, SignedBatch};

const PARTITIONS: u32 = 4;
const LEASE: Duration = Duration::from_secs(2);

async fn nats() -> Option<(async_nats::Client, JetStreamConfig)> {
    let client = yagura_collector::cluster::testing::nats_or_skip().await?;
    Some((
        client,
        yagura_collector::cluster::testing::own_stream(PARTITIONS),
    ))
}

fn options() -> IndexerOptions {
    IndexerOptions {
        writer_memory_bytes: 20_000_000,
        commit_interval: Duration::from_millis(100),
        max_decompressed: 1 << 24,
        retention: IndexRetention::default(),
        retention_check_interval: Duration::from_secs(3600),
    }
}

/// Agent `a`'s batch `sequence`: 20 events with known fields.
fn batch(key: &AgentKey, agent: Uuid, a: usize, sequence: u64) -> Vec<u8> {
    let events: Vec<Event> = (0..20u64)
        .map(|line| {
            let n = sequence * 20 + line;
            let mut e = Event::new(Utc::now() - chrono::Duration::seconds(n as i64));
            e.set_str("host.name", format!("host-{a}"));
            e.set_str("user.name", format!("user{}", n % 5));
            e.set_str("source.ip", format!("10.{a}.0.{}", n % 200));
            e.set_str(
                "event.outcome",
                if n.is_multiple_of(4) {
                    "failure"
                } else {
                    "success"
                },
            );
            e.set_str("message", format!("agent {a} batch {sequence} line {line}"));
            e
        })
        .collect();
    SignedBatch::seal(key, agent, sequence, Utc::now(), &events)
        .expect("seal")
        .into_bytes()
}

struct Node {
    cancel: CancellationToken,
    run: tokio::task::JoinHandle<anyhow::Result<()>>,
    serve: tokio::task::JoinHandle<anyhow::Result<()>>,
}

async fn start_node(
    name: &str,
    dir: &std::path::Path,
    archive: &Arc<JetStreamArchive>,
    client: &async_nats::Client,
    kv: &jetstream::kv::Store,
    stream: &str,
) -> Node {
    let indexer = ClusterIndexer::new(Arc::clone(archive), &dir.join(name), options());
    let cancel = CancellationToken::new();
    let serve = tokio::spawn(search::serve(
        client.clone(),
        search::search_subject(stream, name),
        indexer.shards(),
        cancel.clone(),
    ));
    let member = Member {
        node: name.into(),
        url: None,
        fingerprint: None,
    };
    let leases = Leases::new(kv.clone(), search::INDEXER_ROLE, member, PARTITIONS);
    let run = tokio::spawn(indexer.run(leases, LEASE / 3, cancel.clone()));
    Node { cancel, run, serve }
}

async fn fan_out_until(
    fan: &FanOut,
    request: &SearchRequest,
    done: impl Fn(&SearchResult) -> bool,
) -> SearchResult {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let last = fan.search(request).await;
        match &last {
            Ok(result) if done(result) => return result.clone(),
            _ if Instant::now() > deadline => panic!("never complete: {last:?}"),
            _ => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

/// Every event id found, page by page (1,000 at a time, cursors across nodes).
async fn all_ids(fan: &FanOut) -> BTreeMap<String, usize> {
    let mut ids = BTreeMap::new();
    let mut after = None;
    loop {
        let request = SearchRequest {
            limit: 1000,
            fields: vec!["event.id".into()],
            after,
            count_total: false,
            ..SearchRequest::new("*")
        };
        let page = fan.search(&request).await.expect("page");
        for hit in &page.hits {
            let id = hit.event["event"]["id"].as_str().expect("id").to_string();
            *ids.entry(id).or_default() += 1;
        }
        match page.next_cursor {
            Some(cursor) => after = Some(cursor.parse().expect("cursor")),
            None => return ids,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_indexers_share_the_partitions_and_one_takes_over_when_the_other_dies() {
    let Some((client, config)) = nats().await else {
        return;
    };
    let dir = tempfile::tempdir().expect("tmp");
    let archive = Arc::new(
        JetStreamArchive::open(config.clone())
            .await
            .expect("archive"),
    );
    let context = jetstream::new(client.clone());
    let bucket = format!("YAGURA_TEST_{}", Uuid::new_v4().simple());
    let kv = leases::bucket(&context, &bucket, LEASE, 1)
        .await
        .expect("bucket");

    let a = start_node("a", dir.path(), &archive, &client, &kv, &config.stream).await;
    let b = start_node("b", dir.path(), &archive, &client, &kv, &config.stream).await;

    // Four agents, 50 batches of 20 events each: 4,000 events.
    let agents: Vec<(Uuid, AgentKey)> = (0..4)
        .map(|_| (Uuid::new_v4(), AgentKey::generate().expect("key")))
        .collect();
    let send = |from: u64, to: u64| {
        let agents = &agents;
        let archive = &archive;
        async move {
            for sequence in from..to {
                for (a, (agent, key)) in agents.iter().enumerate() {
                    archive
                        .append(*agent, sequence, batch(key, *agent, a, sequence))
                        .await
                        .expect("append");
                }
            }
        }
    };
    send(1, 51).await;

    let fan = FanOut::new(
        client.clone(),
        kv.clone(),
        &config.stream,
        PARTITIONS,
        Duration::from_secs(10),
    );
    // Both nodes hold partitions once the leases settle.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let owners = leases::owners(&kv, search::INDEXER_ROLE)
            .await
            .expect("owners");
        let nodes: std::collections::BTreeSet<&String> = owners.values().collect();
        if owners.len() == PARTITIONS as usize && nodes.len() == 2 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "leases never settled: {owners:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let counted = SearchRequest::new("*");
    fan_out_until(&fan, &counted, |r| r.total == 4_000).await;
    let ids = all_ids(&fan).await;
    assert_eq!(ids.len(), 4_000);
    assert!(ids.values().all(|n| *n == 1), "an event found twice");

    // The same data through one indexer over the whole stream.
    let single_dir = dir.path().join("single");
    let (indexer, single) = Indexer::open(&single_dir, options(), None).expect("single");
    let reader = archive.reader(0).expect("reader");
    let stop = CancellationToken::new();
    let runtime = tokio::runtime::Handle::current();
    let thread = {
        let stop = stop.clone();
        std::thread::spawn(move || indexer.follow(reader, runtime, stop, |_| {}))
    };
    let aggs = yagura_collector::search::aggs::parse_aggs(
        "terms:source.ip:300, terms:user.name>date_histogram:@timestamp, \
         date_histogram:@timestamp, cardinality:host.name",
    )
    .expect("aggs");
    let request = SearchRequest {
        aggs: aggs.clone(),
        limit: 10,
        ..SearchRequest::new("event.outcome:failure")
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    let alone = loop {
        single.refresh().expect("refresh");
        let found = single.search(&request).expect("single search");
        if found.total == 1_000 {
            break found;
        }
        assert!(Instant::now() < deadline, "single indexer: {}", found.total);
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    stop.cancel();
    let _ = tokio::task::spawn_blocking(move || thread.join()).await;
    let merged = fan.search(&request).await.expect("fan-out aggregations");
    assert_eq!(merged.total, alone.total);
    assert_eq!(merged.hits.len(), alone.hits.len());
    let ids_of = |r: &SearchResult| -> Vec<String> {
        r.hits
            .iter()
            .map(|h| h.event["event"]["id"].to_string())
            .collect()
    };
    assert_eq!(ids_of(&merged), ids_of(&alone));
    let (mut m, mut o) = (
        merged.aggregations.clone().expect("aggs"),
        alone.aggregations.clone().expect("aggs"),
    );
    strip_error_bounds(&mut m);
    strip_error_bounds(&mut o);
    for spec in &aggs {
        let key = yagura_collector::index::aggs::result_key(spec);
        if m[&key] != o[&key] {
            let short = |v: &serde_json::Value| {
                let text = v.to_string();
                let cut = text.len().min(1500);
                text[..cut].to_string()
            };
            panic!(
                "{key}: over two indexers\n{}\none indexer\n{}",
                short(&m[&key]),
                short(&o[&key])
            );
        }
    }

    // b dies: no clean stop, no lease given back, its answers stop.
    b.run.abort();
    b.serve.abort();
    let killed = Instant::now();
    send(51, 76).await;
    fan_out_until(&fan, &counted, |r| r.total == 6_000).await;
    let took = killed.elapsed();
    let owners = leases::owners(&kv, search::INDEXER_ROLE)
        .await
        .expect("owners");
    assert!(owners.values().all(|n| n == "a"), "{owners:?}");
    let ids = all_ids(&fan).await;
    assert_eq!(ids.len(), 6_000, "every event after the take-over");
    assert!(ids.values().all(|n| *n == 1), "an event found twice");
    eprintln!("take-over: search whole again {took:?} after the kill (lease {LEASE:?})");

    a.cancel.cancel();
    a.run.await.expect("join").expect("run");
    let _ = a.serve.await;
    b.cancel.cancel();
    let _ = context.delete_key_value(&bucket).await;
    context
        .delete_stream(&config.stream)
        .await
        .expect("delete stream");
}

/// Without the error bound (it grows with the parts merged, as in Elasticsearch) and with
/// term buckets in key order: equal counts tie, and ties may come in any order.
fn strip_error_bounds(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::Object(map) => {
            map.remove("doc_count_error_upper_bound");
            if let Some(serde_json::Value::Array(buckets)) = map.get_mut("buckets")
                && buckets.iter().all(|b| b["key"].is_string())
            {
                buckets.sort_by(|x, y| x["key"].as_str().cmp(&y["key"].as_str()));
            }
            map.values_mut().for_each(strip_error_bounds);
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(strip_error_bounds),
        _ => {}
    }
}
