//! How the cluster's tests (here, in the collector's integration tests and in the
//! end-to-end tests) reach the NATS server they run against: `YAGURA_TEST_NATS_URL`, or
//! the machine's own at 127.0.0.1:4222. Without a usable server a test says why and is
//! skipped; under `YAGURA_TEST_STRICT=1` (CI) it fails instead.

/// The NATS server tests use.
pub fn nats_url() -> String {
    std::env::var("YAGURA_TEST_NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".into())
}

/// A connection to the test NATS server, or `None` after printing why the test is
/// skipped. Panics under `YAGURA_TEST_STRICT=1` when the server is not usable.
pub async fn nats_or_skip() -> Option<async_nats::Client> {
    let url = nats_url();
    match crate::archive::connect_nats(&url, "yagura-test").await {
        Ok(client) => Some(client),
        Err(error) => {
            let strict = std::env::var("YAGURA_TEST_STRICT").is_ok_and(|v| v == "1");
            assert!(
                !strict,
                "YAGURA_TEST_STRICT=1 and NATS is not usable at {url}: {error}"
            );
            eprintln!("skipped: NATS is not usable at {url}: {error}");
            None
        }
    }
}

/// A stream, subject prefix and buckets of a test's own (a random name), on
/// [`nats_url`].
pub fn own_stream(partitions: u32) -> crate::archive::JetStreamConfig {
    let id = uuid::Uuid::new_v4().simple().to_string();
    crate::archive::JetStreamConfig {
        url: nats_url(),
        stream: format!("YAGURA_TEST_{id}"),
        subject_prefix: format!("yagura-test.{id}"),
        partitions,
        ..Default::default()
    }
}

/// Deletes everything a cluster on `config` made: the archive stream, the detectors'
/// streams, and the buckets of leases, agents and detector state (a test's clean-up;
/// what does not exist is passed over).
pub async fn delete_cluster(client: async_nats::Client, config: &crate::archive::JetStreamConfig) {
    let context = async_nats::jetstream::new(client);
    let detection = super::detector::DetectionStreams::of(config);
    for bucket in [
        super::node::lease_bucket_name(&config.stream),
        super::directory::bucket_name(&config.stream),
        detection.state_bucket,
    ] {
        let _ = context.delete_key_value(bucket).await;
    }
    for stream in [
        config.stream.clone(),
        detection.matched.stream,
        detection.detections_stream,
    ] {
        let _ = context.delete_stream(stream).await;
    }
}
