//! The status page (`GET /`) and its JSON (`GET /admin/mailboxes`): admin tokens only, totals,
//! a searchable and paged table of mailboxes with their queue depths, checked in a real
//! browser (Debian's `chromium`, headless). With `STATUS_PAGE_SCREENSHOT=FILE` the browser
//! test also saves a screenshot there (`scripts/status-page-screenshot` for the docs).

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use exchange_core::{Body, Exchange, Message, UserId};
use exchange_http::server::{HttpExchangeServer, ServerConfig, SpawnedServer, spawn_server};
use exchange_http::{HttpExchange, HttpOptions, RecvMode};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const PROMPT: Duration = Duration::from_secs(60);

const TOKENS: &str = r#"
[auth]
method = "token"
[auth.tokens.tok-admin]
client_id = "operator"
admin = true
[auth.tokens.tok-alice]
client_id = "alice"
"#;

async fn start() -> SpawnedServer {
    let config = ServerConfig::from_toml(&format!("port = 0\n{TOKENS}")).expect("test config");
    spawn_server(HttpExchangeServer::new(config).expect("server")).await.expect("start")
}

async fn alice(server: &SpawnedServer) -> HttpExchange {
    let options = HttpOptions::default().recv_mode(RecvMode::LongPoll).bearer_token("tok-alice");
    HttpExchange::connect_with(server.url(), options).await.expect("connect")
}

/// Status, headers (lowercase names) and body of one raw GET.
async fn get(url: &str, path: &str, headers: &[(&str, &str)]) -> (u16, String, String) {
    let address = url.strip_prefix("http://").expect("http url");
    let mut stream = tokio::net::TcpStream::connect(address).await.expect("connect");
    let mut head = format!("GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n");
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).await.expect("write");
    let mut bytes = Vec::new();
    tokio::time::timeout(PROMPT, stream.read_to_end(&mut bytes)).await.expect("answer in time").expect("read");
    let text = String::from_utf8_lossy(&bytes).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").expect("end of head");
    let status = head.split(' ').nth(1).and_then(|s| s.parse().ok()).expect("status");
    (status, head.to_ascii_lowercase(), body.to_owned())
}

async fn admin_json(url: &str, query: &str) -> Value {
    let (status, _, body) =
        get(url, &format!("/admin/mailboxes{query}"), &[("Authorization", "Bearer tok-admin")]).await;
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).expect("json")
}

/// Registers a named mailbox with `queued` messages waiting in it.
async fn probe(client: &HttpExchange, name: &str, queued: usize) -> UserId {
    let id = client.register_user(Some(name)).await.unwrap();
    for _ in 0..queued {
        client.send(Message::request(id.clone(), id.clone(), Body::PingRequest)).await.unwrap();
    }
    id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_admins_see_the_page() {
    let server = start().await;
    let (status, _, _) = get(server.url(), "/", &[("Authorization", "Bearer tok-alice")]).await;
    assert_eq!(status, 403, "a token without admin");
    let (status, _, _) = get(server.url(), "/admin/mailboxes", &[("Authorization", "Bearer tok-alice")]).await;
    assert_eq!(status, 403);
    let (status, head, _) = get(server.url(), "/", &[("Accept", "text/html")]).await;
    assert_eq!(status, 401);
    assert!(head.contains("www-authenticate: basic"), "a browser is asked for the token: {head}");
    // A browser's Basic credentials: the password is the token.
    let (status, _, body) = get(server.url(), "/", &[("Authorization", "Basic b3BlcmF0b3I6dG9rLWFkbWlu")]).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("Exchange status"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mailboxes_are_searched_and_paged() {
    let server = start().await;
    let client = alice(&server).await;
    let probe_id = probe(&client, "needle-<b>", 2).await;
    for i in 0..149 {
        client.register_user(Some(&format!("hay-{i}"))).await.unwrap();
    }
    let all = admin_json(server.url(), "").await;
    assert_eq!(all["totals"]["active_mailboxes"], 150);
    assert_eq!(all["totals"]["queued_messages"], 2);
    assert_eq!(all["mailboxes"]["matching"], 150);
    assert_eq!(all["mailboxes"]["rows"].as_array().unwrap().len(), 100, "first page");
    let first = &all["mailboxes"]["rows"][0];
    assert_eq!(first["id"], probe_id.uid().to_string(), "registration order");
    assert_eq!(first["name"], "needle-<b>");
    assert_eq!(first["queued"], 2);
    assert_eq!(first["role"], "user");
    let rest = admin_json(server.url(), "?offset=100").await;
    assert_eq!(rest["mailboxes"]["rows"].as_array().unwrap().len(), 50, "second page");
    let found = admin_json(server.url(), "?q=NEEDLE").await;
    assert_eq!(found["mailboxes"]["matching"], 1);
    let (_, _, page) = get(server.url(), "/?q=needle", &[("Authorization", "Bearer tok-admin")]).await;
    assert!(page.contains("needle-&lt;b&gt;") && !page.contains("needle-<b>"), "names are escaped");
    let (_, _, page) = get(server.url(), "/", &[("Authorization", "Bearer tok-admin")]).await;
    assert!(page.contains("next →"), "a link to the second page");
}

/// The browser: Debian's `chromium` (CI installs it; this test fails without it).
fn chromium() -> PathBuf {
    let candidates = ["chromium", "chromium-browser", "google-chrome"];
    for name in candidates {
        if let Ok(output) = Command::new("sh").args(["-c", &format!("command -v {name}")]).output() {
            let path = String::from_utf8_lossy(&output.stdout).trim().to_owned();
            if output.status.success() && !path.is_empty() {
                return PathBuf::from(path);
            }
        }
    }
    panic!("no chromium on PATH: install Debian's package (apt-get install -y chromium) to run the browser test");
}

fn browse(url: &str, profile: &std::path::Path, extra: &[String]) -> String {
    let output = Command::new(chromium())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--no-first-run",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(extra)
        .arg(url)
        .output()
        .expect("run chromium");
    assert!(output.status.success(), "chromium failed: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_sees_mailboxes_and_queue_depths() {
    let server = start().await;
    let client = alice(&server).await;
    probe(&client, "status-page-probe", 3).await;
    for name in ["planner", "simulation", "instrument"] {
        probe(&client, name, 1).await;
    }
    let address = server.url().strip_prefix("http://").unwrap().to_owned();
    let profile = tempfile::tempdir().unwrap();
    let url = format!("http://operator:tok-admin@{address}/");
    let dom = {
        let (url, profile) = (url.clone(), profile.path().to_owned());
        tokio::task::spawn_blocking(move || browse(&url, &profile, &["--dump-dom".to_owned()])).await.unwrap()
    };
    let row = dom
        .split("<tr>")
        .find(|row| row.contains("status-page-probe"))
        .unwrap_or_else(|| panic!("the probe's row in the page the browser rendered:\n{dom}"));
    assert!(row.contains("<td class=\"n queued\">3</td>"), "its queue depth: {row}");
    if let Ok(file) = std::env::var("STATUS_PAGE_SCREENSHOT") {
        let (url, profile) = (url.clone(), profile.path().to_owned());
        let args = [format!("--screenshot={file}"), "--window-size=1200,700".to_owned()];
        tokio::task::spawn_blocking(move || browse(&url, &profile, &args)).await.unwrap();
        assert!(std::fs::metadata(&file).is_ok_and(|m| m.len() > 0), "screenshot at {file}");
    }
}
