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

/// The Chromium on PATH; `None`, saying the test is skipped, when there is
/// none.
fn chromium() -> Option<PathBuf> {
    let found = ["chromium", "chromium-browser", "google-chrome"]
        .iter()
        .flat_map(|name| {
            std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
                .map(move |dir| dir.join(name))
                .collect::<Vec<_>>()
        })
        .find(|p| p.is_file());
    if found.is_none() {
        skipped("no chromium on PATH (make test installs it: apt-get install chromium)");
    }
    found
}

/// A fresh usage store's path, in a directory that lives as long as the
/// `TempDir` returned with it.
fn usage_store() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("usage.db");
    (dir, store)
}

fn config(llm: &str, store: &std::path::Path) -> ConfigBuilder {
    ConfigBuilder::new()
        .threads(1)
        .keys(&[BOB])
        .pool("llm", Pool::new(&[llm]))
        .route(Route::llm("chat", "/v1/chat/completions").roles(&["agent"]))
        .model(Model::new("support-fast", "llm", 0.15, 0.60, 100))
        .budget(Budget::user().tokens_per_day(500_000).usd_per_month(50.0))
        .store_path(&store.display().to_string())
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

/// Runs a test's browser half on a runtime of its own: the blocking HTTP
/// client of its set-up must not live inside the runtime.
fn block_on<F: std::future::Future>(test: F) -> F::Output {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
        .block_on(test)
}

/// A headless Chromium with a throwaway profile, showing one page.
struct Session {
    browser: Browser,
    events: tokio::task::JoinHandle<()>,
    page: Page,
    _profile: tempfile::TempDir,
}

impl Session {
    /// Launches `chrome` in a 1280 × `height` window and loads `url`.
    async fn open(chrome: &std::path::Path, url: &str, height: u32) -> Session {
        let profile = tempfile::tempdir().unwrap();
        let browser_config = BrowserConfig::builder()
            .chrome_executable(chrome)
            .no_sandbox()
            .user_data_dir(profile.path())
            .window_size(1280, height)
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
        let (browser, mut handler) = Browser::launch(browser_config)
            .await
            .unwrap_or_else(|e| panic!("launching {}: {e}", chrome.display()));
        let events = tokio::spawn(async move { while handler.next().await.is_some() {} });
        let page = browser.new_page(url).await.unwrap();
        page.wait_for_navigation().await.unwrap();
        Session {
            browser,
            events,
            page,
            _profile: profile,
        }
    }

    async fn close(mut self) {
        self.browser.close().await.ok();
        self.browser.wait().await.ok();
        self.events.abort();
    }
}

#[test]
fn usage_page_asks_for_the_token_then_shows_table_and_chart() {
    let Some(chrome) = chromium() else {
        return;
    };
    let (_store_dir, store) = usage_store();
    let expected = seed(&store);
    let conversations = seed_conversations(&store);
    let llm = Backend::start();
    let gw = config(&llm.addr, &store).start();
    // Bob's remaining budget from the live counters (restored from the
    // ledger); nothing changes them during the test.
    let usage = usage_of(&gw, "bob");
    let bob_left = usage["remaining"]["usd_month"]
        .as_str()
        .unwrap()
        .to_string();
    assert_ne!(bob_left, "50.000000", "bob spent today");
    block_on(drive(
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
    let session = Session::open(chrome, page_url, 900).await;
    let page = &session.page;
    // No token yet: only the prompt, and no data.
    wait_true(
        page,
        "document.readyState === 'complete' && !!document.getElementById('token')",
    )
    .await;
    let login_shown: bool = eval(page, "!document.getElementById('login').hidden").await;
    let app_hidden: bool = eval(page, "document.getElementById('app').hidden").await;
    let rows: u64 = eval(
        page,
        "document.querySelectorAll('#usage-table tbody tr').length",
    )
    .await;
    let bars: u64 = eval(page, "document.querySelectorAll('#chart rect').length").await;
    assert!(login_shown && app_hidden, "the token prompt shows first");
    assert_eq!((rows, bars), (0, 0), "no data without a token");
    // The token never appears in the URL.
    let url: String = eval(page, "location.href").await;
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
        page,
        "document.getElementById('login-error').textContent.length > 0",
    )
    .await;
    let rows: u64 = eval(
        page,
        "document.querySelectorAll('#usage-table tbody tr').length",
    )
    .await;
    assert_eq!(rows, 0);

    // The right token, typed in.
    let input = page.find_element("#token").await.unwrap();
    input.click().await.unwrap();
    input.type_str(ADMIN_TOKEN).await.unwrap();
    input.press_key("Enter").await.unwrap();
    wait_true(page, "document.body.dataset.loaded === 'true'").await;

    let table: Vec<Vec<String>> = eval(
        page,
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
        page,
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
        page,
        "!!document.querySelector('#conversation-table img') || window.pwned === 1",
    )
    .await;
    assert!(!injected, "a conversation id was parsed as HTML");

    // The chart: one bar segment per (day, model) with spend, heights in
    // proportion to the spend.
    let segments: Vec<(String, String, f64)> = eval(
        page,
        "[...document.querySelectorAll('#chart svg rect.bar')].map(r => [r.dataset.day, r.dataset.model, parseFloat(r.dataset.usd)])",
    )
    .await;
    // Today: two models stacked; yesterday and the day before: one each.
    assert_eq!(segments.len(), 4, "{segments:?}");
    let total: f64 = segments.iter().map(|s| s.2).sum();
    let want_total: i64 = expected.iter().map(|u| u.2).sum();
    assert!((total - want_total as f64 / 1e6).abs() < 1e-6, "{total}");
    let legend: u64 = eval(
        page,
        "document.querySelectorAll('#chart .legend span').length",
    )
    .await;
    assert_eq!(legend, 2);

    // The token lives in sessionStorage, never in the URL.
    let stored: String = eval(page, "sessionStorage.getItem('tollgate-admin-token')").await;
    assert_eq!(stored, ADMIN_TOKEN);
    let url: String = eval(page, "location.href").await;
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

    session.close().await;
}

/// A tenant-bound admin token (acme) for the Keys view.
const ACME_TOKEN: &str = "acme-admin-token";

/// Status of an LLM call made with `secret` (blocking client, off the
/// browser's runtime).
async fn call_with(gw_url: String, secret: String) -> u16 {
    tokio::task::spawn_blocking(move || {
        client()
            .post(gw_url)
            .header("X-API-Key", secret)
            .json(&user_says("support-fast", "hello"))
            .send()
            .map(|r| r.status().as_u16())
            .unwrap_or(0)
    })
    .await
    .unwrap()
}

async fn click(page: &Page, selector: &str) {
    page.find_element(selector)
        .await
        .unwrap_or_else(|e| panic!("{selector}: {e}"))
        .click()
        .await
        .unwrap_or_else(|e| panic!("click {selector}: {e}"));
}

async fn type_into(page: &Page, selector: &str, text: &str) {
    let input = page
        .find_element(selector)
        .await
        .unwrap_or_else(|e| panic!("{selector}: {e}"));
    input.click().await.unwrap();
    input.type_str(text).await.unwrap();
}

/// The keys table as the page shows it: one (id, tenant, state, action
/// button texts) per row.
async fn key_rows(page: &Page) -> Vec<(String, String, String, Vec<String>)> {
    eval(
        page,
        "[...document.querySelectorAll('#keys-table tbody tr')].map(tr => [tr.cells[0].textContent, \
         tr.cells[2].textContent, tr.cells[5].textContent, \
         [...tr.querySelectorAll('button')].map(b => b.textContent)])",
    )
    .await
}

/// Logs in with `token` and opens the Keys view (real clicks and typing).
async fn open_keys_view(page: &Page, token: &str) {
    wait_true(page, "!document.getElementById('login').hidden").await;
    type_into(page, "#token", token).await;
    click(page, "#token-submit").await;
    wait_true(page, "!document.getElementById('views').hidden").await;
    eval::<bool>(page, "delete document.body.dataset.keysLoaded; true").await;
    click(page, "#show-keys").await;
    wait_true(page, "document.body.dataset.keysLoaded === 'true'").await;
}

#[test]
fn keys_view_creates_shows_the_secret_once_rotates_revokes_and_a_tenant_token_sees_its_tenant() {
    let Some(chrome) = chromium() else {
        return;
    };
    let (_store_dir, store) = usage_store();
    let llm = Backend::start();
    let gw = config(&llm.addr, &store)
        .admin_tokens(&[("acme-admin", ACME_TOKEN, "acme")])
        .start();
    // Another tenant's key, made through the API with the full token.
    let globex: serde_json::Value = client()
        .post(gw.admin_url("/admin/keys"))
        .bearer_auth(ADMIN_TOKEN)
        .json(&serde_json::json!({"user": "dora", "tenant": "globex", "roles": ["agent"]}))
        .send()
        .unwrap()
        .json()
        .unwrap();
    let globex_id = globex["id"].as_str().unwrap().to_string();
    block_on(drive_keys(
        &chrome,
        &gw.admin_url("/admin/ui/"),
        &gw.url("/v1/chat/completions"),
        &globex_id,
    ));
}

async fn drive_keys(chrome: &std::path::Path, page_url: &str, chat_url: &str, globex_id: &str) {
    let session = Session::open(chrome, page_url, 1400).await;
    let page = &session.page;

    // The full token sees every tenant's keys; the file's key cannot be
    // rotated or revoked from here.
    open_keys_view(page, ADMIN_TOKEN).await;
    let rows = key_rows(page).await;
    let bob = rows.iter().find(|r| r.0 == "bob-1").expect("bob-1 listed");
    assert!(bob.3.is_empty(), "a config key has no buttons: {bob:?}");
    let dora = rows.iter().find(|r| r.0 == globex_id).expect("globex key");
    assert_eq!(
        (dora.1.as_str(), &dora.3[..]),
        ("globex", &["Rotate".to_string(), "Revoke".to_string()][..])
    );
    // Controls carry words; every field of the create form has a label.
    let unnamed: Vec<String> = eval(
        page,
        "[...document.querySelectorAll('#keys-view button')].filter(b => \
         !(b.getAttribute('aria-label') || b.textContent).trim()).map(b => b.outerHTML)",
    )
    .await;
    assert!(unnamed.is_empty(), "{unnamed:?}");
    let labels: Vec<String> = eval(
        page,
        "[...document.querySelectorAll('#key-create input')].map(i => i.labels[0].textContent)",
    )
    .await;
    assert_eq!(
        labels,
        ["User", "Tenant", "Roles", "Models", "Expiry", "Note"]
    );
    let named: String = eval(
        page,
        &format!("document.querySelector('#keys-table button[data-key=\"{globex_id}\"]').getAttribute('aria-label')"),
    )
    .await;
    assert_eq!(named, format!("Rotate key {globex_id}"));

    // Create: the secret is shown once, in the panel, and works at once.
    type_into(page, "#new-user", "erin").await;
    type_into(page, "#new-tenant", "acme").await;
    type_into(page, "#new-roles", "agent").await;
    type_into(page, "#new-models", "support-fast").await;
    type_into(page, "#new-note", "support bot <b>7</b>").await;
    click(page, "#create-submit").await;
    wait_true(page, "!document.getElementById('secret-panel').hidden").await;
    let secret: String = eval(page, "document.getElementById('secret-value').value").await;
    let erin: String = eval(page, "document.getElementById('secret-key-id').textContent").await;
    assert!(secret.starts_with("tg_"), "{secret}");
    wait_true(
        page,
        &format!("[...document.querySelectorAll('#keys-table tbody tr')].some(tr => tr.dataset.key === '{erin}')"),
    )
    .await;
    let row: Vec<String> = eval(
        page,
        &format!("[...document.querySelector('#keys-table tr[data-key=\"{erin}\"]').cells].map(c => c.textContent)"),
    )
    .await;
    assert_eq!(
        &row[1..5],
        ["erin", "acme", "agent", "support-fast"],
        "{row:?}"
    );
    assert_eq!(row[9], "support bot <b>7</b>", "a note is text");
    assert_eq!(call_with(chat_url.to_string(), secret.clone()).await, 200);
    // Copy: a word to click, and an answer a screen reader announces.
    click(page, "#secret-copy").await;
    wait_true(
        page,
        "document.getElementById('secret-copied').textContent.length > 0",
    )
    .await;
    // Done: the secret leaves the page; the listing never had it.
    click(page, "#secret-done").await;
    let leaked: bool = eval(
        page,
        &format!(
            "document.documentElement.outerHTML.includes('{secret}') || \
             document.getElementById('secret-value').value !== '' || \
             JSON.stringify(sessionStorage).includes('{secret}') || \
             JSON.stringify(localStorage).includes('{secret}')"
        ),
    )
    .await;
    assert!(!leaked, "the secret stayed in the page");
    assert!(eval::<bool>(page, "document.getElementById('secret-panel').hidden").await);

    // Rotate with no grace: a new secret, shown once; the old one is refused.
    click(
        page,
        &format!("#keys-table button[aria-label='Rotate key {erin}']"),
    )
    .await;
    wait_true(page, "document.getElementById('rotate-dialog').open").await;
    let grace = page.find_element("#rotate-grace").await.unwrap();
    grace.click().await.unwrap();
    eval::<bool>(
        page,
        "document.getElementById('rotate-grace').value = ''; true",
    )
    .await;
    grace.type_str("0").await.unwrap();
    click(page, "#rotate-confirm").await;
    wait_true(page, "!document.getElementById('secret-panel').hidden").await;
    let rotated: String = eval(page, "document.getElementById('secret-value').value").await;
    assert!(rotated.starts_with("tg_") && rotated != secret);
    assert_eq!(call_with(chat_url.to_string(), rotated.clone()).await, 200);
    let deadline = Instant::now() + Duration::from_secs(5);
    while call_with(chat_url.to_string(), secret.clone()).await != 401 {
        assert!(Instant::now() < deadline, "the old secret still works");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    click(page, "#secret-done").await;

    // Revoke asks first: Cancel keeps the key, Revoke removes it.
    let revoke = format!("#keys-table button[aria-label='Revoke key {erin}']");
    click(page, &revoke).await;
    wait_true(page, "document.getElementById('revoke-dialog').open").await;
    let asked: String = eval(page, "document.getElementById('revoke-title').textContent").await;
    assert_eq!(asked, format!("Revoke key {erin}?"));
    click(page, "#revoke-cancel").await;
    wait_true(page, "!document.getElementById('revoke-dialog').open").await;
    assert!(key_rows(page).await.iter().any(|r| r.0 == erin));
    assert_eq!(call_with(chat_url.to_string(), rotated.clone()).await, 200);
    click(page, &revoke).await;
    wait_true(page, "document.getElementById('revoke-dialog').open").await;
    click(page, "#revoke-confirm").await;
    wait_true(
        page,
        &format!("![...document.querySelectorAll('#keys-table tbody tr')].some(tr => tr.dataset.key === '{erin}')"),
    )
    .await;
    assert_eq!(call_with(chat_url.to_string(), rotated.clone()).await, 401);
    // Still there as revoked, for whoever asks to see revoked keys.
    click(page, "#filter-revoked").await;
    wait_true(
        page,
        &format!("[...document.querySelectorAll('#keys-table tbody tr')].some(tr => tr.dataset.key === '{erin}' && tr.cells[5].textContent === 'revoked' && tr.querySelectorAll('button').length === 0)"),
    )
    .await;

    // A tenant token: its tenant's keys only, and the page does not break
    // on what it may not see.
    click(page, "#logout").await;
    open_keys_view(page, ACME_TOKEN).await;
    let rows = key_rows(page).await;
    assert!(!rows.is_empty());
    assert!(rows.iter().all(|r| r.1 == "acme"), "{rows:?}");
    assert!(!rows.iter().any(|r| r.0 == globex_id));
    type_into(page, "#filter-tenant", "globex").await;
    eval::<bool>(page, "delete document.body.dataset.keysLoaded; true").await;
    click(page, "#filter-submit").await;
    wait_true(page, "document.body.dataset.keysLoaded === 'true' || document.getElementById('keys-status').textContent.startsWith('No keys')").await;
    assert!(key_rows(page).await.is_empty());
    let error: String = eval(page, "document.getElementById('keys-error').textContent").await;
    assert_eq!(error, "");
    // A key it creates lands in its tenant (the Tenant field left empty).
    eval::<bool>(
        page,
        "document.getElementById('filter-tenant').value = ''; true",
    )
    .await;
    type_into(page, "#new-user", "finn").await;
    type_into(page, "#new-roles", "agent").await;
    click(page, "#create-submit").await;
    wait_true(page, "!document.getElementById('secret-panel').hidden").await;
    let finn: String = eval(page, "document.getElementById('secret-key-id').textContent").await;
    wait_true(
        page,
        &format!("[...document.querySelectorAll('#keys-table tbody tr')].some(tr => tr.dataset.key === '{finn}' && tr.cells[2].textContent === 'acme')"),
    )
    .await;
    // Its usage view loads too (its tenant's rows only).
    click(page, "#show-usage").await;
    wait_true(page, "document.body.dataset.loaded === 'true'").await;
    assert!(eval::<bool>(page, "document.getElementById('secret-panel').hidden").await);

    session.close().await;
}
