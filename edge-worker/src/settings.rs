//! Every setting the edge reads from its environment, defined once: its name, whether it is a
//! secret (a `wrangler secret`, never a `[vars]` entry), its default and what it does. The code
//! reads a setting only through [`Setting::read`], and docs/configuration.md's edge table is made
//! from [`ALL`] (a test fails when the two differ, or when `wrangler.toml` sets a variable that is
//! not here or a secret as a plain variable).

use worker::Env;

/// One setting of the edge.
pub struct Setting {
    pub name: &'static str,
    /// Set with `wrangler secret put` (and `.dev.vars` locally), never in `wrangler.toml`.
    pub secret: bool,
    /// What the code uses when it is not set (`None`: required, or the feature is off).
    pub default: Option<&'static str>,
    /// Read only by [`markdown`] (the docs' table, made in a test): not compiled into the Worker.
    #[cfg_attr(not(test), allow(dead_code))]
    pub about: &'static str,
}

impl Setting {
    /// The setting's value: a secret binding, or a plain variable of that name (`wrangler dev`
    /// passes `.dev.vars` entries as variables). `None` when it is not set.
    pub fn read(&self, env: &Env) -> Option<String> {
        let secret = self.secret.then(|| env.secret(self.name).ok()).flatten();
        secret.map(|s| s.to_string()).or_else(|| env.var(self.name).ok().map(|v| v.to_string()))
    }

    /// [`Setting::read`], or the default when it is not set.
    pub fn read_or_default(&self, env: &Env) -> Option<String> {
        self.read(env).or_else(|| self.default.map(str::to_owned))
    }
}

pub const CORE_URL: Setting = Setting {
    name: "CORE_URL",
    secret: false,
    default: None,
    about: "Where the regional core answers (https in production); buyers' API calls and the health \
            chain go there. Unset: the proxy answers 503.",
};

pub const HEALTH_TIMEOUT_MS: Setting = Setting {
    name: "HEALTH_TIMEOUT_MS",
    secret: false,
    default: Some("2000"),
    about: "How long `/healthz` waits for each tier, in milliseconds.",
};

pub const TURNSTILE_VERIFY_URL: Setting = Setting {
    name: "TURNSTILE_VERIFY_URL",
    secret: false,
    default: Some("https://challenges.cloudflare.com/turnstile/v0/siteverify"),
    about: "Where Turnstile tokens are verified (events whose bot check is Turnstile).",
};

pub const TURNSTILE_SECRET: Setting = Setting {
    name: "TURNSTILE_SECRET",
    secret: true,
    default: None,
    about: "Turnstile's secret key; needed only by events whose bot check is Turnstile.",
};

pub const EDGE_SIGNING_KEY: Setting = Setting {
    name: "EDGE_SIGNING_KEY",
    secret: true,
    default: None,
    about: "`<kid>:<base64url seed>`: signs admission and hold tokens. Required.",
};

pub const EDGE_VERIFYING_KEYS: Setting = Setting {
    name: "EDGE_VERIFYING_KEYS",
    secret: true,
    default: None,
    about: "Earlier edge public keys (`kid:key,...`) still trusted during a rotation.",
};

pub const CORE_VERIFYING_KEYS: Setting = Setting {
    name: "CORE_VERIFYING_KEYS",
    secret: true,
    default: None,
    about: "The core's public keys (`kid:key,...`), for its signed requests. Required.",
};

/// Read by the inventory objects (`durable_objects::inventory::rate`), listed here for the docs.
#[cfg_attr(not(test), allow(dead_code))]
pub const HOLDS_PER_VISITOR_PER_MINUTE: Setting = Setting {
    name: durable_objects::inventory::rate::RATE_VAR,
    secret: false,
    default: Some("30"),
    about: "Hold requests one visitor may make of an event's inventory a minute (1 to 10,000); over \
            it a hold is `429 hold-rate`. Read by the inventory objects. Leave it unset in \
            production: the test environment of the API fuzzing raises it.",
};

/// Read by the inventory objects (`durable_objects::inventory::retention`), listed here for the docs.
#[cfg_attr(not(test), allow(dead_code))]
pub const HOLD_RECORDS_RETENTION_SECONDS: Setting = Setting {
    name: durable_objects::inventory::retention::VAR,
    secret: false,
    default: Some("3600"),
    about: "Seconds an event's inventory remembers ended holds and idempotency answers (300 to \
            3,600; it can only shorten the hour, and an answer is kept at least as long as its hold \
            may live). Read by the inventory objects, which log it at `warn`. Leave it unset in \
            production: a shorter memory of ended holds narrows the time in which a late payment \
            can still take its seats back; the soak shortens it to reach the objects' steady state \
            sooner.",
};

/// Every setting, in the order the docs list them.
#[cfg(test)]
pub const ALL: &[&Setting] = &[
    &CORE_URL,
    &HEALTH_TIMEOUT_MS,
    &HOLDS_PER_VISITOR_PER_MINUTE,
    &HOLD_RECORDS_RETENTION_SECONDS,
    &TURNSTILE_VERIFY_URL,
    &TURNSTILE_SECRET,
    &EDGE_SIGNING_KEY,
    &EDGE_VERIFYING_KEYS,
    &CORE_VERIFYING_KEYS,
];

/// The edge's table of docs/configuration.md.
#[cfg(test)]
pub fn markdown() -> String {
    let mut out = String::from("| variable | secret | default | what |\n| --- | --- | --- | --- |\n");
    for s in ALL {
        let default = s.default.map_or("—".to_owned(), |d| format!("`{d}`"));
        let about = s.about.split_whitespace().collect::<Vec<_>>().join(" ");
        out.push_str(&format!(
            "| `{}` | {} | {default} | {about} |\n",
            s.name,
            if s.secret { "yes" } else { "no" }
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// docs/configuration.md's edge table is [`markdown`]'s (`UPDATE_CONFIG_DOCS=1` rewrites it).
    #[test]
    fn the_documented_table_is_current() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/configuration.md");
        let doc = std::fs::read_to_string(path).unwrap();
        const BEGIN: &str = "<!-- edge:begin -->\n";
        let start = doc.find(BEGIN).expect("the edge's begin marker") + BEGIN.len();
        let end = doc.find("<!-- edge:end -->").expect("the edge's end marker");
        if std::env::var_os("UPDATE_CONFIG_DOCS").is_some() {
            std::fs::write(path, format!("{}{}{}", &doc[..start], markdown(), &doc[end..])).unwrap();
        } else {
            assert!(
                doc[start..end] == markdown(),
                "docs/configuration.md is stale: run scripts/config-docs.sh"
            );
        }
    }

    /// `wrangler.toml` sets (in `[vars]` and every `[env.*.vars]`) only settings defined here, and
    /// no secret: secrets are `wrangler secret put`, never committed.
    #[test]
    fn wrangler_sets_only_known_plain_variables() {
        let toml = include_str!("../../wrangler.toml");
        let mut in_vars = false;
        for line in toml.lines().map(str::trim) {
            if line.starts_with('[') {
                in_vars = line == "[vars]" || (line.starts_with("[env.") && line.ends_with(".vars]"));
                continue;
            }
            let Some((name, _)) = line.split_once('=').filter(|_| in_vars && !line.starts_with('#')) else {
                continue;
            };
            let name = name.trim();
            let setting = ALL.iter().find(|s| s.name == name);
            assert!(setting.is_some_and(|s| !s.secret), "wrangler.toml sets {name}: unknown, or a secret");
            // The hold rate is raised by a test environment only, never by a deployed one.
            assert_ne!(name, HOLDS_PER_VISITOR_PER_MINUTE.name, "wrangler.toml raises the hold rate");
            // Nor shortens what the objects remember: a test's setting too.
            assert_ne!(name, HOLD_RECORDS_RETENTION_SECONDS.name, "wrangler.toml shortens the retention");
        }
    }

    #[test]
    fn the_hold_rates_documented_default_is_the_objects() {
        let default = durable_objects::inventory::rate::HOLDS_PER_WINDOW.to_string();
        assert_eq!(HOLDS_PER_VISITOR_PER_MINUTE.default, Some(default.as_str()));
    }

    #[test]
    fn the_retentions_documented_default_is_the_objects() {
        use durable_objects::inventory::retention::{Retention, MAX_SECONDS};
        assert_eq!(HOLD_RECORDS_RETENTION_SECONDS.default, Some(MAX_SECONDS.to_string().as_str()));
        let default = Retention::default();
        assert_eq!(default.ms, MAX_SECONDS * 1_000);
    }
}
