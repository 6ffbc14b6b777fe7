//! Configuration tables: text -> config or the key an error names.

use std::time::Duration;

use super::*;

const MIB: u64 = 1024 * 1024;

#[test]
fn empty_document_gives_defaults() {
    let config = Config::parse("{}").expect("valid");
    assert_eq!(config.cache.memory_max_bytes, 256 * MIB);
    assert_eq!(config.cache.keep_versions, 1);
    assert_eq!(config.cache.max_age, Duration::from_secs(24 * 3600));
    assert_eq!(config.policy.version_query_params.len(), 5);
}

#[test]
fn shipped_example_config_is_valid() {
    let config = Config::parse(include_str!("../../config/proxy.json")).expect("valid");
    let defaults = Config::default();
    assert_eq!(
        config.cache.memory_max_bytes,
        defaults.cache.memory_max_bytes
    );
    assert_eq!(
        config.policy.version_query_params,
        defaults.policy.version_query_params
    );
    assert_eq!(
        config.policy.asset_extensions,
        defaults.policy.asset_extensions
    );
    assert_eq!(config.policy.rules.len(), 1);
    assert_eq!(config.policy.negative_ttl, defaults.policy.negative_ttl);
    assert_eq!(
        config.policy.versioned_stale_if_error,
        defaults.policy.versioned_stale_if_error
    );
    assert_eq!(
        config.policy.versioned_stale_while_revalidate,
        defaults.policy.versioned_stale_while_revalidate
    );
}

#[test]
fn errors_name_the_field() {
    let cases = [
        (r#"{"memory": {"max_mb": "big"}}"#, "memory.max_mb"),
        (r#"{"memory": {"max_mb": 0}}"#, "memory.max_mb"),
        (r#"{"memory": {"maxmb": 1}}"#, "memory.maxmb"),
        (r#"{"colour": 1}"#, "colour"),
        (r#"{"": 1}"#, "(top level)"),
        ("{\"\"action\":\"cach{\n  s\"}],\"m", "(top level)"),
        (r#"{"rules": [{"action": "cache"}]}"#, "rules[0]"),
        (r#"{"rules": [{"glob": "a/**"}]}"#, "rules[0]"),
        (
            r#"{"rules": [{"glob": "a/**", "action": "bypass", "ttl_secs": 5}]}"#,
            "rules[0].ttl_secs",
        ),
        (r#"{"negative_ttl_secs": 0}"#, "negative_ttl_secs"),
        (r#"{"standard_caching": "yes"}"#, "standard_caching"),
        (r#"{"client_reload": "sometimes"}"#, "client_reload"),
        (
            r#"{"rules": [{"glob": "a/**", "upstream": "residential"}]}"#,
            "rules[0].upstream",
        ),
        (
            r#"{"upstreams": {"r": "socks5h://h:1"}, "rules": [{"glob": "a/**", "upstream": "r", "direct": true}]}"#,
            "rules[0].upstream",
        ),
        (
            r#"{"rules": [{"glob": "a/**", "action": "cache", "block_status": 204}]}"#,
            "rules[0].block_status",
        ),
        (
            r#"{"rules": [{"glob": "a/**", "action": "block", "block_status": 99}]}"#,
            "rules[0].block_status",
        ),
        (r#"{"upstreams": {"r": "socks4://h:1"}}"#, "upstreams.r"),
        (
            r#"{"upstreams": {"default": "http://h:1"}}"#,
            "upstreams.default",
        ),
        (r#"{"upstream": {"proxy": "nowhere"}}"#, "upstream.proxy"),
        (
            r#"{"blocklist_file": "/nonexistent/list.txt"}"#,
            "blocklist_file",
        ),
        (
            r#"{"clients": {"require_namespace": 1}}"#,
            "clients.require_namespace",
        ),
        (
            r#"{"rules": [{"glob": "a/**", "action": "cache"}, {"regex": "(", "action": "bypass"}]}"#,
            "rules[1].regex",
        ),
        (
            r#"{"rules": [{"glob": "a", "action": "keep"}]}"#,
            "rules[0].action",
        ),
        (
            r#"{"versioned": {"query_params": ["v", ""]}}"#,
            "versioned.query_params[1]",
        ),
        (r#"{"passthrough": ["[bad"]}"#, "passthrough[0]"),
        (r#"{"shared": {"redis": "http://h:1"}}"#, "shared.redis"),
        (r#"{"shared": {"redis": "redis://"}}"#, "shared.redis"),
        (r#"{"shared": {"timeout_ms": 0}}"#, "shared.timeout_ms"),
        (
            r#"{"shared": {"lock_ttl_secs": 0}}"#,
            "shared.lock_ttl_secs",
        ),
    ];
    for (text, want) in cases {
        let (field, message) = Config::parse(text).expect_err(text);
        assert_eq!(field, want, "{text}: {message}");
    }
}

#[test]
fn text_after_the_document_is_an_error_not_ignored() {
    // Two objects written one after the other, or a stray brace left by an edit: what
    // follows the first document would otherwise be dropped without a word.
    for text in [
        r#"{"memory": {"max_mb": 64}}, "disk": {"max_mb": 256}}"#,
        r#"{"memory": {"max_mb": 64}} {"disk": {"max_mb": 256}}"#,
        "{} }",
    ] {
        let (field, message) = Config::parse(text).expect_err(text);
        assert_eq!(field, "(top level)", "{text}");
        assert!(message.contains("trailing"), "{text}: {message}");
    }
    assert!(
        Config::parse("{}\n\n").is_ok(),
        "trailing white space is fine"
    );
}

#[test]
fn upstream_proxy_names_one_of_the_upstreams_or_is_a_url() {
    let config = Config::parse(
        r#"{"upstreams": {"res": "socks5h://u:p@10.0.0.1:1080", "dc": "http://10.0.0.2:3128"},
            "upstream": {"proxy": "dc", "no_proxy": ["*.internal"]},
            "rules": [{"glob": "api.example/**", "upstream": "res"}]}"#,
    )
    .expect("valid");
    let upstream = &config.upstream;
    assert_eq!(
        upstream.default_proxy().map(|p| p.name.as_str()),
        Some("dc")
    );
    assert_eq!(upstream.default_for("cdn.example"), upstream.index_of("dc"));
    assert_eq!(upstream.default_for("db.internal"), None);
    assert_eq!(config.policy.rules[0].upstream.as_deref(), Some("res"));
    let mut by_url = Config::default().upstream;
    by_url
        .set_default_proxy("socks5://127.0.0.1:9050")
        .expect("a URL");
    assert_eq!(
        by_url.default_proxy().map(|p| p.name.as_str()),
        Some("default")
    );
}

#[test]
fn blocklists_take_names_globs_and_hosts_file_lines() {
    let list = Blocklist::parse(
        "# ads\nads.example\n0.0.0.0 Tracker.Example # hosts format\n*.doubleclick.test\n\n",
    )
    .expect("valid");
    assert_eq!(list.entries, 3);
    for (host, blocked) in [
        ("ads.example", true),
        ("ADS.example.", true),
        ("tracker.example", true),
        ("x.ads.example", false),
        ("ad.doubleclick.test", true),
        ("doubleclick.test", false),
        ("example", false),
    ] {
        assert_eq!(list.contains(host), blocked, "{host}");
    }
    assert!(Blocklist::parse("[bad").is_err());
}

#[test]
fn a_relative_blocklist_file_is_found_beside_its_config_file() {
    let dir = tempfile::tempdir().expect("temp dir");
    let lists = dir.path().join("lists");
    std::fs::create_dir(&lists).expect("dir");
    std::fs::write(lists.join("hosts.txt"), "ads.example\n").expect("list");
    let path = dir.path().join("proxy.json");
    std::fs::write(&path, r#"{"blocklist_file": "lists/hosts.txt"}"#).expect("config");
    // The tests run in the crate's directory, where there is no such list.
    let config = Config::load(&path).expect("loads");
    assert!(config.policy.blocklist.contains("ads.example"));
    // Given as text there is no config file to be beside: the working directory it is.
    let error = Config::parse(r#"{"blocklist_file": "lists/hosts.txt"}"#).expect_err("no list");
    assert_eq!(error.0, "blocklist_file");
}

#[test]
fn rule_globs_keep_star_within_a_segment() {
    let config = Config::parse(
        r#"{"rules": [{"glob": "cdn.example.com/*.js", "action": "cache", "ttl_secs": 60}]}"#,
    )
    .expect("valid");
    let rule = &config.policy.rules[0];
    assert!(rule.pattern.is_match("cdn.example.com/app.js"));
    assert!(!rule.pattern.is_match("cdn.example.com/deep/app.js"));
    assert_eq!(rule.ttl, Some(Duration::from_secs(60)));
}

#[test]
fn allow_hosts_limits_upstream_hosts() {
    let open = Config::default();
    assert!(open.upstream.allows_host("example.com"));
    let config = Config::parse(r#"{"upstream": {"allow_hosts": ["localhost", "127.*", "::1"]}}"#)
        .expect("valid");
    for host in ["localhost", "LOCALHOST", "127.0.0.1", "[::1]"] {
        assert!(config.upstream.allows_host(host), "{host}");
    }
    for host in ["example.com", "localhost.evil.test", "clients2.google.com"] {
        assert!(!config.upstream.allows_host(host), "{host}");
    }
}

#[test]
fn passthrough_matches_hosts_case_insensitively() {
    let config = Config::parse(r#"{"passthrough": ["*.Bank.example"]}"#).expect("valid");
    assert!(config.mitm.is_passthrough("www.bank.EXAMPLE"));
    assert!(!config.mitm.is_passthrough("bank.example.org"));
}
