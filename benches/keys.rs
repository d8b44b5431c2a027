//! Authentication cost with API-made keys: the file's handful of keys plus
//! a registry of 10 or 100,000 API-made keys; a file key, an API-made key
//! and an unknown key (one hash, two map lookups, no database) each.
//! `cargo bench --bench keys`; the process figures are benches/keys.sh.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use pingora::http::RequestHeader;
use tollgate::auth::api_key::{digest, KeyIndex};
use tollgate::auth::{Authenticator, Identity};
use tollgate::keys::record::{KeyPolicy, StoredKey};
use tollgate::keys::KeyRegistry;

fn stored(i: usize) -> StoredKey {
    StoredKey {
        id: format!("key_bench_{i}"),
        digest: digest(&format!("bench-key-{i}")),
        user: format!("user{}", i % 1000),
        tenant: format!("tenant{}", i % 50),
        roles: vec!["agent".into()],
        policy: KeyPolicy::default(),
        note: String::new(),
        created_at: 0,
        expires_at: None,
        revoked_at: None,
        previous_digest: None,
        previous_until: None,
        version: i as i64 + 1,
        last_used_at: None,
    }
}

fn request(key: &str) -> RequestHeader {
    let mut req = RequestHeader::build("GET", b"/api/v1/tickets/1", None).unwrap();
    req.insert_header("x-api-key", key).unwrap();
    req
}

fn bench_auth(c: &mut Criterion) {
    let mut file = KeyIndex::with_capacity(4);
    for i in 0..4 {
        let identity = Identity {
            user: format!("file{i}"),
            tenant: "acme".into(),
            roles: vec!["agent".into()],
            key_id: format!("file-{i}"),
            ..Identity::default()
        };
        file.insert(digest(&format!("file-key-{i}")), identity, None);
    }
    let auth = Authenticator::new(file);
    let mut group = c.benchmark_group("keys_auth");
    for made in [10usize, 100_000] {
        let registry = KeyRegistry::new();
        let keys: Vec<StoredKey> = (0..made).map(stored).collect();
        registry.apply_loaded(&keys, &|_| false);
        let table = registry.table();
        for (name, key) in [
            ("file_key", "file-key-2".to_string()),
            ("api_key", format!("bench-key-{}", made / 2)),
            (
                "unknown_key",
                "tg_0000000000000000000000000000000000000000000000000000000000000000".into(),
            ),
        ] {
            let req = request(&key);
            let expect_ok = name != "unknown_key";
            assert_eq!(
                auth.authenticate(&req, 0, Some(&table)).is_ok(),
                expect_ok,
                "{name}"
            );
            group.bench_function(format!("{name}/{made}_made_keys"), |b| {
                b.iter(|| auth.authenticate(black_box(&req), 0, Some(&table)).is_ok())
            });
        }
    }
    group.finish();
}

criterion_group!(benches, bench_auth);
criterion_main!(benches);
