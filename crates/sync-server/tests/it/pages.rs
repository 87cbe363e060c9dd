//! `changes` messages stay under the page byte budget: a page that would be larger is
//! cut short with `has_more`, and paging still returns every change exactly once.

use crate::common::TestServer;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_pages_are_cut_to_the_byte_budget() {
    let server = TestServer::start_with(|c| c.limits.max_page_bytes = 20_000).await;
    let mut a = server.client("pages@example.com").await;
    let blob = "x".repeat(3000);
    for i in 0..30 {
        let reply = a.create(&format!("p{i}"), json!({"i": i, "blob": blob})).await;
        assert_eq!(reply["success"], true, "{reply}");
    }
    let mut after = 0;
    let mut seen = Vec::new();
    let mut pages = 0;
    loop {
        let page = a.request(json!({"type": "get_changes_since", "last_sequence": after, "limit": 500})).await;
        pages += 1;
        assert!(page.to_string().len() <= 20_000 + 4_000, "a page stays near the budget");
        for event in page["events"].as_array().unwrap() {
            seen.push(event["sequence"].as_u64().unwrap());
        }
        after = page["latest_sequence"].as_u64().unwrap();
        if page["has_more"] != true {
            break;
        }
    }
    assert!(pages >= 5, "30 events of 3 KB cannot fit one 20 KB page ({pages} pages)");
    let expected: Vec<u64> = (1..=30).collect();
    assert_eq!(seen, expected, "every change once, in order");
    // The resume catch-up obeys the same budget.
    let mut b = server.connect().await;
    b.authenticate(&server.api_key, &server.secret, "pages@example.com", None, Some(0)).await;
    let mut resumed = Vec::new();
    loop {
        let page = b.recv_type("changes").await;
        for event in page["events"].as_array().unwrap() {
            resumed.push(event["sequence"].as_u64().unwrap());
        }
        if page["has_more"] != true {
            break;
        }
    }
    assert_eq!(resumed, expected);
}
