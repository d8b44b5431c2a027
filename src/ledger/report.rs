//! Usage report from the SQLite ledger (DESIGN §5 `/admin/usage/report`,
//! §2 `tollgate usage`): calls, tokens and spend between two UTC days,
//! grouped by any of tenant, user, key, model and day.
//!
//! It reads the ledger's `usage_daily` rollup (daily totals per tenant,
//! user, key, model and API, kept by a trigger in SQLite and by the batch
//! insert in PostgreSQL), so its cost grows with the number of groups, not
//! with the number of calls. Days are UTC day numbers (`time_ms / 86400000`), formatted here.

use crate::llm::pricing::usd_string;
use rusqlite::{Connection, OpenFlags};
use serde_json::{json, Map, Value};
use std::path::Path;
use std::time::Duration;
use time::macros::format_description;
use time::{Date, OffsetDateTime};

const MS_PER_DAY: i64 = 86_400_000;
const DATE_FORMAT: &[time::format_description::FormatItem<'static>] =
    format_description!("[year]-[month]-[day]");

/// A key the rows can be grouped by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupKey {
    Tenant,
    User,
    Key,
    Model,
    Day,
    /// The call's conversation id (attribution): read from the calls
    /// themselves, not the rollup (one row per conversation and day
    /// would make the rollup as large as the calls).
    Conversation,
}

impl GroupKey {
    pub fn parse(name: &str) -> Option<GroupKey> {
        match name {
            "tenant" => Some(GroupKey::Tenant),
            "user" => Some(GroupKey::User),
            "key" => Some(GroupKey::Key),
            "model" => Some(GroupKey::Model),
            "day" => Some(GroupKey::Day),
            "conversation" => Some(GroupKey::Conversation),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            GroupKey::Tenant => "tenant",
            GroupKey::User => "user",
            GroupKey::Key => "key",
            GroupKey::Model => "model",
            GroupKey::Day => "day",
            GroupKey::Conversation => "conversation",
        }
    }

    fn column(self) -> String {
        match self {
            GroupKey::Tenant => "tenant_id".into(),
            GroupKey::User => "user_id".into(),
            GroupKey::Key => "key_id".into(),
            GroupKey::Model => "model".into(),
            GroupKey::Day => "day".into(),
            GroupKey::Conversation => "conversation_id".into(),
        }
    }
}

/// The answer format of the admin endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Json,
    Csv,
}

/// A bad parameter: the 400 names it.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("parameter {param}: {message}")]
    InvalidParameter {
        param: &'static str,
        message: String,
    },
    #[error("unknown parameter {0:?} (from, to, group_by, tenant, user, format)")]
    UnknownParameter(String),
    #[error("ledger: {0}")]
    Ledger(#[from] rusqlite::Error),
    #[error("shared ledger: {0}")]
    Shared(#[from] super::postgres::PgError),
    #[error("report task failed: {0}")]
    Task(String),
    #[error("CSV: {0}")]
    Csv(#[from] csv::Error),
}

fn invalid(param: &'static str, message: impl Into<String>) -> ReportError {
    ReportError::InvalidParameter {
        param,
        message: message.into(),
    }
}

/// What to report: UTC days `from..=to`, grouped by `group_by` (in that
/// order, possibly none: one total row), optionally for one tenant/user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReportQuery {
    pub from: Date,
    pub to: Date,
    pub group_by: Vec<GroupKey>,
    pub tenant: Option<String>,
    pub user: Option<String>,
}

pub fn parse_date(param: &'static str, value: &str) -> Result<Date, ReportError> {
    Date::parse(value, DATE_FORMAT).map_err(|_| invalid(param, "expected a date YYYY-MM-DD"))
}

pub fn parse_group_by(value: &str) -> Result<Vec<GroupKey>, ReportError> {
    let mut keys = Vec::new();
    for name in value.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        let key = GroupKey::parse(name).ok_or_else(|| {
            invalid(
                "group_by",
                format!("unknown key {name:?} (tenant, user, key, model, day, conversation)"),
            )
        })?;
        if keys.contains(&key) {
            return Err(invalid("group_by", format!("{name} given twice")));
        }
        keys.push(key);
    }
    Ok(keys)
}

impl ReportQuery {
    pub fn new(
        from: Date,
        to: Date,
        group_by: Vec<GroupKey>,
        tenant: Option<String>,
        user: Option<String>,
    ) -> Result<ReportQuery, ReportError> {
        if to < from {
            return Err(invalid("to", "is before from"));
        }
        Ok(ReportQuery {
            from,
            to,
            group_by,
            tenant,
            user,
        })
    }

    /// Parses a decoded query string (admin endpoint). Unknown parameters
    /// are refused, so a typo never silently widens the report.
    pub fn from_pairs(pairs: &[(String, String)]) -> Result<(ReportQuery, Format), ReportError> {
        let mut from = None;
        let mut to = None;
        let mut group_by = Vec::new();
        let mut tenant = None;
        let mut user = None;
        let mut format = Format::Json;
        for (name, value) in pairs {
            match name.as_str() {
                "from" => from = Some(parse_date("from", value)?),
                "to" => to = Some(parse_date("to", value)?),
                "group_by" => group_by = parse_group_by(value)?,
                "tenant" => tenant = Some(value.clone()),
                "user" => user = Some(value.clone()),
                "format" => {
                    format = match value.as_str() {
                        "json" => Format::Json,
                        "csv" => Format::Csv,
                        _ => return Err(invalid("format", "expected json or csv")),
                    }
                }
                _ => return Err(ReportError::UnknownParameter(name.clone())),
            }
        }
        let from = from.ok_or_else(|| invalid("from", "is required (YYYY-MM-DD)"))?;
        let to = to.ok_or_else(|| invalid("to", "is required (YYYY-MM-DD)"))?;
        Ok((ReportQuery::new(from, to, group_by, tenant, user)?, format))
    }

    /// `[start, end)` in unix milliseconds: both days inclusive.
    fn bounds_ms(&self) -> (i64, i64) {
        let start = |d: Date| OffsetDateTime::new_utc(d, time::Time::MIDNIGHT).unix_timestamp();
        let from = start(self.from) * 1000;
        let to = start(self.to) * 1000 + MS_PER_DAY;
        (from, to)
    }

    /// The rollup query; placeholders `{mark}1`, `{mark}2`… (`?` for
    /// SQLite, `$` for PostgreSQL), bound in the order of [`Self::params`].
    /// Sums are cast to BIGINT: PostgreSQL's SUM of a BIGINT is NUMERIC.
    fn sql(&self, mark: char) -> String {
        let keys: Vec<String> = self.group_by.iter().map(|k| k.column()).collect();
        let mut select = keys.clone();
        select.extend(
            [
                "calls",
                "prompt_tokens",
                "completion_tokens",
                "cached_tokens",
                "micro_usd",
                "estimated_calls",
            ]
            .map(|c| format!("CAST(SUM({c}) AS BIGINT)")),
        );
        let mut sql = format!(
            "SELECT {} FROM {} WHERE day >= {mark}1 AND day < {mark}2",
            select.join(", "),
            self.source(mark)
        );
        let mut next = 3;
        if self.tenant.is_some() {
            sql.push_str(&format!(" AND tenant_id = {mark}{next}"));
            next += 1;
        }
        if self.user.is_some() {
            sql.push_str(&format!(" AND user_id = {mark}{next}"));
        }
        if !keys.is_empty() {
            sql.push_str(&format!(" GROUP BY {}", keys.join(", ")));
        }
        // Days in order, then the biggest spenders first.
        let mut order = Vec::new();
        if let Some(i) = self.group_by.iter().position(|k| *k == GroupKey::Day) {
            order.push(format!("{} ASC", i + 1));
        }
        order.push(format!("{} DESC", keys.len() + 5));
        order.extend((1..=keys.len()).map(|i| format!("{i} ASC")));
        sql.push_str(&format!(" ORDER BY {}", order.join(", ")));
        sql
    }

    /// What the report sums: the daily rollup, or with a conversation
    /// among the keys the calls of those days (an index range on time)
    /// shaped as the rollup's columns.
    fn source(&self, mark: char) -> String {
        if !self.group_by.contains(&GroupKey::Conversation) {
            return "usage_daily".into();
        }
        format!(
            "(SELECT time_ms / {MS_PER_DAY} AS day, COALESCE(tenant_id, '') AS tenant_id,
                COALESCE(user_id, '') AS user_id, model,
                COALESCE(conversation_id, '') AS conversation_id, 1 AS calls,
                prompt_tokens, completion_tokens, cached_tokens, micro_usd,
                CAST(estimated AS INTEGER) AS estimated_calls
              FROM usage WHERE time_ms >= CAST({mark}1 AS BIGINT) * {MS_PER_DAY}
                AND time_ms < CAST({mark}2 AS BIGINT) * {MS_PER_DAY}) AS calls_by_day"
        )
    }

    /// The UTC day numbers `[from, to)` of the rollup.
    fn days(&self) -> (i64, i64) {
        let (from_ms, to_ms) = self.bounds_ms();
        (from_ms / MS_PER_DAY, to_ms / MS_PER_DAY)
    }

    /// Runs the report on a SQLite ledger connection.
    pub fn run(&self, conn: &Connection) -> Result<Report, ReportError> {
        let (from_day, to_day) = self.days();
        let mut stmt = conn.prepare(&self.sql('?'))?;
        let mut params: Vec<&dyn rusqlite::ToSql> = vec![&from_day, &to_day];
        params.extend(self.tenant.as_ref().map(|t| t as &dyn rusqlite::ToSql));
        params.extend(self.user.as_ref().map(|u| u as &dyn rusqlite::ToSql));
        let n = self.group_by.len();
        let mut rows = Vec::new();
        let mut raw = stmt.query(params.as_slice())?;
        while let Some(r) = raw.next()? {
            let mut keys = Vec::with_capacity(n);
            for (i, key) in self.group_by.iter().enumerate() {
                let value = match key {
                    GroupKey::Day => day_string(r.get::<_, i64>(i)?),
                    _ => r.get::<_, Option<String>>(i)?.unwrap_or_default(),
                };
                keys.push(value);
            }
            let totals = ReportRow::totals(|i| r.get::<_, Option<i64>>(n + i))?;
            rows.push(ReportRow::new(keys, totals));
        }
        Ok(Report {
            query: self.clone(),
            rows,
        })
    }

    /// Runs the report on the shared ledger (PostgreSQL).
    pub async fn run_shared(&self, client: &tokio_postgres::Client) -> Result<Report, ReportError> {
        let (from_day, to_day) = self.days();
        let mut params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = vec![&from_day, &to_day];
        params.extend(
            self.tenant
                .as_ref()
                .map(|t| t as &(dyn tokio_postgres::types::ToSql + Sync)),
        );
        params.extend(
            self.user
                .as_ref()
                .map(|u| u as &(dyn tokio_postgres::types::ToSql + Sync)),
        );
        let found = client
            .query(&self.sql('$'), &params)
            .await
            .map_err(super::postgres::PgError::from)?;
        let n = self.group_by.len();
        let mut rows = Vec::with_capacity(found.len());
        for r in found {
            let keys = self
                .group_by
                .iter()
                .enumerate()
                .map(|(i, key)| match key {
                    GroupKey::Day => day_string(r.get::<_, i64>(i)),
                    _ => r.get::<_, Option<String>>(i).unwrap_or_default(),
                })
                .collect();
            let Ok(totals) = ReportRow::totals(|i| {
                Ok::<_, std::convert::Infallible>(r.get::<_, Option<i64>>(n + i))
            });
            rows.push(ReportRow::new(keys, totals));
        }
        Ok(Report {
            query: self.clone(),
            rows,
        })
    }
}

fn day_string(day: i64) -> String {
    OffsetDateTime::from_unix_timestamp(day * 86_400)
        .ok()
        .and_then(|t| t.date().format(DATE_FORMAT).ok())
        .unwrap_or_default()
}

pub fn date_string(date: Date) -> String {
    date.format(DATE_FORMAT).unwrap_or_default()
}

/// One group's totals; `keys` follow the query's `group_by`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReportRow {
    pub keys: Vec<String>,
    pub calls: u64,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub cached_tokens: u64,
    pub micro_usd: u64,
    pub estimated_calls: u64,
}

impl ReportRow {
    /// The six totals of a result row, read by column offset; negative or
    /// NULL sums count as 0.
    fn totals<E>(mut column: impl FnMut(usize) -> Result<Option<i64>, E>) -> Result<[u64; 6], E> {
        let mut totals = [0u64; 6];
        for (i, total) in totals.iter_mut().enumerate() {
            *total = column(i)?.unwrap_or(0).max(0) as u64;
        }
        Ok(totals)
    }

    /// `totals`: calls, prompt, completion and cached tokens, micro-USD,
    /// estimated calls (the query's column order).
    fn new(keys: Vec<String>, totals: [u64; 6]) -> ReportRow {
        let [calls, prompt_tokens, completion_tokens, cached_tokens, micro_usd, estimated_calls] =
            totals;
        ReportRow {
            keys,
            calls,
            prompt_tokens,
            completion_tokens,
            cached_tokens,
            micro_usd,
            estimated_calls,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    pub query: ReportQuery,
    pub rows: Vec<ReportRow>,
}

const VALUE_COLUMNS: [&str; 6] = [
    "calls",
    "prompt_tokens",
    "completion_tokens",
    "cached_tokens",
    "usd",
    "estimated_calls",
];

impl Report {
    pub fn to_json(&self) -> Value {
        let rows: Vec<Value> = self
            .rows
            .iter()
            .map(|row| {
                let mut obj = Map::new();
                for (key, value) in self.query.group_by.iter().zip(&row.keys) {
                    obj.insert(key.name().into(), Value::String(value.clone()));
                }
                obj.insert("calls".into(), row.calls.into());
                obj.insert("prompt_tokens".into(), row.prompt_tokens.into());
                obj.insert("completion_tokens".into(), row.completion_tokens.into());
                obj.insert("cached_tokens".into(), row.cached_tokens.into());
                obj.insert("usd".into(), usd_string(row.micro_usd).into());
                obj.insert("estimated_calls".into(), row.estimated_calls.into());
                Value::Object(obj)
            })
            .collect();
        json!({
            "from": date_string(self.query.from),
            "to": date_string(self.query.to),
            "group_by": self.query.group_by.iter().map(|k| k.name()).collect::<Vec<_>>(),
            "rows": rows,
        })
    }

    /// RFC 4180 CSV (CRLF line ends, quoting) with a header row: the group keys, then the totals.
    pub fn to_csv(&self) -> Result<Vec<u8>, ReportError> {
        let mut out = csv::WriterBuilder::new()
            .terminator(csv::Terminator::CRLF)
            .from_writer(Vec::new());
        let header: Vec<&str> = self
            .query
            .group_by
            .iter()
            .map(|k| k.name())
            .chain(VALUE_COLUMNS)
            .collect();
        out.write_record(&header)?;
        for row in &self.rows {
            let values = [
                row.calls.to_string(),
                row.prompt_tokens.to_string(),
                row.completion_tokens.to_string(),
                row.cached_tokens.to_string(),
                usd_string(row.micro_usd),
                row.estimated_calls.to_string(),
            ];
            out.write_record(row.keys.iter().map(|k| spreadsheet_safe(k)).chain(values))?;
        }
        out.into_inner()
            .map_err(|e| ReportError::Csv(csv::Error::from(e.into_error())))
    }
}

/// A cell a spreadsheet would not run as a formula (OWASP's CSV injection
/// rule): one that begins with `=`, `+`, `-`, `@`, tab or carriage return
/// gets a leading `'`. Group keys are caller-chosen text (a JWT `sub`, a
/// model name); the numeric columns never start with one of these.
fn spreadsheet_safe(cell: &str) -> String {
    match cell.as_bytes().first() {
        Some(b'=' | b'+' | b'-' | b'@' | b'\t' | b'\r') => format!("'{cell}"),
        _ => cell.to_string(),
    }
}

/// A read-only connection to the ledger file: WAL readers never block the
/// gateway's writer, so reports work while it runs.
pub fn open_ledger(path: &Path) -> Result<Connection, ReportError> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(Duration::from_secs(5))?;
    Ok(conn)
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::date;

    fn pairs(q: &str) -> Vec<(String, String)> {
        q.split('&')
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn parses_parameters_and_names_bad_ones() {
        let (q, f) = ReportQuery::from_pairs(&pairs(
            "from=2026-01-01&to=2026-01-07&group_by=day,model&format=csv",
        ))
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(q.from, date!(2026 - 01 - 01));
        assert_eq!(q.group_by, vec![GroupKey::Day, GroupKey::Model]);
        assert_eq!(f, Format::Csv);
        let bad = |q: &str| match ReportQuery::from_pairs(&pairs(q)) {
            Err(ReportError::InvalidParameter { param, .. }) => param,
            Err(ReportError::UnknownParameter(_)) => "unknown",
            other => panic!("{q}: {other:?}"),
        };
        assert_eq!(bad("from=2026-13-01&to=2026-01-07"), "from");
        assert_eq!(bad("to=2026-01-07"), "from");
        assert_eq!(bad("from=2026-01-08&to=2026-01-07"), "to");
        assert_eq!(
            bad("from=2026-01-01&to=2026-01-07&group_by=team"),
            "group_by"
        );
        assert_eq!(
            bad("from=2026-01-01&to=2026-01-07&group_by=day,day"),
            "group_by"
        );
        assert_eq!(bad("from=2026-01-01&to=2026-01-07&format=xml"), "format");
        assert_eq!(bad("from=2026-01-01&to=2026-01-07&bogus=1"), "unknown");
    }

    /// A query over `from..=to` grouped by `group_by`, for every tenant and user.
    fn query(from: Date, to: Date, group_by: Vec<GroupKey>) -> ReportQuery {
        ReportQuery::new(from, to, group_by, None, None).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn both_days_are_inclusive() {
        let q = query(date!(1970 - 01 - 02), date!(1970 - 01 - 03), vec![]);
        assert_eq!(q.bounds_ms(), (MS_PER_DAY, 3 * MS_PER_DAY));
        assert_eq!(day_string(1), "1970-01-02");
    }

    #[test]
    fn csv_cells_that_a_spreadsheet_would_run_are_defused() {
        let q = query(
            date!(2026 - 01 - 01),
            date!(2026 - 01 - 01),
            vec![GroupKey::User, GroupKey::Model],
        );
        let evil = [
            "=HYPERLINK(\"http://evil.test\",\"x\")",
            "+1",
            "-2",
            "@SUM(A1)",
            "\tx",
            "\rx",
        ];
        let rows = evil
            .iter()
            .map(|e| ReportRow::new(vec![e.to_string(), "gpt-4o".into()], [1, 2, 3, 0, 0, 0]))
            .collect();
        let report = Report { query: q, rows };
        let csv = report.to_csv().unwrap_or_else(|e| panic!("{e}"));
        let mut reader = csv::ReaderBuilder::new().from_reader(csv.as_slice());
        let users: Vec<String> = reader
            .records()
            .map(|r| {
                r.map(|r| r[0].to_string())
                    .unwrap_or_else(|e| panic!("{e}"))
            })
            .collect();
        let expected: Vec<String> = evil.iter().map(|e| format!("'{e}")).collect();
        assert_eq!(users, expected);
        assert_eq!(spreadsheet_safe("alice"), "alice");
        assert_eq!(spreadsheet_safe(""), "");
    }

    #[test]
    fn csv_quotes_per_rfc4180() {
        let q = query(
            date!(2026 - 01 - 01),
            date!(2026 - 01 - 01),
            vec![GroupKey::User],
        );
        let report = Report {
            query: q,
            rows: vec![ReportRow {
                keys: vec!["a,\"b\"".into()],
                calls: 1,
                prompt_tokens: 2,
                completion_tokens: 3,
                cached_tokens: 0,
                micro_usd: 1_500_000,
                estimated_calls: 0,
            }],
        };
        let csv = String::from_utf8(report.to_csv().unwrap_or_else(|e| panic!("{e}")))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            csv,
            "user,calls,prompt_tokens,completion_tokens,cached_tokens,usd,estimated_calls\r\n\"a,\"\"b\"\"\",1,2,3,0,1.500000,0\r\n"
        );
    }
}
