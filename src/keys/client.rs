//! `tollgate keys create|list|show|rotate|revoke`: the keys API from the
//! command line (DESIGN §2). The admin token comes from the environment
//! (`TOLLGATE_ADMIN_TOKEN`), never from an argument (which `ps` shows).

use crate::cli::KeysAction;
use serde_json::{json, Map, Value};
use std::time::Duration;

pub const TOKEN_ENV: &str = "TOLLGATE_ADMIN_TOKEN";
const TIMEOUT: Duration = Duration::from_secs(15);

struct Api {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl Api {
    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
        idempotency_key: Option<&str>,
    ) -> Result<(u16, Value), String> {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.token);
        if let Some(body) = body {
            req = req
                .header("content-type", "application/json")
                .body(body.to_string());
        }
        if let Some(k) = idempotency_key {
            req = req.header("idempotency-key", k);
        }
        let resp = req
            .send()
            .await
            .map_err(|e| format!("cannot reach the admin API at {}: {e}", self.base))?;
        let status = resp.status().as_u16();
        let text = resp
            .text()
            .await
            .map_err(|e| format!("reading the answer: {e}"))?;
        let value = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        if status >= 400 {
            let e = &value["error"];
            let field = e["field"]
                .as_str()
                .map(|f| format!(" (field {f})"))
                .unwrap_or_default();
            return Err(format!(
                "{status} {}: {}{field}",
                e["code"].as_str().unwrap_or("error"),
                e["message"].as_str().unwrap_or("")
            ));
        }
        Ok((status, value))
    }
}

/// Everything but RFC 3986's unreserved characters is escaped.
const SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

fn path_segment(id: &str) -> String {
    percent_encoding::utf8_percent_encode(id, SEGMENT).to_string()
}

fn create_body(action: &KeysAction) -> Value {
    let KeysAction::Create {
        user,
        tenant,
        roles,
        expires_at,
        models,
        requests_per_minute,
        tokens_per_day,
        usd_per_month,
        note,
        ..
    } = action
    else {
        return Value::Null;
    };
    let mut body = Map::new();
    body.insert("user".into(), json!(user));
    body.insert("roles".into(), json!(roles));
    if let Some(t) = tenant {
        body.insert("tenant".into(), json!(t));
    }
    if let Some(e) = expires_at {
        body.insert("expires_at".into(), json!(e));
    }
    if !models.is_empty() {
        body.insert("models".into(), json!(models));
    }
    if let Some(n) = requests_per_minute {
        body.insert("rate_limit".into(), json!({"requests_per_minute": n}));
    }
    if tokens_per_day.is_some() || usd_per_month.is_some() {
        let mut b = Map::new();
        if let Some(t) = tokens_per_day {
            b.insert("tokens_per_day".into(), json!(t));
        }
        if let Some(u) = usd_per_month {
            b.insert("usd_per_month".into(), json!(u));
        }
        body.insert("budgets".into(), Value::Object(b));
    }
    if let Some(n) = note {
        body.insert("note".into(), json!(n));
    }
    Value::Object(body)
}

/// One key per line, aligned columns.
pub fn table(keys: &[Value]) -> String {
    let header = [
        "ID",
        "USER",
        "TENANT",
        "ROLES",
        "STATE",
        "SOURCE",
        "EXPIRES",
        "LAST USED",
    ];
    let cell = |v: &Value| match v {
        Value::Null => "-".to_string(),
        Value::String(s) => s.clone(),
        Value::Array(items) => items
            .iter()
            .filter_map(Value::as_str)
            .collect::<Vec<_>>()
            .join(","),
        other => other.to_string(),
    };
    let rows: Vec<Vec<String>> = keys
        .iter()
        .map(|k| {
            [
                "id",
                "user",
                "tenant",
                "roles",
                "state",
                "source",
                "expires_at",
                "last_used_at",
            ]
            .iter()
            .map(|f| cell(&k[*f]))
            .collect()
        })
        .collect();
    let widths: Vec<usize> = (0..header.len())
        .map(|i| {
            rows.iter()
                .map(|r| r[i].chars().count())
                .chain(std::iter::once(header[i].len()))
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |cells: Vec<String>| {
        cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_string()
    };
    let mut out = vec![line(header.iter().map(|h| h.to_string()).collect())];
    out.extend(rows.into_iter().map(line));
    out.join("\n") + "\n"
}

async fn act(api: &Api, action: &KeysAction, as_json: bool) -> Result<String, String> {
    use reqwest::Method;
    let print = |v: &Value| -> String {
        if as_json {
            format!("{}\n", serde_json::to_string_pretty(v).unwrap_or_default())
        } else {
            table(std::slice::from_ref(v))
        }
    };
    let with_secret = |v: &Value| -> String {
        if as_json {
            print(v)
        } else {
            format!(
                "API key (shown once, give it to the client): {}\n\n{}",
                v["key"].as_str().unwrap_or(""),
                table(std::slice::from_ref(v))
            )
        }
    };
    match action {
        KeysAction::Create {
            idempotency_key, ..
        } => {
            let body = create_body(action);
            let (_, v) = api
                .send(
                    Method::POST,
                    "/admin/keys",
                    Some(&body),
                    idempotency_key.as_deref(),
                )
                .await?;
            Ok(with_secret(&v))
        }
        KeysAction::Rotate {
            id,
            grace_seconds,
            idempotency_key,
        } => {
            let body = json!({"grace_seconds": grace_seconds});
            let path = format!("/admin/keys/{}/rotate", path_segment(id));
            let (_, v) = api
                .send(Method::POST, &path, Some(&body), idempotency_key.as_deref())
                .await?;
            Ok(with_secret(&v))
        }
        KeysAction::Show { id } => {
            let path = format!("/admin/keys/{}", path_segment(id));
            let (_, v) = api.send(Method::GET, &path, None, None).await?;
            Ok(print(&v))
        }
        KeysAction::Revoke { id } => {
            let path = format!("/admin/keys/{}", path_segment(id));
            api.send(Method::DELETE, &path, None, None).await?;
            Ok(if as_json {
                format!("{}\n", json!({"id": id, "revoked": true}))
            } else {
                format!("revoked {id}\n")
            })
        }
        KeysAction::List { tenant, user } => {
            let mut keys = Vec::new();
            let mut cursor: Option<String> = None;
            loop {
                let mut query = vec![("limit".to_string(), "1000".to_string())];
                for (k, v) in [("tenant", tenant), ("user", user), ("cursor", &cursor)] {
                    if let Some(v) = v {
                        query.push((k.to_string(), path_segment(v)));
                    }
                }
                let q: Vec<String> = query.iter().map(|(k, v)| format!("{k}={v}")).collect();
                let (_, page) = api
                    .send(
                        Method::GET,
                        &format!("/admin/keys?{}", q.join("&")),
                        None,
                        None,
                    )
                    .await?;
                keys.extend(page["keys"].as_array().cloned().unwrap_or_default());
                match page["next_cursor"].as_str() {
                    Some(next) => cursor = Some(next.to_string()),
                    None => break,
                }
            }
            Ok(if as_json {
                format!(
                    "{}\n",
                    serde_json::to_string_pretty(&json!({"keys": keys})).unwrap_or_default()
                )
            } else {
                table(&keys)
            })
        }
    }
}

/// Runs one `tollgate keys` command; the error is printed by the caller.
pub fn run(action: &KeysAction, admin_url: &str, as_json: bool) -> Result<(), String> {
    let token =
        std::env::var(TOKEN_ENV).map_err(|_| format!("{TOKEN_ENV} must hold the admin token"))?;
    let http = reqwest::Client::builder()
        .timeout(TIMEOUT)
        .build()
        .map_err(|e| format!("http client: {e}"))?;
    let api = Api {
        http,
        base: admin_url.trim_end_matches('/').to_string(),
        token,
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("runtime: {e}"))?;
    let out = runtime.block_on(act(&api, action, as_json))?;
    use std::io::Write;
    std::io::stdout()
        .write_all(out.as_bytes())
        .map_err(|e| format!("writing the answer: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_aligns_columns_and_shows_no_secret() {
        let keys = [
            json!({"id": "key_1", "user": "dana", "tenant": "acme", "roles": ["agent", "bot"],
                   "state": "active", "source": "api", "expires_at": null, "last_used_at": null,
                   "key": "tg_secret"}),
            json!({"id": "bob-1", "user": "bob", "tenant": "acme", "roles": [], "state": "active",
                   "source": "config", "expires_at": "2030-01-01T00:00:00Z", "last_used_at": null}),
        ];
        let t = table(&keys);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(lines[0].starts_with("ID     USER  TENANT  ROLES"));
        assert!(lines[1].contains("agent,bot") && lines[1].contains("api"));
        assert!(!t.contains("tg_secret"));
    }
}
