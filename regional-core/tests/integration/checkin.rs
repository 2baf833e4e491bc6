//! Check-in over gRPC against real PostgreSQL: a valid code admits once; a replay is told when and
//! where the ticket was used; forged, old-version and other-event codes are refused; two gates
//! scanning one ticket at the same moment admit it once; only a key of the event's organization may
//! scan; the offline list carries every ticket's current code; a rotated signing key's codes and
//! order links keep working while the old key is listed as previous, and stop when it is dropped.

use crate::common;

use std::net::SocketAddr;

use common::{checkout, order_token, paid_tickets, state_with, two_tenants, with_checkout, Api};
use regional_core::fulfillment::checkin::proto::check_in_client::CheckInClient;
use regional_core::fulfillment::checkin::proto::check_in_reply::Result as Outcome;
use regional_core::fulfillment::checkin::proto::{CheckInRequest, ValidCodesRequest};
use regional_core::fulfillment::checkin::Gates;
use regional_core::models::ticket::TicketRow;
use regional_core::tokens::ticket_code;
use shared_types::token::TokenSigner;
use sqlx::PgPool;
use tonic::transport::Channel;
use uuid::Uuid;

/// A core with checkout on and an organizer's paid order of tickets for `seats`.
struct Sold {
    signer: TokenSigner,
    state: regional_core::AppState,
    api: Api,
    key: String,
    event: String,
    order: Uuid,
    tickets: Vec<Uuid>,
}

async fn sold(db: &PgPool, seats: &[&str]) -> Sold {
    let signer = TokenSigner::from_seed("core-test", [4; 32]).unwrap();
    let state = with_checkout(db, &signer);
    let api = Api::start_with(state.clone()).await;
    let (_, [(org, key), _]) = two_tenants(&api).await;
    let (event, order, tickets) = paid_tickets(&api, &key, &org, seats).await;
    Sold { signer, state, api, key, event, order, tickets }
}

async fn serve(state: &regional_core::AppState) -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let gates = Gates::server(state.checkout.clone().unwrap());
    tokio::spawn(
        async move { tonic::transport::Server::builder().add_service(gates).serve(addr).await.unwrap() },
    );
    addr
}

async fn client(addr: SocketAddr) -> CheckInClient<Channel> {
    for _ in 0..50 {
        if let Ok(c) = CheckInClient::connect(format!("http://{addr}")).await {
            return c;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("the check-in service did not start");
}

fn scan(code: &str, gate: &str, event: &str, key: &str) -> tonic::Request<CheckInRequest> {
    let mut req =
        tonic::Request::new(CheckInRequest { code: code.into(), gate: gate.into(), event_id: event.into() });
    req.metadata_mut().insert("authorization", format!("Bearer {key}").parse().unwrap());
    req
}

async fn code_of(db: &PgPool, signer: &TokenSigner, ticket: Uuid) -> String {
    let row: TicketRow = sqlx::query_as(
        "SELECT t.id, t.event_id, t.tier_id, t.seat_id, t.holder_email, t.version, t.state, t.created_at, e.ends_at
         FROM tickets t JOIN events e ON e.id = t.event_id WHERE t.id = $1",
    )
    .bind(ticket)
    .fetch_one(db)
    .await
    .unwrap();
    ticket_code(signer, &row)
}

#[sqlx::test]
async fn a_ticket_admits_once_and_every_bad_code_is_refused(db: PgPool) {
    let signer = TokenSigner::from_seed("core-test", [4; 32]).unwrap();
    let state = with_checkout(&db, &signer);
    let api = Api::start_with(state.clone()).await;
    let (_, [(org, key), (_, other_key)]) = two_tenants(&api).await;
    let (event, _, tickets) = paid_tickets(&api, &key, &org, &["A-1", "A-2", "A-3", "A-4"]).await;
    let (_, _, elsewhere) = paid_tickets(&api, &key, &org, &["B-1"]).await;
    let addr = serve(&state).await;
    let mut gates = client(addr).await;

    // A valid code admits, once; the replay says when and where.
    let first = code_of(&db, &signer, tickets[0]).await;
    let r = gates.check_in(scan(&first, "north", &event, &key)).await.unwrap().into_inner();
    assert_eq!((r.result(), r.seat.as_str()), (Outcome::Admitted, "A-1"));
    let r = gates.check_in(scan(&first, "south", &event, &key)).await.unwrap().into_inner();
    assert_eq!((r.result(), r.used_gate.as_str()), (Outcome::AlreadyUsed, "north"));
    assert!(!r.used_at.is_empty());

    // Forged: one character of the signature changed.
    let second = code_of(&db, &signer, tickets[1]).await;
    let cut = second.rfind('.').unwrap() + 1;
    let flipped = if &second[cut..cut + 1] == "A" { "B" } else { "A" };
    let forged = format!("{}{flipped}{}", &second[..cut], &second[cut + 1..]);
    let r = gates.check_in(scan(&forged, "north", &event, &key)).await.unwrap().into_inner();
    assert_eq!((r.result(), r.reason.as_str()), (Outcome::Refused, "bad-signature"));
    // Signed by another key.
    let stranger = TokenSigner::from_seed("core-test", [9; 32]).unwrap();
    let r = gates
        .check_in(scan(&code_of(&db, &stranger, tickets[1]).await, "north", &event, &key))
        .await
        .unwrap();
    assert_eq!(r.into_inner().reason, "bad-signature");
    // An old version after a re-issue.
    sqlx::query("UPDATE tickets SET version = 2 WHERE id = $1").bind(tickets[1]).execute(&db).await.unwrap();
    let r = gates.check_in(scan(&second, "north", &event, &key)).await.unwrap().into_inner();
    assert_eq!((r.result(), r.reason.as_str()), (Outcome::Refused, "old-version"));
    let current = code_of(&db, &signer, tickets[1]).await;
    let r = gates.check_in(scan(&current, "north", &event, &key)).await.unwrap().into_inner();
    assert_eq!(r.result(), Outcome::Admitted);
    // Another event's ticket at this event's gate.
    let foreign = code_of(&db, &signer, elsewhere[0]).await;
    let r = gates.check_in(scan(&foreign, "north", &event, &key)).await.unwrap().into_inner();
    assert_eq!((r.result(), r.reason.as_str()), (Outcome::Refused, "wrong-event"));
    // A voided (refunded) ticket.
    sqlx::query("UPDATE tickets SET state = 'void' WHERE id = $1")
        .bind(tickets[3])
        .execute(&db)
        .await
        .unwrap();
    let r =
        gates.check_in(scan(&code_of(&db, &signer, tickets[3]).await, "north", &event, &key)).await.unwrap();
    assert_eq!(r.into_inner().reason, "void");

    // Two gates at the same moment, ten times over: exactly one admits.
    let third = code_of(&db, &signer, tickets[2]).await;
    let mut a = client(addr).await;
    let mut b = client(addr).await;
    let (ra, rb) = tokio::join!(
        a.check_in(scan(&third, "east", &event, &key)),
        b.check_in(scan(&third, "west", &event, &key))
    );
    let results = [ra.unwrap().into_inner().result(), rb.unwrap().into_inner().result()];
    assert_eq!(results.iter().filter(|r| **r == Outcome::Admitted).count(), 1, "{results:?}");
    assert_eq!(results.iter().filter(|r| **r == Outcome::AlreadyUsed).count(), 1, "{results:?}");

    // Every scan is on record.
    let scans: i64 = sqlx::query_scalar("SELECT count(*) FROM check_ins").fetch_one(&db).await.unwrap();
    assert_eq!(scans, 10);

    // Keys: none, or another organization's, may not scan this event.
    let mut anonymous = tonic::Request::new(CheckInRequest {
        code: third.clone(),
        gate: "x".into(),
        event_id: event.clone(),
    });
    anonymous.metadata_mut().remove("authorization");
    assert_eq!(gates.check_in(anonymous).await.unwrap_err().code(), tonic::Code::Unauthenticated);
    assert_eq!(
        gates.check_in(scan(&third, "x", &event, &other_key)).await.unwrap_err().code(),
        tonic::Code::NotFound
    );

    // The offline list: every live ticket's current version and seat, used ones marked; never a
    // code (a scanner key must not be able to make an entry).
    let mut req = tonic::Request::new(ValidCodesRequest { event_id: event.clone() });
    req.metadata_mut().insert("authorization", format!("Bearer {key}").parse().unwrap());
    let mut stream = gates.valid_codes(req).await.unwrap().into_inner();
    let mut listed = Vec::new();
    while let Some(item) = stream.message().await.unwrap() {
        listed.push(item);
    }
    assert_eq!(listed.len(), 3, "the void ticket is not listed");
    let current_listed = listed.iter().find(|c| c.ticket_id == tickets[1].to_string()).unwrap();
    assert_eq!((current_listed.seat.as_str(), current_listed.version, current_listed.used), ("A-2", 2, true));
    let encoded = prost::Message::encode_to_vec(current_listed);
    let signature = current.rsplit('.').next().unwrap();
    assert!(!String::from_utf8_lossy(&encoded).contains(signature), "no code in the offline list");
}

fn sync(
    event: &str,
    key: &str,
    scans: Vec<regional_core::fulfillment::checkin::proto::OfflineScan>,
) -> tonic::Request<regional_core::fulfillment::checkin::proto::SyncScansRequest> {
    let mut req = tonic::Request::new(regional_core::fulfillment::checkin::proto::SyncScansRequest {
        event_id: event.into(),
        scans,
    });
    req.metadata_mut().insert("authorization", format!("Bearer {key}").parse().unwrap());
    req
}

#[sqlx::test]
async fn an_offline_scan_made_before_a_reissue_or_transfer_uses_the_ticket(db: PgPool) {
    use regional_core::fulfillment::checkin::proto::OfflineScan;
    let Sold { signer, state, api, key, event, order, tickets } =
        sold(&db, &["A-1", "A-2", "A-3", "A-4"]).await;
    let mut gates = client(serve(&state).await).await;
    let v1 = [
        code_of(&db, &signer, tickets[0]).await,
        code_of(&db, &signer, tickets[1]).await,
        code_of(&db, &signer, tickets[2]).await,
        code_of(&db, &signer, tickets[3]).await,
    ];
    let scanned = (chrono::Utc::now() - chrono::Duration::minutes(30)).to_rfc3339();
    // The gate fetched its offline list forty minutes ago, before it went offline.
    let mut req = tonic::Request::new(ValidCodesRequest { event_id: event.clone() });
    req.metadata_mut().insert("authorization", format!("Bearer {key}").parse().unwrap());
    let mut list = gates.valid_codes(req).await.unwrap().into_inner();
    while list.message().await.unwrap().is_some() {}
    sqlx::query("UPDATE scanner_lists SET fetched_at = now() - interval '40 minutes'")
        .execute(&db)
        .await
        .unwrap();

    // An offline gate admits with their first codes; then, before it syncs, A-1 is
    // re-issued by its buyer and A-2 given to someone else (both make version 2).
    let token = order_token(&signer, order, &event);
    let reissued = api
        .http
        .post(format!("{}/api/v1/orders/{order}/tickets/{}/reissue", api.base, tickets[0]))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(reissued.status(), 200, "{}", reissued.text().await.unwrap());
    sqlx::query(
        "UPDATE tickets SET version = version + 1, holder_email = 'friend@example.test' WHERE id = $1",
    )
    .bind(tickets[1])
    .execute(&db)
    .await
    .unwrap();
    let v2 = [code_of(&db, &signer, tickets[0]).await, code_of(&db, &signer, tickets[1]).await];
    assert_ne!(v2[0], v1[0]);

    // The sync: both scans were made before the new versions began, so they were the first uses.
    let scans = vec![
        OfflineScan { code: v1[0].clone(), gate: "east".into(), scanned_at: scanned.clone() },
        OfflineScan { code: v1[1].clone(), gate: "east".into(), scanned_at: scanned.clone() },
    ];
    let results = gates.sync_scans(sync(&event, &key, scans.clone())).await.unwrap().into_inner().results;
    assert_eq!(
        results.iter().map(|r| r.result()).collect::<Vec<_>>(),
        [Outcome::Admitted, Outcome::Admitted]
    );
    // Version 2 of either admits nobody else: already used, at the offline gate.
    for code in &v2 {
        let r = gates.check_in(scan(code, "west", &event, &key)).await.unwrap().into_inner();
        assert_eq!((r.result(), r.used_gate.as_str()), (Outcome::AlreadyUsed, "east"), "{}", r.reason);
    }
    // Synced again: the same answers, nothing changes.
    let again = gates.sync_scans(sync(&event, &key, scans)).await.unwrap().into_inner().results;
    assert_eq!(again.iter().map(|r| r.result()).collect::<Vec<_>>(), [Outcome::Admitted, Outcome::Admitted]);

    // An old code scanned after the re-issue is what it always was: refused, the ticket unused.
    sqlx::query("UPDATE tickets SET version = version + 1 WHERE id = $1")
        .bind(tickets[2])
        .execute(&db)
        .await
        .unwrap();
    let after = (chrono::Utc::now() + chrono::Duration::seconds(1)).to_rfc3339();
    let late = vec![OfflineScan { code: v1[2].clone(), gate: "east".into(), scanned_at: after }];
    let r = gates.sync_scans(sync(&event, &key, late)).await.unwrap().into_inner().results;
    assert_eq!((r[0].result(), r[0].reason.as_str()), (Outcome::Refused, "old-version"));
    let r = gates.check_in(scan(&v1[2], "west", &event, &key)).await.unwrap().into_inner();
    assert_eq!((r.result(), r.reason.as_str()), (Outcome::Refused, "old-version"));
    let state: String = sqlx::query_scalar("SELECT state FROM tickets WHERE id = $1")
        .bind(tickets[2])
        .fetch_one(&db)
        .await
        .unwrap();
    assert_eq!(state, "valid");
}

#[sqlx::test]
async fn a_used_ticket_is_not_refunded_unless_the_organizer_says_so(db: PgPool) {
    let Sold { signer, state, api, key, event, order, tickets } = sold(&db, &["A-1", "A-2"]).await;
    let mut gates = client(serve(&state).await).await;
    let r =
        gates.check_in(scan(&code_of(&db, &signer, tickets[0]).await, "north", &event, &key)).await.unwrap();
    assert_eq!(r.into_inner().result(), Outcome::Admitted);

    // The buyer, scanned in, asks for their money back: refused, nothing changes.
    let token = order_token(&signer, order, &event);
    let cancelled = api
        .http
        .post(format!("{}/api/v1/orders/{order}/cancel", api.base))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(cancelled.status(), 409);
    let problem: serde_json::Value = cancelled.json().await.unwrap();
    assert_eq!(problem["reason"], "ticket_used", "{problem}");
    // The organizer: refused unless the refund of a used ticket is said explicitly.
    let refund = format!("/api/v1/orders/{order}/refund");
    let (s, p) = api.call(&key, reqwest::Method::POST, &refund, Some(serde_json::json!({}))).await;
    assert_eq!((s.as_u16(), p["reason"].as_str()), (409, Some("ticket_used")), "{p}");
    let (s, p) = api
        .call(
            &key,
            reqwest::Method::POST,
            &refund,
            Some(serde_json::json!({ "include_used": true, "seats": "return" })),
        )
        .await;
    assert_eq!(s.as_u16(), 422, "a used seat cannot go back on sale: {p}");
    let state_now: String = sqlx::query_scalar("SELECT state FROM orders WHERE id = $1")
        .bind(order)
        .fetch_one(&db)
        .await
        .unwrap();
    assert_eq!(state_now, "paid");
    let (s, p) = api
        .call(&key, reqwest::Method::POST, &refund, Some(serde_json::json!({ "include_used": true })))
        .await;
    assert_eq!(s.as_u16(), 202, "{p}");
    let seats: String = sqlx::query_scalar("SELECT seats_after_refund FROM orders WHERE id = $1")
        .bind(order)
        .fetch_one(&db)
        .await
        .unwrap();
    assert_eq!(seats, "off_sale", "someone sat there");
    // While the refund runs, the order's other ticket admits nobody.
    let r =
        gates.check_in(scan(&code_of(&db, &signer, tickets[1]).await, "north", &event, &key)).await.unwrap();
    let r = r.into_inner();
    assert_eq!((r.result(), r.reason.as_str()), (Outcome::Refused, "not-paid"));
}

#[sqlx::test]
async fn offline_scans_sync_back_at_their_own_time_once_and_double_entries_are_told(db: PgPool) {
    use regional_core::fulfillment::checkin::proto::{OfflineScan, SyncScansRequest};
    let Sold { signer, state, api: _, key, event, tickets, .. } = sold(&db, &["A-1", "A-2", "A-3"]).await;
    let mut gates = client(serve(&state).await).await;
    let codes = [
        code_of(&db, &signer, tickets[0]).await,
        code_of(&db, &signer, tickets[1]).await,
        code_of(&db, &signer, tickets[2]).await,
    ];
    // A-3 was scanned online first.
    let r = gates.check_in(scan(&codes[2], "main", &event, &key)).await.unwrap().into_inner();
    assert_eq!(r.result(), Outcome::Admitted);

    let at = |mins: i64| (chrono::Utc::now() - chrono::Duration::minutes(mins)).to_rfc3339();
    let (early, late) = (at(30), at(20));
    let scans = vec![
        // A-1 scanned at two offline gates; sent latest first: the earliest is the first use.
        OfflineScan { code: codes[0].clone(), gate: "east".into(), scanned_at: late.clone() },
        OfflineScan { code: codes[0].clone(), gate: "west".into(), scanned_at: early.clone() },
        OfflineScan { code: codes[1].clone(), gate: "east".into(), scanned_at: early.clone() },
        OfflineScan { code: codes[2].clone(), gate: "east".into(), scanned_at: early.clone() },
        OfflineScan { code: "forged".into(), gate: "east".into(), scanned_at: early.clone() },
    ];
    let sync = |scans: Vec<OfflineScan>| {
        let mut req = tonic::Request::new(SyncScansRequest { event_id: event.clone(), scans });
        req.metadata_mut().insert("authorization", format!("Bearer {key}").parse().unwrap());
        req
    };
    let results = gates.sync_scans(sync(scans.clone())).await.unwrap().into_inner().results;
    let outcomes: Vec<Outcome> = results.iter().map(|r| r.result()).collect();
    assert_eq!(
        outcomes,
        [Outcome::AlreadyUsed, Outcome::Admitted, Outcome::Admitted, Outcome::AlreadyUsed, Outcome::Refused]
    );
    assert_eq!(results[0].used_gate, "west", "the double entry names the first use");
    assert_eq!(results[3].used_gate, "main");
    let (used_at, gate): (chrono::DateTime<chrono::Utc>, String) =
        sqlx::query_as("SELECT used_at, used_gate FROM tickets WHERE id = $1")
            .bind(tickets[0])
            .fetch_one(&db)
            .await
            .unwrap();
    assert_eq!(
        (used_at.to_rfc3339(), gate.as_str()),
        (
            chrono::SubsecRound::trunc_subsecs(chrono::DateTime::parse_from_rfc3339(&early).unwrap(), 6)
                .with_timezone(&chrono::Utc)
                .to_rfc3339(),
            "west"
        )
    );

    // The same sync again (a scanner that did not hear the answer) changes nothing.
    let again = gates.sync_scans(sync(scans)).await.unwrap().into_inner().results;
    assert_eq!(again.iter().map(|r| r.result()).collect::<Vec<_>>(), outcomes);
    let admitted: i64 = sqlx::query_scalar("SELECT count(*) FROM outbox WHERE topic = 'checkins'")
        .fetch_one(&db)
        .await
        .unwrap();
    assert_eq!(admitted, 3, "one ticket.checked_in per ticket");
    let payloads: Vec<serde_json::Value> =
        sqlx::query_scalar("SELECT payload FROM outbox").fetch_all(&db).await.unwrap();
    for p in &payloads {
        regional_core::bus::schema::check(p).unwrap_or_else(|e| panic!("{e}: {p}"));
    }

    // Bad input is refused whole.
    let future = vec![OfflineScan { code: codes[1].clone(), gate: "east".into(), scanned_at: at(-60) }];
    assert_eq!(gates.sync_scans(sync(future)).await.unwrap_err().code(), tonic::Code::InvalidArgument);
    let garbled =
        vec![OfflineScan { code: codes[1].clone(), gate: "east".into(), scanned_at: "yesterday".into() }];
    assert_eq!(gates.sync_scans(sync(garbled)).await.unwrap_err().code(), tonic::Code::InvalidArgument);
}

#[sqlx::test]
async fn codes_signed_before_a_key_rotation_admit_while_the_old_key_is_trusted(db: PgPool) {
    // Tickets sold and mailed under the old key.
    let old = TokenSigner::from_seed("core-2026-01", [4; 32]).unwrap();
    let api = Api::start_with(with_checkout(&db, &old)).await;
    let (_, [(org, key), _]) = two_tenants(&api).await;
    let (event, order, tickets) = paid_tickets(&api, &key, &org, &["A-1", "A-2"]).await;
    let printed = code_of(&db, &old, tickets[0]).await;
    let old_link = order_token(&old, order, &event);

    // The core restarts signing with a new key, the old one listed as previous.
    let new = TokenSigner::from_seed("core-2026-02", [5; 32]).unwrap();
    let rotated = state_with(regional_core::checkout::Checkout {
        previous_keys: old.verifying_ring(),
        ..checkout(&db, &new)
    });
    let api = Api::start_with(rotated.clone()).await;
    let mut gates = client(serve(&rotated).await).await;
    let r = gates.check_in(scan(&printed, "north", &event, &key)).await.unwrap().into_inner();
    assert_eq!((r.result(), r.seat.as_str()), (Outcome::Admitted, "A-1"), "{}", r.reason);
    // Scanners learn both keys, the signing one first.
    let keys: serde_json::Value =
        api.http.get(format!("{}/api/v1/keys", api.base)).send().await.unwrap().json().await.unwrap();
    let kids: Vec<(&str, bool)> = keys["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| (k["kid"].as_str().unwrap(), k["current"].as_bool().unwrap()))
        .collect();
    assert_eq!(kids, [("core-2026-02", true), ("core-2026-01", false)]);
    // The order link mailed under the old key still opens the order, whose codes are now new-key ones.
    let (_, list) = api.get(&old_link, &format!("/api/v1/orders/{order}/tickets")).await;
    let fresh = list[1]["code"].as_str().unwrap().to_owned();
    assert_eq!(fresh, code_of(&db, &new, tickets[1]).await);
    let r = gates.check_in(scan(&fresh, "north", &event, &key)).await.unwrap().into_inner();
    assert_eq!(r.result(), Outcome::Admitted);

    // Once the old key is dropped, what it signed is refused.
    let dropped = state_with(checkout(&db, &new));
    let mut gates = client(serve(&dropped).await).await;
    let other_old = code_of(&db, &old, tickets[1]).await;
    let r = gates.check_in(scan(&other_old, "south", &event, &key)).await.unwrap().into_inner();
    assert_eq!((r.result(), r.reason.as_str()), (Outcome::Refused, "unknown-key"));
}

#[sqlx::test]
async fn check_in_is_served_over_tls_when_given_a_certificate(db: PgPool) {
    use tonic::transport::{Certificate, ClientTlsConfig, Endpoint};
    let Sold { signer, state, api: _, key, event, tickets, .. } = sold(&db, &["A-1"]).await;
    // A certificate for localhost, made as an operator would (openssl), for this test only.
    let dir = std::env::temp_dir().join(format!("checkin-tls-{}", Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    common::test_pki(&dir);
    let ca = std::fs::read(dir.join("ca.pem")).unwrap();
    let cert = std::fs::read(dir.join("cert.pem")).unwrap();
    let cert_for_server = cert.clone();
    let key_pem = std::fs::read(dir.join("key.pem")).unwrap();
    std::fs::remove_dir_all(&dir).unwrap();

    let addr = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let gates = Gates::server(state.checkout.clone().unwrap());
    tokio::spawn(async move {
        let served = regional_core::fulfillment::checkin::serve(
            gates,
            addr,
            Some((cert_for_server, key_pem)),
            regional_core::shutdown::Stop::never(),
        )
        .await;
        eprintln!("check-in over TLS stopped: {served:?}");
    });
    let tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(&ca)).domain_name("localhost");
    let endpoint = Endpoint::from_shared(format!("https://{addr}")).unwrap().tls_config(tls).unwrap();
    let mut channel = None;
    for _ in 0..50 {
        match endpoint.connect().await {
            Ok(c) => {
                channel = Some(c);
                break;
            }
            Err(e) => eprintln!("connect (retrying): {e:?}"),
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let mut gates = CheckInClient::new(channel.expect("a TLS connection"));
    let code = code_of(&db, &signer, tickets[0]).await;
    let r = gates.check_in(scan(&code, "north", &event, &key)).await.unwrap().into_inner();
    assert_eq!(r.result(), Outcome::Admitted);
    // A plaintext client gets nothing from the TLS port.
    let plain = CheckInClient::connect(format!("http://{addr}")).await;
    let refused = match plain {
        Err(_) => true,
        Ok(mut c) => c.check_in(scan(&code, "north", &event, &key)).await.is_err(),
    };
    assert!(refused, "plaintext must not reach a TLS check-in service");
}
