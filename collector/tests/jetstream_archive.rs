//! The JetStream archive against the NATS server on 127.0.0.1:4222 (each test makes its
//! own stream with a random name and deletes it). Without a server the tests say why and
//! pass; under `YAGURA_TEST_STRICT=1` they fail instead.

use std::collections::BTreeMap;
use std::time::Duration;

use uuid::Uuid;
use yagura_collector::archive::{
    Appended, Archive, JetStreamArchive, JetStreamConfig, Record, RecordSource,
};

/// A configuration naming a stream of its own, or `None` (test skipped) without NATS.
async fn config(partitions: u32) -> Option<JetStreamConfig> {
    yagura_collector::cluster::testing::nats_or_skip().await?;
    Some(yagura_collector::cluster::testing::own_stream(partitions))
}

fn batch(agent: Uuid, sequence: u64) -> Vec<u8> {
    format!("signed batch {sequence} of {agent}").into_bytes()
}

/// Reads until `count` records came or 10 s passed without one.
async fn read(
    reader: &mut yagura_collector::archive::JetStreamReader,
    count: usize,
) -> Vec<Record> {
    read_within(reader, count, Duration::from_secs(10)).await
}

/// Nothing more arrives within a second.
async fn nothing_more(reader: &mut yagura_collector::archive::JetStreamReader) -> bool {
    read_within(reader, 1, Duration::from_secs(1))
        .await
        .is_empty()
}

async fn read_within(
    reader: &mut yagura_collector::archive::JetStreamReader,
    count: usize,
    wait: Duration,
) -> Vec<Record> {
    let mut records = Vec::new();
    while records.len() < count {
        match reader.next_within(wait).await.expect("read") {
            Some(record) => records.push(record),
            None => break,
        }
    }
    records
}

#[tokio::test]
async fn appends_in_order_acknowledges_replays_and_reads_back_the_same_bytes() {
    let Some(config) = config(4).await else {
        return;
    };
    let archive = JetStreamArchive::open(config).await.expect("open");
    let agent = Uuid::now_v7();
    let mut offsets = Vec::new();
    for sequence in 1..=3 {
        match archive
            .append(agent, sequence, batch(agent, sequence))
            .await
            .expect("append")
        {
            Appended::Accepted {
                offset,
                previous_sequence,
            } => {
                assert_eq!(previous_sequence, (sequence > 1).then(|| sequence - 1));
                offsets.push(offset);
            }
            other => panic!("sequence {sequence}: {other:?}"),
        }
    }
    assert_eq!(archive.last_sequence(agent), Some(3));
    // A replay is acknowledged again, not stored.
    assert_eq!(
        archive
            .append(agent, 2, batch(agent, 2))
            .await
            .expect("replay"),
        Appended::Duplicate { last_sequence: 3 }
    );
    // A gap is archived, and says what came before.
    assert_eq!(
        archive
            .append(agent, 7, batch(agent, 7))
            .await
            .expect("gap"),
        Appended::Accepted {
            offset: offsets[2] + 1,
            previous_sequence: Some(3)
        }
    );
    let mut reader = archive.reader(0).expect("reader");
    let records = read(&mut reader, 4).await;
    let bodies: Vec<Vec<u8>> = records.iter().map(|r| r.batch.clone()).collect();
    assert_eq!(
        bodies,
        [1, 2, 3, 7].map(|s| batch(agent, s)).to_vec(),
        "every batch once, in order, byte for byte"
    );
    assert!(
        records
            .iter()
            .all(|r| r.next_offset == r.offset + 1 && r.received_at_ms > 0)
    );
    assert_eq!(reader.offset(), records[3].next_offset);
    // A reader resumes from a stored offset; a record is found by its offset.
    let mut resumed = archive.reader(records[2].offset).expect("reader");
    let rest = read(&mut resumed, 2).await;
    assert_eq!(rest.len(), 2);
    assert_eq!(rest[0].batch, batch(agent, 3));
    let found = archive
        .record_at(offsets[1])
        .await
        .expect("record_at")
        .expect("present");
    assert_eq!(found.batch, batch(agent, 2));
    assert!(archive.record_at(999_999).await.expect("absent").is_none());
    // A batch NATS could never take is refused as too large (ingest answers 413), not
    // as a failure worth retrying.
    let error = archive
        .append(agent, 8, vec![0; archive.max_payload()])
        .await
        .expect_err("too large");
    assert!(
        matches!(
            error,
            yagura_collector::archive::ArchiveError::TooLarge { .. }
        ),
        "{error}"
    );
    archive.delete().await.expect("delete");
}

#[tokio::test]
async fn two_gateways_archive_one_agents_batches_once_and_in_order() {
    let Some(config) = config(4).await else {
        return;
    };
    let first = JetStreamArchive::open(config.clone()).await.expect("open");
    let second = JetStreamArchive::open(config).await.expect("open");
    let agent = Uuid::now_v7();
    for sequence in 1..=5 {
        first
            .append(agent, sequence, batch(agent, sequence))
            .await
            .expect("append");
    }
    // The second gateway has never seen this agent: a replay is still a duplicate.
    assert_eq!(
        second
            .append(agent, 3, batch(agent, 3))
            .await
            .expect("replay"),
        Appended::Duplicate { last_sequence: 5 }
    );
    assert!(matches!(
        second
            .append(agent, 6, batch(agent, 6))
            .await
            .expect("next"),
        Appended::Accepted {
            previous_sequence: Some(5),
            ..
        }
    ));
    // The first gateway's view is stale (it last wrote 5): JetStream refuses its publish,
    // it reads the subject again and appends after 6.
    assert!(matches!(
        first
            .append(agent, 7, batch(agent, 7))
            .await
            .expect("after"),
        Appended::Accepted {
            previous_sequence: Some(6),
            ..
        }
    ));
    assert_eq!(
        first
            .append(agent, 6, batch(agent, 6))
            .await
            .expect("replay"),
        Appended::Duplicate { last_sequence: 7 }
    );

    // Both race with the same agent's next 100 batches, each sending all of them.
    async fn race(archive: &JetStreamArchive, agent: Uuid) {
        for sequence in 8..108 {
            archive
                .append(agent, sequence, batch(agent, sequence))
                .await
                .expect("append");
        }
    }
    tokio::join!(race(&first, agent), race(&second, agent));

    let mut reader = first.reader(0).expect("reader");
    let records = read(&mut reader, 107).await;
    let bodies: Vec<Vec<u8>> = records.iter().map(|r| r.batch.clone()).collect();
    assert_eq!(
        bodies,
        (1..108).map(|s| batch(agent, s)).collect::<Vec<_>>()
    );
    assert!(nothing_more(&mut reader).await, "a batch stored twice");
    drop(second);
    first.delete().await.expect("delete");
}

#[tokio::test]
async fn partition_readers_divide_the_agents_and_keep_each_agents_order() {
    let Some(config) = config(3).await else {
        return;
    };
    let archive = JetStreamArchive::open(config.clone()).await.expect("open");
    let agents: Vec<Uuid> = (0..12).map(|_| Uuid::new_v4()).collect();
    for sequence in 1..=5 {
        for agent in &agents {
            archive
                .append(*agent, sequence, batch(*agent, sequence))
                .await
                .expect("append");
        }
    }
    let mut seen: BTreeMap<Uuid, Vec<u64>> = BTreeMap::new();
    let mut total = 0;
    for partition in 0..3 {
        let expected = agents
            .iter()
            .filter(|a| config.partition_of(**a) == partition)
            .count()
            * 5;
        let mut reader = archive.partition_reader(partition, 0).expect("reader");
        let records = read(&mut reader, expected).await;
        assert_eq!(records.len(), expected, "partition {partition}");
        assert!(nothing_more(&mut reader).await, "only its own agents");
        for record in records {
            let text = String::from_utf8(record.batch).expect("text");
            let (sequence, agent) = text
                .strip_prefix("signed batch ")
                .and_then(|rest| rest.split_once(" of "))
                .expect("batch");
            let agent: Uuid = agent.parse().expect("agent");
            assert_eq!(config.partition_of(agent), partition);
            seen.entry(agent)
                .or_default()
                .push(sequence.parse().expect("sequence"));
            total += 1;
        }
    }
    assert_eq!(total, 60);
    assert!(seen.values().all(|s| *s == [1, 2, 3, 4, 5]), "{seen:?}");
    // The partitions of an existing stream cannot change.
    let error = JetStreamArchive::open(JetStreamConfig {
        partitions: 4,
        ..config
    })
    .await
    .expect_err("another partition count");
    assert!(error.to_string().contains("partitions"), "{error}");
    archive.delete().await.expect("delete");
}

/// A reader whose consumer the server lost (deleted here, as a server restart or a long
/// pause past its inactivity limit would) makes a new one at its own position: every
/// record once, in order, nothing from before its position again.
#[tokio::test]
async fn a_reader_whose_consumer_is_lost_goes_on_from_its_own_position() {
    let Some(config) = config(1).await else {
        return;
    };
    let stream_name = config.stream.clone();
    let url = config.url.clone();
    let archive = JetStreamArchive::open(config).await.expect("open");
    let agent = Uuid::now_v7();
    for sequence in 1..=10 {
        archive
            .append(agent, sequence, batch(agent, sequence))
            .await
            .expect("append");
    }
    let mut reader = archive.partition_reader(0, 1).expect("reader");
    let first = read(&mut reader, 10).await;
    assert_eq!(first.len(), 10);

    let client = yagura_collector::archive::connect_nats(&url, "yagura-test")
        .await
        .expect("connect");
    let context = async_nats::jetstream::new(client);
    let stream = context.get_stream(&stream_name).await.expect("stream");
    let mut names = stream.consumer_names();
    let mut deleted = 0;
    while let Some(name) = tokio_stream::StreamExt::next(&mut names).await {
        stream
            .delete_consumer(&name.expect("name"))
            .await
            .expect("delete consumer");
        deleted += 1;
    }
    assert_eq!(deleted, 1, "the reader's consumer");

    for sequence in 11..=20 {
        archive
            .append(agent, sequence, batch(agent, sequence))
            .await
            .expect("append");
    }
    let rest = read(&mut reader, 10).await;
    let bodies: Vec<Vec<u8>> = rest.iter().map(|r| r.batch.clone()).collect();
    let expected: Vec<Vec<u8>> = (11..=20).map(|s| batch(agent, s)).collect();
    assert_eq!(bodies, expected);
    assert!(nothing_more(&mut reader).await);
    archive.delete().await.expect("delete");
}
