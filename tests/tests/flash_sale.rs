//! A short flash sale through the real stack (workerd + the core binary + PostgreSQL), played by
//! the load generator (`loadtest sale`) and audited by it: 300 buyers (some of them bots) for 100
//! seats, half going for the same 20, with declines, abandoned holds that must expire, and the
//! line's proof of work. The run must end with a clean audit: no seat sold twice, no tier oversold,
//! every paid order with its tickets, every hold ended, the edge and the core agreeing seat by seat.
//! The same buyers' plans then run against the baseline (a Redis lock per seat, an optimistic
//! update in PostgreSQL), audited by the same questions, and the two are compared.

use std::time::Duration;

use e2e::{create_admin, drop_database, run_sale, start_core_with, start_workerd_edge, Setup};
use serde_json::Value;

#[tokio::test]
async fn a_short_flash_sale_ends_with_a_clean_audit() {
    let Setup { dir, db_name, db_url, keys, core_port, edge_port, core_url, edge_url } =
        Setup::new("flash_sale");
    let env = vec![
        ("CORE_SIGNING_KEY", keys.core_signing_key()),
        ("EDGE_VERIFYING_KEYS", keys.edge.public_config()),
        ("EDGE_URL", edge_url.clone()),
        ("CORE_PUBLIC_URL", core_url.clone()),
        ("PAYMENT_GRACE_SECS", "5".to_owned()),
        ("RECONCILE_INTERVAL_MS", "300".to_owned()),
        ("WAITLIST_POLL_SECS", "1".to_owned()),
        ("RUST_LOG", "warn".to_owned()),
    ];
    let core = start_core_with(core_port, &db_url, true, &dir, &env);
    core.wait_ready("/readyz", Duration::from_secs(60)).await;
    // The Worker in workerd without wrangler's dev proxy (as the benchmarks run it).
    let edge = start_workerd_edge(edge_port, &core_url, &dir.join("do-state"), &dir, &keys);
    edge.wait_ready("/healthz", Duration::from_secs(120)).await;
    let admin = create_admin(&db_url, "root@sale.test");

    let plan = "--buyers 300 --seats 100 --hot-seats 20 --hot-share 0.5 --max-tickets 2 --arrival burst \
                --on-sale-in 3 --difficulty 2 --bot-share 0.05 --decline-share 0.1 --abandon-share 0.1 \
                --think-min-ms 50 --think-max-ms 300 --hold-seconds 8 --payment-seconds 10 \
                --admit-per-minute 3000 --max-active 100 --session-seconds 60 --concurrency 64 \
                --max-seconds 300 --waitlist 30 --waitlist-refunds 3 --baseline";
    let run = run_sale(&edge_url, &core_url, &db_url, &keys, &admin, &dir.join("results"), plan).await;
    let stdout = String::from_utf8_lossy(&run.stdout);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(
        run.status.success(),
        "the sale or its audit failed:\n{stdout}\n{stderr}\n--- core ---\n{}\n--- edge ---\n{}",
        core.log_tail(),
        edge.log_tail()
    );
    let report: Value = serde_json::from_str(&stdout).expect("the report is JSON");
    assert_eq!(report["audit"]["clean"], true, "{}", report["audit"]);
    let outcomes = &report["outcomes"];
    let n = |k: &str| outcomes[k].as_u64().unwrap_or(0);
    assert!(n("paid") > 0, "{outcomes}");
    assert!(n("bot_refused") > 0 && n("bot_joined") == 0, "the door held: {outcomes}");
    assert_eq!(n("refused"), 0, "no person refused: {report}");
    assert_eq!(n("timed_out"), 0, "every buyer's visit ended within the run: {outcomes}");
    assert!(n("sold_out_in_line") + n("no_seats") + n("gave_up") > 0, "300 buyers for 100 seats: {outcomes}");
    let sold = report["tickets_sold"].as_u64().unwrap();
    let refunded = report["waitlist"]["refunded_tickets"].as_u64().unwrap();
    assert!(sold > 0 && sold - refunded <= 100);
    assert_eq!(
        report["audit"]["figures"]["live_tickets"].as_u64(),
        Some(sold - refunded),
        "what buyers saw paid, less what the organizer refunded, is what the core holds"
    );
    assert!(report["hold_conflicts"].as_u64().unwrap() > 0, "the hot block was contended");
    // Every person joined a queue shard, and every admitted one read and held at an inventory object.
    let per_buyer = report["do_requests_per_buyer"].as_f64().unwrap();
    assert!((1.0..50.0).contains(&per_buyer), "Durable Object requests per buyer: {per_buyer}");
    let counts = &report["counts"];
    for key in ["admitted", "held", "conflicts", "holds_sold", "paid", "refused"] {
        assert!(counts[key].as_u64().unwrap_or(0) > 0, "{key}: {counts}");
    }
    assert_eq!(counts["paid"], report["outcomes"]["paid"], "{counts}");
    let orders = &report["audit"]["figures"]["orders_by_state"];
    let refunds = report["steps"]["refund"]["statuses"]["202"].as_u64().unwrap_or(0);
    assert_eq!(
        counts["holds_sold"].as_u64(),
        Some(orders["paid"].as_u64().unwrap_or(0) + refunds),
        "a hold per paid order (the organizer's refunds were paid too): {orders}"
    );
    // The waiting list: 30 people joined once the sale was sold out; the seats that came back
    // (abandoned, declined, refunded) were offered to them in order and some were bought; the
    // audit replayed the list's records against the orders (its checks are in `audit.checks`).
    let list = &report["waitlist"];
    assert!(refunds > 0, "the organizer refunded orders while people waited: {}", report["steps"]);
    assert!(list["figures"]["offers"].as_u64().unwrap_or(0) > 0, "{list}");
    assert!(list["figures"]["tickets_sold_through_the_list"].as_u64().unwrap_or(0) > 0, "{list}");
    assert!(list["outcomes"]["paid"].as_u64().unwrap_or(0) > 0, "{list}");
    let checks = report["audit"]["checks"].as_array().unwrap();
    for name in [
        "waitlist_offers_in_order",
        "waitlist_never_offered_more_than_came_back",
        "waitlist_released_only_when_unwanted",
        "waitlist_places_accounted",
        "waitlist_claims_are_paid_orders",
        "returned_seats_went_to_the_list",
    ] {
        assert!(checks.iter().any(|c| c["name"] == name && c["ok"] == true), "{name}: {checks:?}");
    }
    assert!(counts["refused_by_reason"]["pow-invalid"].as_u64().unwrap_or(0) > 0, "the bots: {counts}");
    for step in ["challenge", "join", "poll", "hold", "checkout", "pay"] {
        assert!(report["steps"][step]["requests"].as_u64().unwrap_or(0) > 0, "{step}");
    }
    // The same plans against the baseline (Redis locks + optimistic PostgreSQL), side by side.
    let baseline = &report["baseline"];
    assert!(baseline["audit"]["checks"].as_array().is_some_and(|c| c.len() >= 6), "{baseline}");
    assert!(baseline["outcomes"]["paid"].as_u64().unwrap_or(0) > 0, "{baseline}");
    assert!(
        report["comparison"]["hold_latency"]["baseline"]["p99_ms"].is_number(),
        "{}",
        report["comparison"]
    );
    for chart in [&report["chart"], &baseline["chart"]] {
        let chart = std::fs::read_to_string(chart.as_str().unwrap()).unwrap();
        assert!(chart.starts_with("<svg") && chart.contains("Tickets sold"));
    }
    drop(edge);
    drop(core);
    drop_database(&db_name);
}
