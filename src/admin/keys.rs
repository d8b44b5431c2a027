//! `/admin/keys` (DESIGN §5): routing, the request body (bounded), the
//! answers and their error codes, and the audit line of every key
//! operation. The operations themselves are `keys::service`.

use super::{admin_error, json_reply, query_pairs, reply, AdminApp};
use crate::keys::service::{Answer, Caller, IdempotencyRequest, KeysCall, KeysError};
use crate::sys::clock;
use http::{Response, StatusCode};
use pingora::protocols::http::ServerSession;
use serde_json::json;

/// Largest request body of the keys API.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

enum BodyError {
    TooLarge,
    Read,
}

async fn read_body(session: &mut ServerSession) -> Result<Vec<u8>, BodyError> {
    let mut body = Vec::new();
    loop {
        match session.read_request_body().await {
            Ok(Some(chunk)) => {
                if body.len() + chunk.len() > MAX_BODY_BYTES {
                    return Err(BodyError::TooLarge);
                }
                body.extend_from_slice(&chunk);
            }
            Ok(None) => return Ok(body),
            Err(_) => return Err(BodyError::Read),
        }
    }
}

fn error_reply(e: &KeysError) -> Response<Vec<u8>> {
    let message = e.to_string();
    let (status, code) = status_and_code(e);
    match e {
        KeysError::BadRequest(bad) => super::json_reply(
            status,
            &json!({"error": {"type": "admin_error", "code": code,
                              "message": message, "field": bad.field}}),
        ),
        _ => admin_error(status, code, &message),
    }
}

/// The status and `error.code` of a failed operation (the answer's, and
/// the audit line's).
fn status_and_code(e: &KeysError) -> (StatusCode, &'static str) {
    match e {
        KeysError::BadRequest(_) => (StatusCode::BAD_REQUEST, "invalid_request"),
        KeysError::NotFound => (StatusCode::NOT_FOUND, "not_found"),
        KeysError::ManagedByConfig(_) => (StatusCode::CONFLICT, "key_managed_by_config"),
        KeysError::SharedLedgerRequired => (StatusCode::CONFLICT, "shared_ledger_required"),
        KeysError::Revoked => (StatusCode::CONFLICT, "key_revoked"),
        KeysError::RoleNotGrantable(_) => (StatusCode::FORBIDDEN, "forbidden"),
        KeysError::IdempotencyReused => {
            (StatusCode::UNPROCESSABLE_ENTITY, "idempotency_key_reused")
        }
        KeysError::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "store_unavailable"),
        KeysError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
    }
}

fn code(e: &KeysError) -> &'static str {
    status_and_code(e).1
}

/// Which operation a request is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Endpoint {
    List,
    Create,
    Get,
    Patch,
    Revoke,
    Rotate,
}

/// The operation and the key id (percent-decoded: an id may hold any
/// character but a comma or a control character).
fn endpoint(method: &str, path: &str) -> Option<(Endpoint, String)> {
    let rest = path.strip_prefix("/admin/keys")?;
    let decoded: Vec<String> = rest
        .split('/')
        .skip(1)
        .map(|s| {
            percent_encoding::percent_decode_str(s)
                .decode_utf8()
                .map(|c| c.into_owned())
        })
        .collect::<Result<_, _>>()
        .ok()?;
    let segments: Vec<&str> = decoded.iter().map(String::as_str).collect();
    let kind = match (method, segments.as_slice()) {
        ("GET", []) => Endpoint::List,
        ("POST", []) => Endpoint::Create,
        ("GET", [id]) if !id.is_empty() => Endpoint::Get,
        ("PATCH", [id]) if !id.is_empty() => Endpoint::Patch,
        ("DELETE", [id]) if !id.is_empty() => Endpoint::Revoke,
        ("POST", [id, "rotate"]) if !id.is_empty() => Endpoint::Rotate,
        _ => return None,
    };
    Some((kind, decoded.into_iter().next().unwrap_or_default()))
}

impl AdminApp {
    /// One line per key operation: who (the admin token's id), what, which
    /// key and tenant, and how it ended. Never a secret or digest.
    fn audit_key(
        &self,
        caller: &Caller,
        operation: &str,
        key_id: &str,
        tenant: &str,
        result: &str,
    ) {
        self.state.logs.audit(|| {
            json!({
                "log": "audit",
                "time": crate::observe::request::now_rfc3339(),
                "event": "admin_key",
                "admin": caller.admin_id,
                "operation": operation,
                "key_id": key_id,
                "tenant": tenant,
                "result": result,
            })
        });
    }

    pub(super) async fn keys(
        &self,
        session: &mut ServerSession,
        caller: &Caller,
        method: &str,
        path: &str,
        query: Option<&str>,
    ) -> Response<Vec<u8>> {
        let Some((endpoint, id)) = endpoint(method, path) else {
            return admin_error(StatusCode::NOT_FOUND, "not_found", "unknown admin endpoint");
        };
        let body = match endpoint {
            Endpoint::Create | Endpoint::Patch | Endpoint::Rotate => {
                match read_body(session).await {
                    Ok(b) => b,
                    Err(BodyError::TooLarge) => {
                        return admin_error(
                            StatusCode::PAYLOAD_TOO_LARGE,
                            "body_too_large",
                            &format!("the body is over {MAX_BODY_BYTES} bytes"),
                        )
                    }
                    Err(BodyError::Read) => {
                        return admin_error(
                            StatusCode::BAD_REQUEST,
                            "invalid_request",
                            "body: unreadable",
                        )
                    }
                }
            }
            _ => Vec::new(),
        };
        let idempotency_key = session
            .get_header("idempotency-key")
            .map(|v| v.to_str().unwrap_or("\u{0}").to_string());
        let idem = IdempotencyRequest {
            header: idempotency_key.as_deref(),
            body: &body,
        };
        let snapshot = self.state.snapshot.load_full();
        let config = snapshot.auth.keys();
        let keys = &self.state.keys;
        let now = clock::unix_secs();
        let call = KeysCall {
            caller,
            config,
            now_unix: now,
        };
        let id = id.as_str();
        // A refusal's audit line names the key asked for and the caller's
        // tenant (the key's own is not confirmed to a tenant's token).
        let refused = |operation: &str, id: &str, e: KeysError| {
            self.audit_key(
                caller,
                operation,
                id,
                caller.tenant.as_deref().unwrap_or(""),
                code(&e),
            );
            error_reply(&e)
        };
        let answered = |r: Result<Answer, KeysError>, operation: &str, id: &str| match r {
            Ok(a) => {
                let result = if a.replayed { "replayed" } else { "ok" };
                self.audit_key(caller, operation, &a.key_id, &a.tenant, result);
                let status = StatusCode::from_u16(a.status).unwrap_or(StatusCode::OK);
                reply(status, "application/json", a.body)
            }
            Err(e) => refused(operation, id, e),
        };
        match endpoint {
            Endpoint::List => match keys.list(&query_pairs(query), &call).await {
                Ok(v) => json_reply(StatusCode::OK, &v),
                Err(e) => error_reply(&e),
            },
            Endpoint::Get => match keys.get(id, &call).await {
                Ok(v) => json_reply(StatusCode::OK, &v),
                Err(e) => error_reply(&e),
            },
            Endpoint::Create => answered(keys.create(&body, idem, &call).await, "create", ""),
            Endpoint::Rotate => answered(keys.rotate(id, &body, idem, &call).await, "rotate", id),
            Endpoint::Patch => match keys.patch(id, &body, &call).await {
                Ok(k) => {
                    self.audit_key(caller, "update", &k.id, &k.tenant, "ok");
                    json_reply(StatusCode::OK, &k.to_json(now))
                }
                Err(e) => refused("update", id, e),
            },
            Endpoint::Revoke => match keys.revoke(id, &call).await {
                Ok(k) => {
                    self.audit_key(caller, "revoke", &k.id, &k.tenant, "ok");
                    reply(StatusCode::NO_CONTENT, "application/json", Vec::new())
                }
                Err(e) => refused("revoke", id, e),
            },
        }
    }
}
