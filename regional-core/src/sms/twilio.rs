//! The provider: Twilio's Messages API (`POST /2010-04-01/Accounts/{AccountSid}/Messages.json`,
//! form-encoded, HTTP basic auth with the account SID and auth token), and Twilio's request
//! signatures on what it sends us (`X-Twilio-Signature`: Base64 of HMAC-SHA1, keyed by the auth
//! token, over the full URL it called followed by each POST parameter's name and value, sorted by
//! name). Any provider that speaks this API works; the tests use a local stand-in of it
//! (`scripts/fake-twilio.mjs`, whose signatures Twilio's own Node library checks).

use std::time::Duration;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use serde::Deserialize;
use sha1::Sha1;
use subtle::ConstantTimeEq as _;

/// The provider's error code for a number that replied STOP (Twilio's 21610, "Attempt to send to
/// unsubscribed recipient"): the number is opted out here too.
pub const UNSUBSCRIBED: i64 = 21610;
/// The provider's error code for a sender whose queue is full: retried.
pub const QUEUE_FULL: i64 = 21611;
/// The longest signature header taken (Base64 of 20 bytes is 28 characters).
const MAX_SIGNATURE_BYTES: usize = 64;

/// The auth token as configuration reads it (`TWILIO_AUTH_TOKEN`): never printed.
#[derive(Clone)]
pub struct AuthToken(pub String);

impl std::str::FromStr for AuthToken {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        if s.len() < 16 || s.len() > 128 || !s.bytes().all(|b| b.is_ascii_graphic()) {
            return Err("must be the account's auth token (16 to 128 visible characters)".into());
        }
        Ok(Self(s.to_owned()))
    }
}

impl std::fmt::Debug for AuthToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AuthToken(***)")
    }
}

/// Where and as whom the core sends.
#[derive(Clone)]
pub struct TwilioSettings {
    /// `https://api.twilio.com`, or a stand-in's base (`http://` only in development mode).
    pub api_base: String,
    pub account_sid: String,
    pub auth_token: String,
    /// The sender: a number in E.164 (`From`) or a Messaging Service (`MG…`, `MessagingServiceSid`).
    pub from: String,
    /// The core's public base URL (`CORE_PUBLIC_URL`): delivery reports go to
    /// `<base>/api/v1/sms/status`, and the signatures of what the provider sends are over it.
    pub public_url: String,
}

impl std::fmt::Debug for TwilioSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TwilioSettings({}, {}, ***)", self.api_base, self.account_sid)
    }
}

impl TwilioSettings {
    /// The full URL of one of the core's provider routes (`/api/v1/sms/status`…), as the provider
    /// calls it and signs it.
    pub fn callback_url(&self, path: &str) -> String {
        format!("{}{path}", self.public_url.trim_end_matches('/'))
    }
}

/// A message the provider took (its id and status, when its answer could be read).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Accepted {
    pub sid: Option<String>,
    pub status: Option<String>,
}

/// Why the provider did not take a message.
#[derive(Debug, Clone)]
pub struct Refused {
    /// Retrying cannot help: a 4xx about the message (a number that is none, a landline,
    /// unsubscribed). Not 401, 403, 404 (the account's credentials or SID, being fixed or rotated)
    /// nor 429 (too many requests): those are retried.
    pub permanent: bool,
    /// The provider's error code (`21610`…), when it gave one.
    pub code: Option<i64>,
    pub message: String,
}

#[derive(Deserialize)]
struct ErrorBody {
    code: Option<i64>,
    message: Option<String>,
}

/// The provider's client.
#[derive(Clone)]
pub struct Twilio {
    pub settings: TwilioSettings,
    http: reqwest::Client,
}

impl Twilio {
    pub fn new(settings: TwilioSettings, timeout: Duration) -> Self {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            // The provider's answer is the outcome: a redirect is not followed with the credentials.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("ticketing-core/", env!("CARGO_PKG_VERSION")))
            .build()
            .unwrap_or_default();
        Self { settings, http }
    }

    /// Sends `body` to `to`, asking for delivery reports at the core's status route.
    pub async fn send(&self, to: &str, body: &str) -> Result<Accepted, Refused> {
        let s = &self.settings;
        let url = format!(
            "{}/2010-04-01/Accounts/{}/Messages.json",
            s.api_base.trim_end_matches('/'),
            s.account_sid
        );
        let sender = if s.from.starts_with("MG") { "MessagingServiceSid" } else { "From" };
        let callback = s.callback_url("/api/v1/sms/status");
        let form =
            [("To", to), (sender, s.from.as_str()), ("Body", body), ("StatusCallback", callback.as_str())];
        let resp = self
            .http
            .post(url)
            .basic_auth(&s.account_sid, Some(&s.auth_token))
            .form(&form)
            .send()
            .await
            .map_err(|e| Refused {
                permanent: false,
                code: None,
                message: format!("the provider did not answer: {}", e.without_url()),
            })?;
        let status = resp.status();
        if status.is_success() {
            // Taken, whatever the body says: an answer that cannot be read must not send it again.
            return Ok(resp.json::<Accepted>().await.unwrap_or_default());
        }
        let error: Option<ErrorBody> = resp.json().await.ok();
        let (code, message) = match error {
            Some(e) => (e.code, e.message.unwrap_or_default()),
            None => (None, String::new()),
        };
        Err(Refused {
            // 21611: the sender's queue is full (a 400 that is a 429 in all but name).
            permanent: status.is_client_error()
                && !matches!(status.as_u16(), 401 | 403 | 404 | 429)
                && code != Some(QUEUE_FULL),
            code,
            message: format!(
                "the provider answered {status}: {}",
                message.chars().take(300).collect::<String>()
            ),
        })
    }
}

/// Twilio's signature of a request to `url` with the POST parameters `params`.
pub fn signature(auth_token: &str, url: &str, params: &[(String, String)]) -> String {
    let mut sorted: Vec<&(String, String)> = params.iter().collect();
    sorted.sort();
    // HMAC takes keys of any length: this cannot fail.
    let mut mac = <Hmac<Sha1> as Mac>::new_from_slice(auth_token.as_bytes()).expect("any key length");
    mac.update(url.as_bytes());
    for (name, value) in sorted {
        mac.update(name.as_bytes());
        mac.update(value.as_bytes());
    }
    STANDARD.encode(mac.finalize().into_bytes())
}

/// Whether `header` is Twilio's signature of this request (constant-time).
pub fn verify(auth_token: &str, url: &str, params: &[(String, String)], header: Option<&str>) -> bool {
    let Some(header) = header.filter(|h| h.len() <= MAX_SIGNATURE_BYTES) else { return false };
    let expected = signature(auth_token, url, params);
    expected.as_bytes().ct_eq(header.trim().as_bytes()).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(p: &[(&str, &str)]) -> Vec<(String, String)> {
        p.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn signatures_match_twilios_documented_example() {
        // Twilio's security documentation's worked example (auth token 12345), as Twilio's own Node
        // library (npm `twilio` 6.3.1, `getExpectedTwilioSignature`) computes it.
        let url = "https://mycompany.com/myapp.php?foo=1&bar=2";
        let params = pairs(&[
            ("CallSid", "CA1234567890ABCDE"),
            ("Caller", "+12349013030"),
            ("Digits", "1234"),
            ("From", "+12349013030"),
            ("To", "+18005551212"),
        ]);
        assert_eq!(signature("12345", url, &params), "0/KCTR6DLpKmkAf8muzZqo1nDgQ=");
        assert!(verify("12345", url, &params, Some("0/KCTR6DLpKmkAf8muzZqo1nDgQ=")));
        assert!(!verify("12346", url, &params, Some("0/KCTR6DLpKmkAf8muzZqo1nDgQ=")));
        assert!(!verify(
            "12345",
            "https://mycompany.com/myapp.php",
            &params,
            Some("0/KCTR6DLpKmkAf8muzZqo1nDgQ=")
        ));
        assert!(!verify("12345", url, &params, None));
        assert!(!verify("12345", url, &params, Some(&"A".repeat(100))));
    }
}
