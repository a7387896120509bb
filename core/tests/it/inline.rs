//! Inline delivery: a router with one worker thread writes idle clients
//! from its mailbox drainer. Every event still reaches every client once,
//! in order, counted, and never cut by a frame the client's task writes (a
//! Pong) or by another publish; an event stream's messages carry its own
//! cursor, in whole chunks. The stalled WebSocket client's case is in
//! `slow_consumers.rs`.

use crate::support::{self, OneWorker};

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::io::BufReader;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

const SUBSCRIBERS: usize = 20;
const EVENTS: u64 = 1000;

/// Publishes `EVENTS` `job.progress` events in batches of 1 to 50, from
/// two publishers at once, so that inline writes of several publishes and
/// several batch sizes follow each other.
async fn publish_all(router: &OneWorker) {
    let remote = &**router;
    let batches: Vec<Vec<Value>> = (1..=EVENTS)
        .collect::<Vec<_>>()
        .chunks(50)
        .flat_map(|chunk| chunk.chunks(1 + chunk[0] as usize % 17))
        .map(|batch| {
            batch
                .iter()
                .map(|n| json!({"type": "job.progress", "payload": {"job_id": format!("j{n}")}}))
                .collect()
        })
        .collect();
    let (even, odd): (Vec<_>, Vec<_>) = batches
        .into_iter()
        .enumerate()
        .partition(|(i, _)| i % 2 == 0);
    let publisher = |batches: Vec<(usize, Vec<Value>)>| async move {
        for (_, batch) in batches {
            let (status, body) = remote.publish(&Value::Array(batch)).await;
            assert_eq!(status, 202, "{body}");
        }
    };
    tokio::join!(publisher(even), publisher(odd));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_client_gets_every_event_once_in_order_and_counted() {
    let router = OneWorker::start(support::BASE).await;
    let mut clients = Vec::new();
    for _ in 0..SUBSCRIBERS {
        let mut client = router.ws("/ws/events?events=job.*").await;
        client.established().await;
        clients.push(client);
    }
    let readers: Vec<_> = clients
        .into_iter()
        .map(|mut client| {
            tokio::spawn(async move {
                let mut received = Vec::new();
                while (received.len() as u64) < EVENTS {
                    let event = client.recv_type("job.progress").await;
                    let id = event["payload"]["job_id"].as_str().unwrap().to_owned();
                    received.push((event["sequence"].as_u64().unwrap(), id));
                }
                received
            })
        })
        .collect();
    publish_all(&router).await;
    let mut first = None;
    for reader in readers {
        let received = reader.await.unwrap();
        let sequences: Vec<u64> = received.iter().map(|(s, _)| *s).collect();
        assert_eq!(
            sequences,
            (1..=EVENTS).collect::<Vec<_>>(),
            "every event once, in order"
        );
        let first = first.get_or_insert_with(|| received.clone());
        assert_eq!(*first, received, "every client the same payloads");
    }
    let mut ids: Vec<String> = first.unwrap().into_iter().map(|(_, id)| id).collect();
    ids.sort();
    let mut published: Vec<String> = (1..=EVENTS).map(|n| format!("j{n}")).collect();
    published.sort();
    assert_eq!(ids, published, "the payloads published");
    let metrics = router.metrics().await;
    let delivered = support::sample(&metrics, r#"switchyard_deliveries_total{channel="jobs"}"#);
    assert_eq!(
        delivered,
        Some((SUBSCRIBERS as u64 * EVENTS) as f64),
        "{metrics}"
    );
    let observed = support::sample(&metrics, "switchyard_delivery_latency_seconds_count");
    assert!(
        observed.is_some_and(|n| n >= (SUBSCRIBERS as u64 * EVENTS) as f64),
        "every inline delivery is timed: {observed:?}"
    );
}

/// A client that pings while events stream in: its task writes the Pongs,
/// the fan-out the events, and neither cuts the other's frames.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pongs_and_inline_events_never_cut_each_other() {
    let router = OneWorker::start(support::BASE).await;
    let client = router.ws("/ws/events?events=job.*").await;
    let (mut sink, mut stream) = client.socket.split();
    let pinger = tokio::spawn(async move {
        for i in 0..200u32 {
            sink.send(Message::Ping(i.to_be_bytes().to_vec().into()))
                .await
                .unwrap();
            tokio::task::yield_now().await;
        }
        sink
    });
    let reader = tokio::spawn(async move {
        let (mut events, mut pongs) = (Vec::new(), 0);
        while (events.len() as u64) < EVENTS {
            match stream.next().await.expect("open").expect("whole frames") {
                Message::Text(text) => {
                    let msg: Value = serde_json::from_str(&text).expect("whole JSON");
                    if msg["type"] == "job.progress" {
                        events.push(msg["sequence"].as_u64().unwrap());
                    }
                }
                Message::Pong(_) => pongs += 1,
                _ => {}
            }
        }
        (events, pongs)
    });
    publish_all(&router).await;
    let _sink = pinger.await.unwrap();
    let (events, pongs) = reader.await.unwrap();
    assert_eq!(events, (1..=EVENTS).collect::<Vec<_>>());
    assert!(pongs > 0, "Pongs came between the events");
}

/// Event streams are written by the drainer too: it renders each stream's
/// messages under the stream's own cursor, a batch to a chunk. The stream
/// whose client does not read until the end has its small socket fill in
/// the middle of a chunk; its task writes the rest from the byte where the
/// drainer stopped, and the drainer leaves it alone until it is done. Every
/// delivery is counted and timed, as a WebSocket's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_streams_get_every_event_once_in_order_under_their_cursor() {
    let router = OneWorker::start(&support::with_server("socket_send_buffer = 4096")).await;
    let mut readers = Vec::new();
    for _ in 0..SUBSCRIBERS / 2 {
        let mut stream = router.event_stream("/ws/events?events=job.*", None).await;
        readers.push(tokio::spawn(async move { read_events(&mut stream).await }));
    }
    let mut stalled = router
        .event_stream("/ws/events?events=job.*", Some(4096))
        .await;
    publish_all(&router).await;
    let mut streams = Vec::new();
    for reader in readers {
        streams.push(reader.await.unwrap());
    }
    streams.push(read_events(&mut stalled).await);
    for events in streams {
        let sequences: Vec<u64> = events.iter().map(|(_, sequence)| *sequence).collect();
        assert_eq!(
            sequences,
            (1..=EVENTS).collect::<Vec<_>>(),
            "every event once, in order"
        );
        assert!(
            events.iter().all(|(id, sequence)| id == sequence),
            "each message's id is the cursor past it"
        );
    }
    let streams = (SUBSCRIBERS / 2 + 1) as u64;
    let metrics = router.metrics().await;
    let delivered = support::sample(&metrics, r#"switchyard_deliveries_total{channel="jobs"}"#);
    assert_eq!(delivered, Some((streams * EVENTS) as f64), "{metrics}");
    let observed = support::sample(&metrics, "switchyard_delivery_latency_seconds_count");
    assert!(
        observed.is_some_and(|n| n >= (streams * EVENTS) as f64),
        "every delivery to a stream is timed: {observed:?}"
    );
}

/// Reads a stream's chunks until it has `EVENTS` `job.progress` messages,
/// each chunk whole messages: each event's position of `jobs` in its `id:`
/// and its sequence.
async fn read_events(stream: &mut BufReader<TcpStream>) -> Vec<(u64, u64)> {
    let mut events = Vec::new();
    while (events.len() as u64) < EVENTS {
        let chunk = support::read_chunk(stream)
            .await
            .expect("the stream goes on");
        assert!(chunk.ends_with("\n\n"), "whole messages: {chunk:?}");
        for message in chunk.trim_end().split("\n\n") {
            let field = |name: &str| message.lines().find_map(|l| l.strip_prefix(name));
            // A `: ping` has no data.
            let Some(data) = field("data: ") else {
                continue;
            };
            let data: Value = serde_json::from_str(data).expect("whole JSON");
            if data["type"] == "job.progress" {
                let id = field("id: ").expect("an id");
                events.push((jobs_position(id), data["sequence"].as_u64().unwrap()));
            }
        }
    }
    events
}

/// The sequence of `jobs` in a cursor (`alerts:EPOCH:4,jobs:EPOCH:7`).
fn jobs_position(id: &str) -> u64 {
    let jobs = id
        .split(',')
        .find_map(|p| p.strip_prefix("jobs:"))
        .unwrap_or_else(|| panic!("jobs in {id}"));
    jobs.rsplit_once(':').unwrap().1.parse().unwrap()
}
