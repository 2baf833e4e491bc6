//! What partner webhooks run with (`CORE_WEBHOOK_*`, docs/webhooks.md): the keys that seal the
//! signing secrets at rest, where endpoints may point, the retry schedule and when a failing
//! endpoint is disabled.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Key, Nonce};
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;

/// The keys that seal endpoints' signing secrets (AES-256-GCM): `<kid>:<base64 of 32 bytes>`,
/// comma-separated. The first seals new secrets; every key opens those it sealed, so a key is
/// rotated by putting the new one first and keeping the old one until every secret was rotated.
#[derive(Clone)]
pub struct SealingKeys {
    keys: Vec<(String, Key<Aes256Gcm>)>,
}

/// A secret sealed by [`SealingKeys::seal`]: the key's id, and the nonce followed by the ciphertext.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sealed {
    pub key_id: String,
    pub bytes: Vec<u8>,
}

const NONCE_LEN: usize = 12;

impl SealingKeys {
    /// Seals `secret` for the endpoint `context` (its id: a sealed secret moved to another
    /// endpoint's row does not open).
    pub fn seal(&self, secret: &[u8], context: &[u8]) -> Sealed {
        let (kid, key) = &self.keys[0];
        let mut nonce = [0u8; NONCE_LEN];
        getrandom::getrandom(&mut nonce).expect("the operating system's random source");
        let cipher = Aes256Gcm::new(key);
        let sealed = cipher
            .encrypt(Nonce::from_slice(&nonce), Payload { msg: secret, aad: context })
            .expect("AES-GCM seals any message shorter than 64 GiB");
        let mut bytes = nonce.to_vec();
        bytes.extend_from_slice(&sealed);
        Sealed { key_id: kid.clone(), bytes }
    }

    /// Opens a secret sealed for `context`; an error names why (an unknown key, a tampered row).
    pub fn open(&self, sealed: &Sealed, context: &[u8]) -> Result<Vec<u8>, String> {
        let (_, key) = self.keys.iter().find(|(kid, _)| *kid == sealed.key_id).ok_or_else(|| {
            format!(
                "the secret was sealed with key {:?}, which CORE_WEBHOOK_KEYS no longer has",
                sealed.key_id
            )
        })?;
        if sealed.bytes.len() < NONCE_LEN {
            return Err("a sealed secret too short to be one".into());
        }
        let (nonce, ciphertext) = sealed.bytes.split_at(NONCE_LEN);
        Aes256Gcm::new(key)
            .decrypt(Nonce::from_slice(nonce), Payload { msg: ciphertext, aad: context })
            .map_err(|_| "a sealed secret that does not open (tampered, or another endpoint's)".into())
    }
}

impl FromStr for SealingKeys {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        // Errors name a key by its place in the list, never by its text (a key written the wrong
        // way round would put its secret half in the log).
        let mut keys: Vec<(String, Key<Aes256Gcm>)> = Vec::new();
        for (i, part) in s.split(',').map(str::trim).filter(|p| !p.is_empty()).enumerate() {
            let n = i + 1;
            let (kid, key) =
                part.split_once(':').ok_or(format!("key {n}: not <kid>:<base64 of 32 bytes>"))?;
            let kid = kid.trim();
            if kid.is_empty()
                || kid.len() > 32
                || !kid.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            {
                return Err(format!("key {n}: its id must be 1 to 32 letters, digits and '-'"));
            }
            if keys.iter().any(|(k, _)| k == kid) {
                return Err(format!("key {n}: its id appears twice"));
            }
            let bytes = URL_SAFE_NO_PAD
                .decode(key.trim().trim_end_matches('='))
                .or_else(|_| STANDARD.decode(key.trim()))
                .map_err(|_| format!("key {n}: not base64"))?;
            if bytes.len() != 32 {
                return Err(format!("key {n}: {} bytes, not 32 (AES-256)", bytes.len()));
            }
            keys.push((kid.to_owned(), *Key::<Aes256Gcm>::from_slice(&bytes)));
        }
        if keys.is_empty() {
            return Err("no key: <kid>:<base64 of 32 bytes>, comma-separated".into());
        }
        Ok(Self { keys })
    }
}

impl fmt::Debug for SealingKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kids: Vec<&str> = self.keys.iter().map(|(kid, _)| kid.as_str()).collect();
        write!(f, "SealingKeys({kids:?}, ***)")
    }
}

/// The delays before each retry of a delivery (`CORE_WEBHOOK_RETRY_SCHEDULE`, seconds,
/// comma-separated): a delivery is tried once, then once after each delay, then given up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetrySchedule(pub Vec<Duration>);

impl RetrySchedule {
    /// When the attempt after `tries` failed ones is due, or `None` when the schedule is spent.
    pub fn after(&self, tries: i32) -> Option<Duration> {
        usize::try_from(tries).ok().and_then(|t| t.checked_sub(1)).and_then(|i| self.0.get(i)).copied()
    }
}

impl FromStr for RetrySchedule {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let delays: Vec<Duration> = s
            .split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .map(|p| match p.parse::<u64>() {
                Ok(n @ 1..=86_400) => Ok(Duration::from_secs(n)),
                _ => Err(format!("{p:?}: each delay is 1 to 86400 seconds")),
            })
            .collect::<Result<_, _>>()?;
        if delays.len() > 20 {
            return Err("at most 20 retries".into());
        }
        Ok(Self(delays))
    }
}

/// The retries of the Standard Webhooks' reference service: 5 s, 5 min, 30 min, 2 h, 5 h, 10 h,
/// 10 h (eight attempts over about 28 hours).
pub const DEFAULT_RETRY_SCHEDULE: &str = "5,300,1800,7200,18000,36000,36000";

/// How long an endpoint may fail every attempt before it is disabled: five days.
pub const DEFAULT_DISABLE_AFTER_SECS: u64 = 5 * 24 * 3600;

/// How long deliveries and their attempts are kept (their bodies carry buyers' addresses).
pub const DELIVERY_RETENTION_DAYS: i32 = 30;

/// Partner webhooks' settings, shared by the routes and the dispatcher.
#[derive(Debug, Clone)]
pub struct Settings {
    pub keys: SealingKeys,
    /// Endpoints may be `http://` and resolve to private, loopback or link-local addresses
    /// (`CORE_WEBHOOK_ALLOW_PRIVATE`, development mode only: in production that is SSRF).
    pub allow_private: bool,
    pub retries: RetrySchedule,
    /// An endpoint whose every attempt failed for this long is disabled (and its admins mailed).
    pub disable_after: Duration,
    /// The longest an attempt may take (connecting, sending, the answer).
    pub timeout: Duration,
    /// How often the dispatcher claims due deliveries and reads the subscriptions again.
    pub poll: Duration,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(s: &str) -> SealingKeys {
        s.parse().unwrap()
    }

    const K1: &str = "k1:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8";
    const K2: &str = "k2:HxwdHhsaGRgXFhUUExIREA8ODQwLCgkIBwYFBAMCAQA";

    #[test]
    fn a_sealed_secret_opens_with_its_key_and_context_only() {
        let sealed = keys(K1).seal(b"the secret", b"endpoint-a");
        assert_eq!(sealed.key_id, "k1");
        assert!(!sealed.bytes.windows(10).any(|w| w == b"the secret"), "never in plaintext");
        assert_eq!(keys(K1).open(&sealed, b"endpoint-a").unwrap(), b"the secret");
        assert!(keys(K1).open(&sealed, b"endpoint-b").is_err(), "another endpoint's row");
        let mut tampered = sealed.clone();
        *tampered.bytes.last_mut().unwrap() ^= 1;
        assert!(keys(K1).open(&tampered, b"endpoint-a").is_err());
        // A rotation: the new key first seals, the old one still opens.
        let both = keys(&format!("{K2},{K1}"));
        assert_eq!(both.open(&sealed, b"endpoint-a").unwrap(), b"the secret");
        assert_eq!(both.seal(b"x", b"c").key_id, "k2");
        assert!(keys(K2).open(&sealed, b"endpoint-a").unwrap_err().contains("no longer has"));
        // Two seals of one secret differ (a fresh nonce each).
        assert_ne!(keys(K1).seal(b"s", b"c").bytes, keys(K1).seal(b"s", b"c").bytes);
    }

    #[test]
    fn keys_are_refused_unless_well_formed() {
        for bad in [
            "",
            "k1",
            "k1:short",
            "k1:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8,k1:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8",
            "a b:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8",
        ] {
            assert!(bad.parse::<SealingKeys>().is_err(), "{bad:?}");
        }
        let reversed = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8:k1".parse::<SealingKeys>().unwrap_err();
        assert!(!reversed.contains("AAEC"), "an error never repeats a key: {reversed}");
        let debug = format!("{:?}", keys(K1));
        assert!(debug.contains("k1") && !debug.contains("AAEC"), "never printed: {debug}");
    }

    #[test]
    fn the_schedule_gives_each_retrys_delay_then_gives_up() {
        let s: RetrySchedule = DEFAULT_RETRY_SCHEDULE.parse().unwrap();
        assert_eq!(s.after(1), Some(Duration::from_secs(5)));
        assert_eq!(s.after(7), Some(Duration::from_secs(36_000)));
        assert_eq!(s.after(8), None);
        assert_eq!("".parse::<RetrySchedule>().unwrap().after(1), None, "no retries");
        assert!("0".parse::<RetrySchedule>().is_err() && "x".parse::<RetrySchedule>().is_err());
    }
}
