//! Pipeline step 4: rate limits from the `rate_limits` config section, on governor's GCRA.
//!
//! Three scopes, each with up to two windows (`per_second` with `burst`, and `per_day`):
//!
//! - `per_tenant`: all requests of one tenant;
//! - `per_key`: all requests naming one key, whoever makes them;
//! - `per_operation.<op>`: one tenant's requests of one operation. `<op>` is either the full
//!   operation (`poai.sign`, `model.decrypt`) or its verb (`sign`, `decrypt`), so
//!   `per_operation: {decrypt: …}` limits every kind of decryption.
//!
//! Two approximations, both bounded: a request refused by a later window has already used a cell
//! of the earlier ones; and `per_day: N` is a GCRA bucket of N cells refilled one every 86400/N s,
//! so a client idle for a day may spend N at once and N more over the next 24 hours (at most
//! 2N−1 in a first day, N per day after).
//!
//! A request passes only if every applicable window has room. A refusal says which limit it hit
//! and how long to wait ([`Error::retry_after`]); the server turns that into 429 + `Retry-After`
//! or `RESOURCE_EXHAUSTED`. The local operator (the CLI, tenant `*`) is limited like any tenant
//! only by `per_key` and `per_operation`.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};
use hanzo_kms_core::config::{RateLimit, RateLimitsConfig};
use hanzo_kms_core::{Error, ErrorKind, KeyName, Result};

use crate::operation::{OPERATIONS, Operation};
use crate::{RateLimiter, RequestCtx};

/// The windows of one limit.
struct Windows {
    what: String,
    second: Option<DefaultKeyedRateLimiter<String>>,
    day: Option<DefaultKeyedRateLimiter<String>>,
}

impl Windows {
    fn new(what: String, l: &RateLimit) -> Result<Option<Self>> {
        let bad =
            |why: &str| Error::new(hanzo_kms_core::ErrorKind::Config, format!("{what}: {why}"));
        let second = match l.per_second {
            None => None,
            Some(0) => return Err(bad("per_second must be at least 1 (omit it for no limit)")),
            Some(n) => {
                let burst = l.burst.unwrap_or(n);
                let burst =
                    NonZeroU32::new(burst).ok_or_else(|| bad("burst must be at least 1"))?;
                let rate =
                    NonZeroU32::new(n).ok_or_else(|| bad("per_second must be at least 1"))?;
                Some(governor::RateLimiter::keyed(
                    Quota::per_second(rate).allow_burst(burst),
                ))
            }
        };
        let day = match l.per_day {
            None => None,
            Some(0) => return Err(bad("per_day must be at least 1 (omit it for no limit)")),
            Some(n) => {
                let n32 = u32::try_from(n).map_err(|_| bad("per_day must be below 2^32"))?;
                let period = Duration::from_secs(86_400) / n32;
                let quota = Quota::with_period(period.max(Duration::from_nanos(1)))
                    .ok_or_else(|| bad("per_day is out of range"))?
                    .allow_burst(
                        NonZeroU32::new(n32).ok_or_else(|| bad("per_day must be at least 1"))?,
                    );
                Some(governor::RateLimiter::keyed(quota))
            }
        };
        if l.burst.is_some() && l.per_second.is_none() {
            return Err(bad("burst needs per_second"));
        }
        Ok((second.is_some() || day.is_some()).then_some(Self { what, second, day }))
    }

    fn check(&self, key: &str) -> Result<()> {
        let clock = DefaultClock::default();
        for (limiter, window) in [(&self.second, "per_second"), (&self.day, "per_day")] {
            if let Some(l) = limiter
                && let Err(not_until) = l.check_key(&key.to_owned())
            {
                let wait = not_until.wait_time_from(clock.now());
                return Err(Error::rate_limited(
                    format!("rate limit {}.{window} exceeded", self.what),
                    wait,
                ));
            }
        }
        Ok(())
    }

    fn forget_idle(&self) {
        for l in [&self.second, &self.day].into_iter().flatten() {
            l.retain_recent();
            l.shrink_to_fit();
        }
    }
}

/// The limiter the server installs.
pub struct ConfiguredLimiter {
    tenant: Option<Windows>,
    key: Option<Windows>,
    operation: HashMap<String, Windows>,
    rejected: AtomicU64,
}

impl ConfiguredLimiter {
    /// Build from the config section; a malformed limit is a config error naming its path.
    pub fn new(c: &RateLimitsConfig) -> Result<Self> {
        let tenant = c
            .per_tenant
            .as_ref()
            .map(|l| Windows::new("rate_limits.per_tenant".into(), l))
            .transpose()?
            .flatten();
        let key = c
            .per_key
            .as_ref()
            .map(|l| Windows::new("rate_limits.per_key".into(), l))
            .transpose()?
            .flatten();
        let mut operation = HashMap::new();
        for (op, l) in &c.per_operation {
            if !OPERATIONS
                .iter()
                .any(|o| o.limiter_names().contains(&op.as_str()))
            {
                let mut known: Vec<&str> =
                    OPERATIONS.iter().flat_map(|o| o.limiter_names()).collect();
                known.sort_unstable();
                known.dedup();
                return Err(Error::new(
                    ErrorKind::Config,
                    format!(
                        "rate_limits.per_operation.{op}: no operation is called {op:?}; use an operation ({}) or the part after its dot, or that part's verb ({})",
                        OPERATIONS
                            .iter()
                            .map(|o| o.name)
                            .collect::<Vec<_>>()
                            .join(", "),
                        known
                            .iter()
                            .filter(|n| !n.contains('.'))
                            .copied()
                            .collect::<Vec<_>>()
                            .join(", "),
                    ),
                ));
            }
            if let Some(w) = Windows::new(format!("rate_limits.per_operation.{op}"), l)? {
                operation.insert(op.clone(), w);
            }
        }
        Ok(Self {
            tenant,
            key,
            operation,
            rejected: AtomicU64::new(0),
        })
    }

    /// Requests refused so far (for `/metrics`).
    pub fn rejected(&self) -> u64 {
        self.rejected.load(Ordering::Relaxed)
    }

    /// Drop state of keys that have been idle long enough to be back at full burst. Call it now
    /// and then (the server does, once a minute) so that memory stays bounded.
    pub fn forget_idle(&self) {
        for w in [&self.tenant, &self.key].into_iter().flatten() {
            w.forget_idle();
        }
        for w in self.operation.values() {
            w.forget_idle();
        }
    }

    fn check_all(&self, ctx: &RequestCtx, op: &Operation, key: Option<&KeyName>) -> Result<()> {
        let tenant = ctx.principal.tenant.as_deref();
        if let (Some(w), Some(t)) = (&self.tenant, tenant) {
            w.check(t)?;
        }
        if let (Some(w), Some(k)) = (&self.key, key) {
            w.check(&k.to_string())?;
        }
        // `poai.sign_batch` is matched by `poai.sign_batch`, `sign_batch` or `sign`; the bucket is
        // the matched config entry, so `decrypt` is one budget for every kind of decryption.
        let scope = ctx.principal.tenant_label();
        for name in op.limiter_names() {
            if let Some(w) = self.operation.get(name) {
                w.check(&format!("{scope}\0{name}"))?;
                break;
            }
        }
        Ok(())
    }
}

impl RateLimiter for ConfiguredLimiter {
    fn check(&self, ctx: &RequestCtx, op: &Operation, key: Option<&KeyName>) -> Result<()> {
        let r = self.check_all(ctx, op, key);
        if r.is_err() {
            self.rejected.fetch_add(1, Ordering::Relaxed);
        }
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::{Principal, Role};
    use hanzo_kms_core::Separator;

    fn ctx(tenant: &str) -> RequestCtx {
        RequestCtx {
            request_id: "r".into(),
            principal: Principal {
                id: format!("token:{tenant}"),
                tenant: Some(tenant.into()),
                roles: vec![Role::Admin],
                patterns: Vec::new(),
            },
            peer: None,
        }
    }

    fn limits(yaml: &str) -> ConfiguredLimiter {
        let c = hanzo_kms_core::Config::from_yaml(yaml, "test", std::iter::empty::<(&str, &str)>())
            .unwrap();
        ConfiguredLimiter::new(&c.rate_limits).unwrap()
    }

    fn op(name: &str) -> &'static Operation {
        Operation::named(name).unwrap()
    }

    fn key(s: &str) -> KeyName {
        KeyName::parse(s, Separator::default()).unwrap()
    }

    #[test]
    fn per_tenant_burst_then_refuse_with_retry_after_and_tenants_are_separate() {
        let l = limits("rate_limits:\n  per_tenant: {per_second: 1, burst: 3}\n");
        for _ in 0..3 {
            l.check(&ctx("acme"), op("data.encrypt"), None).unwrap();
        }
        let e = l.check(&ctx("acme"), op("data.encrypt"), None).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::RateLimited);
        assert!(
            e.to_string().contains("rate_limits.per_tenant.per_second"),
            "{e}"
        );
        let wait = e.retry_after().unwrap();
        assert!(
            wait > Duration::ZERO && wait <= Duration::from_secs(1),
            "{wait:?}"
        );
        // Another tenant has its own bucket.
        l.check(&ctx("globex"), op("data.encrypt"), None).unwrap();
        assert_eq!(l.rejected(), 1);
    }

    #[test]
    fn per_day_window_applies_even_when_per_second_has_room() {
        let l = limits("rate_limits:\n  per_tenant: {per_second: 1000, per_day: 2}\n");
        l.check(&ctx("acme"), op("poai.sign"), None).unwrap();
        l.check(&ctx("acme"), op("poai.sign"), None).unwrap();
        let e = l.check(&ctx("acme"), op("poai.sign"), None).unwrap_err();
        assert!(e.to_string().contains("per_day"), "{e}");
        assert!(e.retry_after().unwrap() > Duration::from_secs(60));
    }

    #[test]
    fn per_key_limits_every_caller_of_that_key() {
        let l = limits("rate_limits:\n  per_key: {per_second: 1, burst: 1}\n");
        let k = key("model:acme:gpt4");
        l.check(&ctx("acme"), op("model.decrypt"), Some(&k))
            .unwrap();
        let e = l
            .check(&ctx("acme"), op("model.decrypt"), Some(&k))
            .unwrap_err();
        assert!(e.to_string().contains("per_key"), "{e}");
        l.check(
            &ctx("acme"),
            op("model.decrypt"),
            Some(&key("model:acme:other")),
        )
        .unwrap();
    }

    #[test]
    fn per_operation_matches_the_verb_or_the_full_name() {
        let l = limits(
            "rate_limits:\n  per_operation:\n    decrypt: {per_second: 1, burst: 1}\n    poai.sign: {per_second: 1, burst: 2}\n",
        );
        l.check(&ctx("acme"), op("model.decrypt"), None).unwrap();
        assert!(l.check(&ctx("acme"), op("model.decrypt"), None).is_err());
        // Other operations and other tenants are not affected.
        l.check(&ctx("acme"), op("data.encrypt"), None).unwrap();
        l.check(&ctx("globex"), op("model.decrypt"), None).unwrap();
        l.check(&ctx("acme"), op("poai.sign"), None).unwrap();
        l.check(&ctx("acme"), op("poai.sign"), None).unwrap();
        assert!(l.check(&ctx("acme"), op("poai.sign"), None).is_err());
    }

    #[test]
    fn a_verb_limit_covers_every_operation_with_that_verb_in_one_bucket() {
        let l = limits(
            "rate_limits:\n  per_operation:\n    sign: {per_second: 1, burst: 2}\n    decrypt: {per_second: 1, burst: 1}\n",
        );
        // poai.sign and poai.sign_batch share the `sign` budget: no way around it via batches.
        l.check(&ctx("acme"), op("poai.sign"), None).unwrap();
        l.check(&ctx("acme"), op("poai.sign_batch"), None).unwrap();
        assert!(l.check(&ctx("acme"), op("hmm.sign"), None).is_err());
        // data.decrypt and model.decrypt share the `decrypt` budget.
        l.check(&ctx("acme"), op("data.decrypt"), None).unwrap();
        assert!(l.check(&ctx("acme"), op("model.decrypt"), None).is_err());
    }

    #[test]
    fn bad_limits_are_config_errors_naming_the_path() {
        let c = hanzo_kms_core::Config::from_yaml(
            "rate_limits:\n  per_key: {per_second: 0}\n",
            "test",
            std::iter::empty::<(&str, &str)>(),
        )
        .unwrap();
        let e = ConfiguredLimiter::new(&c.rate_limits).err().unwrap();
        assert_eq!(e.kind(), ErrorKind::Config);
        assert!(e.to_string().contains("rate_limits.per_key"), "{e}");
    }

    #[test]
    fn an_unknown_operation_is_a_config_error() {
        for (name, ok) in [
            ("poai.sign", true),
            ("sign_batch", true),
            ("sign", true),
            ("verify_item", true),
            ("poai.sgin", false),
            ("sgin", false),
            ("poai", false),
        ] {
            let c = hanzo_kms_core::Config::from_yaml(
                &format!("rate_limits:\n  per_operation:\n    {name}: {{per_second: 1}}\n"),
                "test",
                std::iter::empty::<(&str, &str)>(),
            )
            .unwrap();
            match ConfiguredLimiter::new(&c.rate_limits) {
                Ok(_) => assert!(ok, "{name} was accepted"),
                Err(e) => {
                    assert!(!ok, "{name}: {e}");
                    assert_eq!(e.kind(), ErrorKind::Config);
                    let text = e.to_string();
                    assert!(
                        text.contains(&format!("rate_limits.per_operation.{name}")),
                        "{text}"
                    );
                    assert!(
                        text.contains("poai.sign_batch") && text.contains("decrypt"),
                        "{text}"
                    );
                }
            }
        }
    }

    #[test]
    fn no_limits_configured_never_refuses() {
        let l = limits("");
        for _ in 0..10_000 {
            l.check(&ctx("acme"), op("poai.sign"), None).unwrap();
        }
    }
}
