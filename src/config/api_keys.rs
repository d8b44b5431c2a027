//! `auth.api_keys`, checked and compiled while it is parsed.
//!
//! A 100,000-key file is 20 MiB of YAML; parsed into a list of entries it
//! took ~35 MiB more, alive next to the running config during a reload
//! (peak 2.6x the steady RSS, `benches/config_scale.sh`). Here each entry
//! is validated and compiled into the [`KeyIndex`] as soon as it is read,
//! then dropped: a reload holds the new index (48 bytes a key, identities
//! shared with the running one) and a table of id positions, nothing more.

use super::formats::{parse_rfc3339, NOT_A_SHA256_HEX};
use super::secret::Secret;
use crate::auth::api_key::{parse_digest_hex, KeyIndex};
use crate::auth::identity::{value_problem, Identity};
use crate::auth::key_policy::{KeyBudgets, KeyPolicy, KeyRateLimit};
use crate::llm::pricing::{micro_usd_from_usd, MICRO_USD_PER_USD};
use hashbrown::{DefaultHashBuilder, HashTable};
use serde::de::{Deserializer, SeqAccess, Visitor};
use serde::ser::{SerializeSeq, Serializer};
use serde::{Deserialize, Serialize};
use std::cell::RefCell;
use std::fmt;
use std::hash::BuildHasher;
use std::sync::Arc;

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ApiKeyConfig {
    pub id: String,
    pub sha256: Secret<String>,
    pub user: String,
    pub tenant: String,
    #[serde(default)]
    pub roles: Vec<String>,
    pub expires_at: Option<String>,
    /// Optional allow-list of model names (as clients send them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub models: Option<Vec<String>>,
    /// Optional per-key request rate, counted next to the user's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<KeyRateLimitConfig>,
    /// Optional per-key budgets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budgets: Option<KeyBudgetsConfig>,
}

/// `auth.api_keys[].rate_limit`: a key's own request rate (the shape of a
/// route's `rate_limit`).
#[derive(Debug, Clone, Copy, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct KeyRateLimitConfig {
    pub requests_per_minute: u32,
    /// `false`: shadow mode.
    #[serde(default = "enforced")]
    pub enforce: bool,
}

/// `auth.api_keys[].budgets`: a key's own budgets.
#[derive(Debug, Clone, Copy, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct KeyBudgetsConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens_per_day: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usd_per_month: Option<f64>,
    /// `false`: shadow mode.
    #[serde(default = "enforced")]
    pub enforce: bool,
}

fn enforced() -> bool {
    true
}

thread_local! {
    /// The key index the file being parsed will replace (a reload), so
    /// unchanged identities are shared. A thread-local because serde's
    /// derive cannot hand context down to one nested field.
    static PREVIOUS: RefCell<Option<Arc<KeyIndex>>> = const { RefCell::new(None) };
}

/// Runs `parse` with `previous` as the index new keys may share
/// identities with; cleared afterwards, also on panic.
pub fn with_previous_keys<T>(previous: Option<Arc<KeyIndex>>, parse: impl FnOnce() -> T) -> T {
    struct Reset(Option<Arc<KeyIndex>>);
    impl Drop for Reset {
        fn drop(&mut self) {
            let outer = self.0.take();
            PREVIOUS.with(|p| *p.borrow_mut() = outer);
        }
    }
    let outer = PREVIOUS.with(|p| p.replace(previous));
    let _reset = Reset(outer);
    parse()
}

/// The configured API keys: the compiled index plus what was wrong with
/// the entries left out of it (reported by `validate`).
#[derive(Debug, Default, Clone)]
pub struct ApiKeyList {
    index: KeyIndex,
    problems: Vec<(String, String)>,
    /// Each allow-list with its entry's position in the file, for
    /// validation against `models` (which is parsed after `auth`).
    allow_lists: Vec<(usize, Arc<KeyPolicy>)>,
}

impl ApiKeyList {
    /// Compiles entries built in code (tests, tools); a file's are compiled
    /// while they are parsed.
    pub fn from_entries(entries: impl IntoIterator<Item = ApiKeyConfig>) -> Self {
        let mut compiler = Compiler::new(0, None);
        for entry in entries {
            compiler.add(entry);
        }
        compiler.finish()
    }

    pub fn len(&self) -> usize {
        self.index.len()
    }

    pub fn is_empty(&self) -> bool {
        self.index.is_empty() && self.problems.is_empty()
    }

    /// `(field path, message)` for every entry that failed validation.
    pub fn problems(&self) -> &[(String, String)] {
        &self.problems
    }

    /// `(entry position, policy)` of every key with a model allow-list.
    pub fn allow_lists(&self) -> impl Iterator<Item = (usize, &[String])> {
        self.allow_lists
            .iter()
            .filter_map(|(i, p)| p.models.as_deref().map(|m| (*i, m)))
    }

    /// Moves the index out (into the authenticator), leaving this empty.
    pub fn take_index(&mut self) -> KeyIndex {
        std::mem::take(&mut self.index)
    }
}

/// `api_keys` as a file would list them, rebuilt from an index;
/// `expires_at` rendered in UTC.
pub fn entries_as_config(index: &KeyIndex) -> Vec<ApiKeyConfig> {
    index.entries().into_iter().map(entry_as_config).collect()
}

fn entry_as_config(e: crate::auth::api_key::KeyEntry) -> ApiKeyConfig {
    let policy = e.identity.policy.as_deref();
    ApiKeyConfig {
        id: e.identity.key_id.clone(),
        sha256: hex::encode(e.digest).into(),
        user: e.identity.user.clone(),
        tenant: e.identity.tenant.clone(),
        roles: e.identity.roles.clone(),
        expires_at: e.expires_at.map(format_rfc3339),
        models: policy.and_then(|p| p.models.as_ref()).map(|m| m.to_vec()),
        rate_limit: policy
            .and_then(|p| p.rate_limit)
            .map(|r| KeyRateLimitConfig {
                requests_per_minute: r.requests_per_minute,
                enforce: r.enforce,
            }),
        budgets: policy.and_then(|p| p.budgets).map(|b| KeyBudgetsConfig {
            tokens_per_day: b.tokens_per_day,
            usd_per_month: b
                .micro_usd_per_month
                .map(|m| m as f64 / MICRO_USD_PER_USD as f64),
            enforce: b.enforce,
        }),
    }
}

fn format_rfc3339(unix: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(unix)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}

impl Serialize for ApiKeyList {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut seq = serializer.serialize_seq(Some(self.index.len()))?;
        for entry in self.index.entries() {
            seq.serialize_element(&entry_as_config(entry))?;
        }
        seq.end()
    }
}

impl<'de> Deserialize<'de> for ApiKeyList {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_seq(ListVisitor)
    }
}

struct ListVisitor;

impl<'de> Visitor<'de> for ListVisitor {
    type Value = ApiKeyList;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a sequence of API keys")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<ApiKeyList, A::Error> {
        let previous = PREVIOUS.with(|p| p.borrow().clone());
        let mut compiler = Compiler::new(seq.size_hint().unwrap_or(0), previous);
        while let Some(entry) = seq.next_element::<ApiKeyConfig>()? {
            compiler.add(entry);
        }
        Ok(compiler.finish())
    }
}

/// High bit of a position in `ids`: the id belongs to a rejected entry and
/// is kept in `rejected_ids` (valid entries' ids live in the index).
const REJECTED: u32 = 1 << 31;

/// The id at `position` of the id table: in the index, or among the
/// rejected entries' ids when the position carries [`REJECTED`].
fn id_at<'a>(index: &'a KeyIndex, rejected_ids: &'a [String], position: u32) -> &'a str {
    if position & REJECTED != 0 {
        rejected_ids
            .get((position & !REJECTED) as usize)
            .map_or("", String::as_str)
    } else {
        index.key_id_at(position as usize).unwrap_or("")
    }
}

struct Compiler {
    list: ApiKeyList,
    previous: Option<Arc<KeyIndex>>,
    /// Positions of every id seen so far, hashed by id: finds duplicates
    /// without a second copy of 100,000 ids.
    ids: HashTable<u32>,
    id_hasher: DefaultHashBuilder,
    rejected_ids: Vec<String>,
    entries_seen: usize,
}

impl Compiler {
    fn new(expected: usize, previous: Option<Arc<KeyIndex>>) -> Self {
        Compiler {
            list: ApiKeyList {
                index: KeyIndex::with_capacity(expected),
                problems: Vec::new(),
                allow_lists: Vec::new(),
            },
            previous,
            ids: HashTable::with_capacity(expected),
            id_hasher: DefaultHashBuilder::default(),
            rejected_ids: Vec::new(),
            entries_seen: 0,
        }
    }

    fn id_at(&self, position: u32) -> &str {
        id_at(&self.list.index, &self.rejected_ids, position)
    }

    fn remember_id(&mut self, hash: u64, position: u32) {
        // Disjoint borrows: the table grows while ids are read for rehashing.
        let Compiler {
            ids,
            id_hasher,
            list,
            rejected_ids,
            ..
        } = self;
        ids.insert_unique(hash, position, |p| {
            id_hasher.hash_one(id_at(&list.index, rejected_ids, *p))
        });
    }

    fn problem(&mut self, path: &str, field: &str, message: impl Into<String>) {
        self.list
            .problems
            .push((format!("{path}.{field}"), message.into()));
    }

    /// Checks one entry (the messages `tollgate check` prints, in the order
    /// of its fields) and adds it to the index if it passes.
    fn add(&mut self, key: ApiKeyConfig) {
        let path = format!("auth.api_keys[{}]", self.entries_seen);
        self.entries_seen += 1;
        let problems_before = self.list.problems.len();
        let id_hash = self.id_hasher.hash_one(key.id.as_str());
        let duplicate_id = !key.id.is_empty()
            && self
                .ids
                .find(id_hash, |p| self.id_at(*p) == key.id)
                .is_some();
        if let Some(problem) = value_problem(&key.id) {
            self.problem(&path, "id", problem);
        } else if duplicate_id {
            let message = format!("duplicate key id '{}'", key.id);
            self.problem(&path, "id", message);
        }
        let digest = match parse_digest_hex(&key.sha256.expose().to_ascii_lowercase()) {
            None => {
                self.problem(&path, "sha256", NOT_A_SHA256_HEX);
                None
            }
            Some(digest) if self.list.index.contains(&digest) => {
                let message = "duplicate key digest (two entries for the same key)";
                self.problem(&path, "sha256", message);
                None
            }
            Some(digest) => Some(digest),
        };
        // Sent to backends in X-Gateway-* headers (roles comma-joined).
        if let Some(problem) = value_problem(&key.user) {
            self.problem(&path, "user", problem);
        }
        if let Some(problem) = value_problem(&key.tenant) {
            self.problem(&path, "tenant", problem);
        }
        for (i, role) in key.roles.iter().enumerate() {
            if let Some(problem) = value_problem(role) {
                self.problem(&path, &format!("roles[{i}]"), problem);
            }
        }
        let expires_at = key.expires_at.as_deref().and_then(|at| {
            let unix = parse_rfc3339(at);
            if unix.is_none() {
                let message =
                    format!("'{at}' is not an RFC 3339 timestamp like 2027-06-30T00:00:00Z");
                self.problem(&path, "expires_at", message);
            }
            unix
        });
        let policy = self.policy(&path, &key).map(Arc::new);
        // Checked against `models` by validation, also for an entry
        // refused for another reason.
        if let Some(p) = policy.as_ref().filter(|p| p.models.is_some()) {
            self.list
                .allow_lists
                .push((self.entries_seen - 1, Arc::clone(p)));
        }
        let clean = self.list.problems.len() == problems_before;
        match digest {
            Some(digest) if clean => {
                let position = self.list.index.len() as u32;
                let identity = Identity {
                    user: key.user,
                    tenant: key.tenant,
                    roles: key.roles,
                    key_id: key.id,
                    credential: crate::auth::CredentialKind::ApiKey,
                    policy,
                };
                // Not a duplicate digest (checked above).
                self.list.index.insert_reusing(
                    digest,
                    identity,
                    expires_at,
                    self.previous.as_deref(),
                );
                self.remember_id(id_hash, position);
            }
            _ if !key.id.is_empty() && !duplicate_id => {
                let position = self.rejected_ids.len() as u32 | REJECTED;
                self.rejected_ids.push(key.id);
                self.remember_id(id_hash, position);
            }
            _ => {}
        }
    }

    /// The entry's own policy (`None` when it sets none), its problems
    /// reported. Model names are checked against `models` by validation.
    fn policy(&mut self, path: &str, key: &ApiKeyConfig) -> Option<KeyPolicy> {
        if let Some(models) = &key.models {
            let mut seen = std::collections::HashSet::with_capacity(models.len());
            for (i, model) in models.iter().enumerate() {
                if !seen.insert(model.as_str()) {
                    self.problem(
                        path,
                        &format!("models[{i}]"),
                        format!("duplicate model '{model}'"),
                    );
                }
            }
        }
        if key.rate_limit.is_some_and(|r| r.requests_per_minute == 0) {
            self.problem(path, "rate_limit.requests_per_minute", "must be at least 1");
        }
        let mut budgets = None;
        if let Some(b) = key.budgets {
            if b.tokens_per_day == Some(0) {
                self.problem(path, "budgets.tokens_per_day", "must be at least 1");
            }
            let micro_usd_per_month = match b.usd_per_month.map(micro_usd_from_usd) {
                Some(Ok(0)) => {
                    self.problem(path, "budgets.usd_per_month", "must be more than 0");
                    None
                }
                Some(Err(e)) => {
                    self.problem(
                        path,
                        "budgets.usd_per_month",
                        format!("must be a non-negative number of USD ({e})"),
                    );
                    None
                }
                Some(Ok(micro)) => Some(micro),
                None => None,
            };
            if b.tokens_per_day.is_none() && b.usd_per_month.is_none() {
                self.problem(path, "budgets", "set tokens_per_day, usd_per_month or both");
            }
            budgets = Some(KeyBudgets {
                tokens_per_day: b.tokens_per_day,
                micro_usd_per_month,
                enforce: b.enforce,
            });
        }
        let policy = KeyPolicy {
            models: key.models.clone().map(Vec::into_boxed_slice),
            rate_limit: key.rate_limit.map(|r| KeyRateLimit {
                requests_per_minute: r.requests_per_minute,
                enforce: r.enforce,
            }),
            budgets,
        };
        (!policy.is_empty()).then_some(policy)
    }

    fn finish(mut self) -> ApiKeyList {
        self.list.index.shrink_to_fit();
        self.list
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(id: &str, secret: &str) -> ApiKeyConfig {
        ApiKeyConfig {
            id: id.into(),
            sha256: hex::encode(crate::auth::api_key::digest(secret)).into(),
            user: format!("user-{id}"),
            tenant: "acme".into(),
            roles: vec!["agent".into()],
            expires_at: None,
            models: None,
            rate_limit: None,
            budgets: None,
        }
    }

    fn parse(yaml: &str) -> ApiKeyList {
        serde_saphyr::from_str::<ApiKeyList>(yaml).unwrap_or_else(|e| panic!("{e}"))
    }

    fn problems_of(list: &ApiKeyList) -> Vec<(&str, &str)> {
        list.problems()
            .iter()
            .map(|(p, m)| (p.as_str(), m.as_str()))
            .collect()
    }

    fn entry_yaml(k: &ApiKeyConfig) -> String {
        format!(
            "- {{ id: {}, sha256: \"{}\", user: {}, tenant: {}, roles: [agent] }}\n",
            k.id,
            k.sha256.expose(),
            k.user,
            k.tenant
        )
    }

    #[test]
    fn every_bad_entry_is_named_with_its_field_and_left_out() {
        let mut upper = key("k5", "s5");
        upper.sha256 = upper.sha256.expose().to_ascii_uppercase().into();
        let mut no_user = key("k6", "s6");
        no_user.user.clear();
        let mut bad_expiry = key("k7", "s7");
        bad_expiry.expires_at = Some("next tuesday".into());
        let mut short = key("k8", "s8");
        short.sha256.expose_mut().truncate(63);
        let list = ApiKeyList::from_entries([
            key("k1", "s1"),
            key("k1", "s2"),
            key("k3", "s1"),
            key("", "s4"),
            upper,
            no_user,
            bad_expiry,
            short,
            key("k6", "s9"),
        ]);
        let problems = problems_of(&list);
        assert_eq!(
            problems,
            [
                ("auth.api_keys[1].id", "duplicate key id 'k1'"),
                (
                    "auth.api_keys[2].sha256",
                    "duplicate key digest (two entries for the same key)"
                ),
                ("auth.api_keys[3].id", "must not be empty"),
                ("auth.api_keys[5].user", "must not be empty"),
                (
                    "auth.api_keys[6].expires_at",
                    "'next tuesday' is not an RFC 3339 timestamp like 2027-06-30T00:00:00Z"
                ),
                (
                    "auth.api_keys[7].sha256",
                    "must be 64 hexadecimal characters (a SHA-256 digest)"
                ),
                // k6 was rejected (no user), its id is still taken.
                ("auth.api_keys[8].id", "duplicate key id 'k6'"),
            ]
        );
        // k1 and the upper-case digest of k5 are in; nothing else is.
        assert_eq!(list.len(), 2);
        assert!(list.index.lookup("s5", 0).is_ok());
    }

    #[test]
    fn identity_values_that_would_forge_a_header_are_refused() {
        let mut comma = key("k1", "s1");
        comma.roles = vec!["agent".into(), "x,admin".into()];
        let mut control = key("k2", "s2");
        control.user = "bob\r\nx".into();
        let mut tenant = key("k3", "s3");
        tenant.tenant = "acme,globex".into();
        let mut id = key("k4\u{1}", "s4");
        id.user = "ok".into();
        let list = ApiKeyList::from_entries([comma, control, tenant, id]);
        let problems = problems_of(&list);
        assert_eq!(
            problems,
            [
                ("auth.api_keys[0].roles[1]", "must not contain a comma"),
                (
                    "auth.api_keys[1].user",
                    "must not contain a control character"
                ),
                ("auth.api_keys[2].tenant", "must not contain a comma"),
                (
                    "auth.api_keys[3].id",
                    "must not contain a control character"
                ),
            ]
        );
        assert_eq!(list.len(), 0);
    }

    #[test]
    fn a_reload_parse_shares_unchanged_identities_of_the_running_index() {
        let (a, b) = (key("a", "sa"), key("b", "sb"));
        let old = Arc::new(parse(&(entry_yaml(&a) + &entry_yaml(&b))).take_index());
        let mut changed = b.clone();
        changed.tenant = "globex".into();
        let yaml = entry_yaml(&a) + &entry_yaml(&changed);
        let new = with_previous_keys(Some(Arc::clone(&old)), || parse(&yaml)).take_index();
        let same = |secret: &str| {
            let (o, n) = (old.lookup(secret, 0), new.lookup(secret, 0));
            match (o, n) {
                (Ok(o), Ok(n)) => Arc::ptr_eq(&o, &n),
                other => panic!("{other:?}"),
            }
        };
        assert!(same("sa"), "unchanged identity shared");
        assert!(!same("sb"), "changed identity rebuilt");
        assert_eq!(
            new.lookup("sb", 0).map(|i| i.tenant.clone()),
            Ok("globex".into())
        );
        // The context is cleared after the parse.
        let fresh = parse(&entry_yaml(&a)).take_index();
        assert!(!Arc::ptr_eq(
            &fresh.lookup("sa", 0).unwrap_or_else(|e| panic!("{e:?}")),
            &old.lookup("sa", 0).unwrap_or_else(|e| panic!("{e:?}"))
        ));
    }

    #[test]
    fn serializes_back_as_the_file_listed_them_digests_redacted() {
        let mut k = key("k1", "s1");
        k.expires_at = Some("2030-01-01T00:00:00Z".into());
        let list = ApiKeyList::from_entries([k.clone(), key("k2", "s2")]);
        let value = serde_json::to_value(&list).unwrap_or_default();
        assert_eq!(value[0]["id"], "k1");
        assert_eq!(value[0]["sha256"], crate::config::secret::REDACTED);
        assert_eq!(value[0]["expires_at"], "2030-01-01T00:00:00Z");
        assert_eq!(value[1]["id"], "k2");
    }
}
