//! The usage page (`/admin/ui/`) in a real headless Chromium, driven over
//! the DevTools protocol (chromiumoxide): without a token it shows only the
//! prompt; once the token is typed in, the table's numbers and the chart
//! come from a known ledger. Skipped, saying why, when no Chromium is
//! installed (`make test` installs it).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use chromiumoxide::browser::{Browser, BrowserConfig};
use chromiumoxide::page::ScreenshotParams;
use chromiumoxide::Page;
use common::*;
use futures::StreamExt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

fn chromium() -> Option<PathBuf> {
    ["chromium", "chromium-browser", "google-chrome"]
        .iter()
        .flat_map(|name| {
            std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
                .map(move |dir| dir.join(name))
                .collect::<Vec<_>>()
        })
        .find(|p| p.is_file())
}

fn config(llm: &str, store: &str) -> ConfigBuilder {
    ConfigBuilder::new()
        .threads(1)
        .keys(&[BOB])
        .pool("llm", Pool::new(&[llm]))
        .route(Route::llm("chat", "/v1/chat/completions").roles(&["agent"]))
        .model(Model::new("support-fast", "llm", 0.15, 0.60, 100))
        .budget(Budget::user().tokens_per_day(500_000).usd_per_month(50.0))
        .store_path(store)
}

/// Today and the two days before, UTC, with rows for two tenants, three
/// users and two models. Returns (user, tenant, micro_usd, prompt, calls).
fn seed(path: &std::path::Path) -> Vec<(&'static str, &'static str, i64, i64, i64)> {
    create_ledger(path);
    let now_ms = unix_millis() as i64;
    let day_ms = 86_400_000;
    let today = now_ms - now_ms % day_ms;
    let conn = rusqlite::Connection::open(path).unwrap();
    let plan: [(&str, &str, &str, i64, i64, i64); 6] = [
        // user, tenant, model, day offset, micro_usd, prompt
        ("bob", "acme", "support-fast", 0, 1_250_000, 1000),
        ("bob", "acme", "support-smart", 1, 2_500_000, 2000),
        ("alice", "acme", "support-fast", 2, 500_000, 300),
        ("alice", "acme", "support-fast", 0, 250_000, 200),
        ("dora", "globex", "support-smart", 1, 4_000_000, 4000),
        ("dora", "globex", "support-smart", 0, 10, 5),
    ];
    for (n, (user, tenant, model, back, micro, prompt)) in plan.iter().enumerate() {
        conn.execute(
            "INSERT INTO usage (time_ms, request_id, user_id, tenant_id, key_id, route, model, upstream_model,
                prompt_tokens, completion_tokens, cached_tokens, reasoning_tokens, micro_usd, status, estimated)
             VALUES (?1, ?2, ?3, ?4, 'k', 'chat', ?5, ?5, ?6, 10, 0, 0, ?7, 200, 0)",
            rusqlite::params![today - back * day_ms + 1000 + n as i64, format!("seed-{n}"), user, tenant, model, prompt, micro],
        )
        .unwrap();
    }
    let mut per_user: Vec<(&str, &str, i64, i64, i64)> = Vec::new();
    for (user, tenant, _, _, micro, prompt) in plan {
        match per_user.iter_mut().find(|u| u.0 == user) {
            Some(u) => {
                u.2 += micro;
                u.3 += prompt;
                u.4 += 1;
            }
            None => per_user.push((user, tenant, micro, prompt, 1)),
        }
    }
    per_user.sort_by_key(|u| -u.2);
    per_user
}

/// Markup a page would run if it parsed conversation ids as HTML.
const HOSTILE_CONVERSATION: &str = "<img src=x onerror=\"window.pwned=1\">";

/// Names conversations on seeded rows: (tenant, conversation, micro-USD),
/// costliest first, as the "top conversations" table must list them.
fn seed_conversations(path: &std::path::Path) -> Vec<(&'static str, &'static str, i64)> {
    let conn = rusqlite::Connection::open(path).unwrap();
    for (request, conversation) in [
        ("seed-0", "ticket-7"),
        ("seed-3", "ticket-7"),
        ("seed-4", HOSTILE_CONVERSATION),
    ] {
        conn.execute(
            "UPDATE usage SET conversation_id = ?1 WHERE request_id = ?2",
            rusqlite::params![conversation, request],
        )
        .unwrap();
    }
    vec![
        ("globex", HOSTILE_CONVERSATION, 4_000_000),
        ("acme", "ticket-7", 1_500_000),
    ]
}

async fn eval<T: serde::de::DeserializeOwned>(page: &Page, js: &str) -> T {
    page.evaluate(js)
        .await
        .unwrap_or_else(|e| panic!("evaluate {js}: {e}"))
        .into_value()
        .unwrap_or_else(|e| panic!("value of {js}: {e}"))
}

/// Polls a JS condition: the page loads its data asynchronously.
async fn wait_true(page: &Page, js: &str) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while !eval::<bool>(page, js).await {
        assert!(Instant::now() < deadline, "timed out waiting for: {js}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn usd(micro: i64) -> String {
    format!("{}.{:06}", micro / 1_000_000, micro % 1_000_000)
}

#[test]
fn usage_page_asks_for_the_token_then_shows_table_and_chart() {
    let Some(chrome) = chromium() else {
        return skipped("no chromium on PATH (make test installs it: apt-get install chromium)");
    };
    let store_dir = tempfile::tempdir().unwrap();
    let store = store_dir.path().join("usage.db");
    let expected = seed(&store);
    let conversations = seed_conversations(&store);
    let llm = Backend::start();
    let gw = config(&llm.addr, &store.display().to_string()).start();
    // Bob's remaining budget from the live counters (restored from the
    // ledger); nothing changes them during the test.
    let usage = usage_of(&gw, "bob");
    let bob_left = usage["remaining"]["usd_month"]
        .as_str()
        .unwrap()
        .to_string();
    assert_ne!(bob_left, "50.000000", "bob spent today");
    // The blocking HTTP client above must not live inside the runtime.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(drive(
        &chrome,
        &gw.admin_url("/admin/ui/"),
        &expected,
        &conversations,
        &bob_left,
    ));
}

async fn drive(
    chrome: &std::path::Path,
    page_url: &str,
    expected: &[(&str, &str, i64, i64, i64)],
    conversations: &[(&str, &str, i64)],
    bob_left: &str,
) {
    let profile = tempfile::tempdir().unwrap();
    let browser_config = BrowserConfig::builder()
        .chrome_executable(chrome)
        .no_sandbox()
        .user_data_dir(profile.path())
        .window_size(1280, 900)
        // A loaded CI machine can take a while to start a browser.
        .launch_timeout(Duration::from_secs(90))
        .request_timeout(Duration::from_secs(60))
        .args([
            "disable-gpu",
            "disable-quic",
            "no-first-run",
            "disable-background-networking",
            "disable-component-update",
            "disable-sync",
        ])
        .build()
        .unwrap();
    let (mut browser, mut handler) = Browser::launch(browser_config)
        .await
        .unwrap_or_else(|e| panic!("launching {}: {e}", chrome.display()));
    let events = tokio::spawn(async move { while handler.next().await.is_some() {} });

    let page = browser.new_page(page_url).await.unwrap();
    page.wait_for_navigation().await.unwrap();
    // No token yet: only the prompt, and no data.
    wait_true(
        &page,
        "document.readyState === 'complete' && !!document.getElementById('token')",
    )
    .await;
    let login_shown: bool = eval(&page, "!document.getElementById('login').hidden").await;
    let app_hidden: bool = eval(&page, "document.getElementById('app').hidden").await;
    let rows: u64 = eval(
        &page,
        "document.querySelectorAll('#usage-table tbody tr').length",
    )
    .await;
    let bars: u64 = eval(&page, "document.querySelectorAll('#chart rect').length").await;
    assert!(login_shown && app_hidden, "the token prompt shows first");
    assert_eq!((rows, bars), (0, 0), "no data without a token");
    // The token never appears in the URL.
    let url: String = eval(&page, "location.href").await;
    assert!(!url.contains(ADMIN_TOKEN));

    // A wrong token is refused and the prompt comes back.
    let input = page.find_element("#token").await.unwrap();
    input.click().await.unwrap();
    input.type_str("not-the-token").await.unwrap();
    page.find_element("#token-submit")
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_true(
        &page,
        "document.getElementById('login-error').textContent.length > 0",
    )
    .await;
    let rows: u64 = eval(
        &page,
        "document.querySelectorAll('#usage-table tbody tr').length",
    )
    .await;
    assert_eq!(rows, 0);

    // The right token, typed in.
    let input = page.find_element("#token").await.unwrap();
    input.click().await.unwrap();
    input.type_str(ADMIN_TOKEN).await.unwrap();
    input.press_key("Enter").await.unwrap();
    wait_true(&page, "document.body.dataset.loaded === 'true'").await;

    let table: Vec<Vec<String>> = eval(
        &page,
        "[...document.querySelectorAll('#usage-table tbody tr')].map(tr => [...tr.cells].map(td => td.textContent))",
    )
    .await;
    assert_eq!(table.len(), expected.len(), "{table:?}");
    for (row, (user, tenant, micro, prompt, calls)) in table.iter().zip(expected) {
        assert_eq!(row[0], *tenant, "{row:?}");
        assert_eq!(row[1], *user, "sorted by spend: {table:?}");
        assert_eq!(row[2], usd(*micro));
        assert_eq!(row[3], prompt.to_string());
        assert_eq!(row[5], calls.to_string());
    }
    // Remaining budget from the live counters (restored from the ledger).
    let bob = table.iter().find(|r| r[1] == "bob").unwrap();
    assert_eq!(bob[6], bob_left);

    // Top conversations by cost; a client-chosen id is text, never markup.
    let top: Vec<Vec<String>> = eval(
        &page,
        "[...document.querySelectorAll('#conversation-table tbody tr')].map(tr => [...tr.cells].map(td => td.textContent))",
    )
    .await;
    let want: Vec<Vec<String>> = conversations
        .iter()
        .map(|(tenant, id, micro)| vec![tenant.to_string(), id.to_string(), usd(*micro)])
        .collect();
    let got: Vec<Vec<String>> = top.iter().map(|r| r[..3].to_vec()).collect();
    assert_eq!(got, want);
    let injected: bool = eval(
        &page,
        "!!document.querySelector('#conversation-table img') || window.pwned === 1",
    )
    .await;
    assert!(!injected, "a conversation id was parsed as HTML");

    // The chart: one bar segment per (day, model) with spend, heights in
    // proportion to the spend.
    let segments: Vec<(String, String, f64)> = eval(
        &page,
        "[...document.querySelectorAll('#chart svg rect.bar')].map(r => [r.dataset.day, r.dataset.model, parseFloat(r.dataset.usd)])",
    )
    .await;
    // Today: two models stacked; yesterday and the day before: one each.
    assert_eq!(segments.len(), 4, "{segments:?}");
    let total: f64 = segments.iter().map(|s| s.2).sum();
    let want_total: i64 = expected.iter().map(|u| u.2).sum();
    assert!((total - want_total as f64 / 1e6).abs() < 1e-6, "{total}");
    let legend: u64 = eval(
        &page,
        "document.querySelectorAll('#chart .legend span').length",
    )
    .await;
    assert_eq!(legend, 2);

    // The token lives in sessionStorage, never in the URL.
    let stored: String = eval(&page, "sessionStorage.getItem('tollgate-admin-token')").await;
    assert_eq!(stored, ADMIN_TOKEN);
    let url: String = eval(&page, "location.href").await;
    assert!(!url.contains(ADMIN_TOKEN));

    // The screenshot in the README.
    let png = page
        .screenshot(ScreenshotParams::builder().full_page(true).build())
        .await
        .unwrap();
    assert!(png.starts_with(b"\x89PNG"));
    if std::env::var_os("TOLLGATE_UPDATE_SCREENSHOT").is_some() {
        std::fs::write("conf/usage-page.png", &png).unwrap();
    }

    browser.close().await.ok();
    browser.wait().await.ok();
    events.abort();
}
