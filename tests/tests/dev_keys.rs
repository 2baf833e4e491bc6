//! `scripts/dev-keys.sh` makes keys with openssl; the Rust side must read them and each side's
//! verifying key must be the public half of the other side's signing key.

use std::collections::HashMap;
use std::process::Command;

use shared_types::token::{verify, Claims, Expectation, KeyRing, TokenKind, TokenSigner};

fn read_env(path: &std::path::Path) -> HashMap<String, String> {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

#[test]
fn generated_dev_keys_pair_up_and_sign_verifiable_tokens() {
    let dir = e2e::scratch_dir("dev_keys");
    let status = Command::new("bash")
        .arg(e2e::repo_root().join("scripts/dev-keys.sh"))
        .env("TICKETING_LOCAL", &dir)
        .status()
        .expect("run dev-keys.sh");
    assert!(status.success());
    let edge = read_env(&dir.join("edge.env"));
    let core = read_env(&dir.join("core.env"));

    let edge_signer = TokenSigner::parse(&edge["EDGE_SIGNING_KEY"]).expect("edge signing key");
    let core_signer = TokenSigner::parse(&core["CORE_SIGNING_KEY"]).expect("core signing key");
    assert_eq!(edge_signer.public_config(), core["EDGE_VERIFYING_KEYS"]);
    assert_eq!(core_signer.public_config(), edge["CORE_VERIFYING_KEYS"]);

    // The core can verify what the edge signs with the generated pair.
    let ring = KeyRing::parse(&core["EDGE_VERIFYING_KEYS"]).unwrap();
    let claims = Claims {
        iss: "edge".into(),
        aud: "evt".into(),
        sub: "vis".into(),
        iat: 10,
        exp: 20,
        jti: "j".into(),
        extra: serde_json::Map::new(),
    };
    let token = edge_signer.sign(TokenKind::Hold, &claims);
    let expect =
        Expectation { kind: TokenKind::Hold, issuer: "edge", audience: "evt", subject: Some("vis"), now: 15 };
    assert!(verify::<serde_json::Map<String, serde_json::Value>>(&token, &ring, &expect).is_ok());

    // A second run keeps the keys (never overwrites).
    let again = Command::new("bash")
        .arg(e2e::repo_root().join("scripts/dev-keys.sh"))
        .env("TICKETING_LOCAL", &dir)
        .status()
        .unwrap();
    assert!(again.success());
    assert_eq!(read_env(&dir.join("edge.env")), edge);
    assert_eq!(read_env(&dir.join("core.env")), core);

    // The partner webhooks' sealing key: made with the others, and added to a core.env made
    // before it existed, the rest kept.
    let sealing: regional_core::webhooks::settings::SealingKeys =
        core["CORE_WEBHOOK_KEYS"].parse().expect("an AES-256 sealing key");
    let sealed = sealing.seal(b"whsec", b"endpoint");
    assert_eq!(sealing.open(&sealed, b"endpoint").unwrap(), b"whsec");
    let older: String = std::fs::read_to_string(dir.join("core.env"))
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with("CORE_WEBHOOK_KEYS="))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(dir.join("core.env"), older).unwrap();
    let third = Command::new("bash")
        .arg(e2e::repo_root().join("scripts/dev-keys.sh"))
        .env("TICKETING_LOCAL", &dir)
        .status()
        .unwrap();
    assert!(third.success());
    let upgraded = read_env(&dir.join("core.env"));
    assert_eq!(upgraded["CORE_SIGNING_KEY"], core["CORE_SIGNING_KEY"]);
    assert!(upgraded["CORE_WEBHOOK_KEYS"].parse::<regional_core::webhooks::settings::SealingKeys>().is_ok());
    let _ = std::fs::remove_dir_all(&dir);
}
