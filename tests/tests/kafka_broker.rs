//! The Kafka-protocol broker that the test command starts (tansu, SQLite storage) answers the Kafka
//! wire protocol. Later tests produce and consume through rdkafka; this one proves, without a client
//! library, that `KAFKA_BOOTSTRAP` points at a broker that speaks Kafka and offers produce and fetch.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const API_PRODUCE: i16 = 0;
const API_FETCH: i16 = 1;
const API_METADATA: i16 = 3;
const API_VERSIONS: i16 = 18;

/// Encodes an ApiVersions v0 request (header v1: key, version, correlation id, client id).
fn api_versions_request(correlation_id: i32) -> Vec<u8> {
    let client_id = b"ticketing-e2e";
    let mut body = Vec::new();
    body.extend_from_slice(&API_VERSIONS.to_be_bytes());
    body.extend_from_slice(&0i16.to_be_bytes());
    body.extend_from_slice(&correlation_id.to_be_bytes());
    body.extend_from_slice(&(client_id.len() as i16).to_be_bytes());
    body.extend_from_slice(client_id);
    let mut frame = (body.len() as i32).to_be_bytes().to_vec();
    frame.extend(body);
    frame
}

/// Decodes an ApiVersions v0 response: (correlation id, error code, [(api key, min, max)]).
fn parse_api_versions(frame: &[u8]) -> (i32, i16, Vec<(i16, i16, i16)>) {
    let i16_at = |at: usize| i16::from_be_bytes([frame[at], frame[at + 1]]);
    let i32_at = |at: usize| i32::from_be_bytes([frame[at], frame[at + 1], frame[at + 2], frame[at + 3]]);
    let correlation_id = i32_at(0);
    let error_code = i16_at(4);
    let count = i32_at(6).max(0) as usize;
    let apis =
        (0..count).map(|i| 10 + i * 6).map(|at| (i16_at(at), i16_at(at + 2), i16_at(at + 4))).collect();
    (correlation_id, error_code, apis)
}

#[test]
fn request_encoding_matches_the_protocol() {
    let frame = api_versions_request(7);
    assert_eq!(&frame[..4], &(frame.len() as i32 - 4).to_be_bytes());
    assert_eq!(&frame[4..6], &18i16.to_be_bytes());
    let response = [0, 0, 0, 7, 0, 0, 0, 0, 0, 1, 0, 3, 0, 0, 0, 12];
    assert_eq!(parse_api_versions(&response), (7, 0, vec![(3, 0, 12)]));
}

#[tokio::test]
async fn the_test_broker_speaks_kafka_and_offers_produce_fetch_and_metadata() {
    let bootstrap = std::env::var("KAFKA_BOOTSTRAP")
        .expect("KAFKA_BOOTSTRAP is not set: run the end-to-end tests through scripts/test.sh");
    let mut stream = tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(&bootstrap))
        .await
        .expect("connect timed out")
        .unwrap_or_else(|e| panic!("no broker on {bootstrap}: {e}"));
    stream.write_all(&api_versions_request(42)).await.unwrap();

    let mut size = [0u8; 4];
    tokio::time::timeout(Duration::from_secs(5), stream.read_exact(&mut size))
        .await
        .expect("no answer")
        .unwrap();
    let size = i32::from_be_bytes(size);
    assert!((10..1_000_000).contains(&size), "implausible frame size {size}");
    let mut frame = vec![0u8; size as usize];
    stream.read_exact(&mut frame).await.unwrap();

    let (correlation_id, error_code, apis) = parse_api_versions(&frame);
    assert_eq!(correlation_id, 42);
    assert_eq!(error_code, 0);
    for wanted in [API_PRODUCE, API_FETCH, API_METADATA, API_VERSIONS] {
        assert!(apis.iter().any(|(key, _, _)| *key == wanted), "broker lacks API {wanted}: {apis:?}");
    }
}
