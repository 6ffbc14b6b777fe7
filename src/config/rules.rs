//! Validation of one rule: its pattern, what it does, and the keys only some actions take.

use std::collections::BTreeMap;

use globset::GlobBuilder;
use regex::Regex;

use super::file::RawRule;
use super::validate::secs;
use super::{Pattern, Rule, RuleAction};

impl RawRule {
    pub(super) fn validate(
        self,
        index: usize,
        upstreams: &BTreeMap<String, String>,
    ) -> Result<Rule, (String, String)> {
        let field = |name: &str| format!("rules[{index}].{name}");
        let pattern = match (self.glob, self.regex) {
            (Some(glob), None) => GlobBuilder::new(&glob)
                .literal_separator(true)
                .build()
                .map(|glob| Pattern::Glob(glob.compile_matcher()))
                .map_err(|e| (field("glob"), e.to_string()))?,
            (None, Some(regex)) => Regex::new(&regex)
                .map(Pattern::Regex)
                .map_err(|e| (field("regex"), e.to_string()))?,
            _ => {
                return Err((
                    format!("rules[{index}]"),
                    "a rule needs exactly one of `glob` and `regex`".to_owned(),
                ))
            }
        };
        let ttl = self
            .ttl_secs
            .map(|ttl| secs(&field("ttl_secs"), ttl))
            .transpose()?;
        if self.action.is_none()
            && self.standard_caching.is_none()
            && self.share_credentials.is_none()
            && !self.direct
            && !self.record_cookies
            && self.upstream.is_none()
        {
            return Err((
                format!("rules[{index}]"),
                "a rule needs `action`, `standard_caching`, `share_credentials`, `direct`, \
                 `upstream` or `record_cookies`"
                    .to_owned(),
            ));
        }
        if let Some(name) = &self.upstream {
            if self.direct {
                return Err((
                    field("upstream"),
                    "a rule is `direct` or names an `upstream`, not both".to_owned(),
                ));
            }
            if !upstreams.contains_key(name) {
                let known: Vec<&str> = upstreams.keys().map(String::as_str).collect();
                return Err((
                    field("upstream"),
                    format!("no upstream {name:?} in `upstreams` (known: {known:?})"),
                ));
            }
        }
        let block_status = match (self.action, self.block_status) {
            (Some(RuleAction::Block), Some(status)) if (200..600).contains(&status) => status,
            (Some(RuleAction::Block), Some(_)) => {
                return Err((field("block_status"), "a status from 200 to 599".to_owned()))
            }
            (Some(RuleAction::Block), None) => 403,
            (_, Some(_)) => {
                return Err((
                    field("block_status"),
                    "only a rule with \"action\": \"block\" takes this".to_owned(),
                ))
            }
            (_, None) => 403,
        };
        if self.action == Some(RuleAction::Bypass) && self.record_cookies {
            return Err((
                field("record_cookies"),
                "a bypass rule records nothing".to_owned(),
            ));
        }
        if self.action == Some(RuleAction::Bypass) && self.share_credentials.is_some() {
            return Err((
                field("share_credentials"),
                "a bypass rule caches nothing to share".to_owned(),
            ));
        }
        if self.action != Some(RuleAction::Cache) && ttl.is_some() {
            return Err((
                field("ttl_secs"),
                "only a rule with \"action\": \"cache\" takes this".to_owned(),
            ));
        }
        Ok(Rule {
            pattern,
            action: self.action,
            standard_caching: self.standard_caching,
            ttl,
            share_credentials: self.share_credentials,
            direct: self.direct,
            record_cookies: self.record_cookies,
            upstream: self.upstream,
            block_status,
        })
    }
}
