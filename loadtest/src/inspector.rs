//! Each V8 isolate's heap in a local workerd, read through its inspector (the Chrome DevTools
//! Protocol's `Runtime.getHeapUsage`, `sale --sample-inspector`): the JavaScript memory of the
//! edge's Worker and objects, apart from what the rest of the process holds (the runtime's own
//! allocator, SQLite's caches, the dev tooling's services). Workerd opens the inspector only when
//! asked (`--inspector-addr`; `loadtest/workerd-server.mjs` with `WORKERD_INSPECTOR_PORT`), on
//! loopback: it is a test and benchmark aid, never part of a deployment.

use std::time::Duration;

use futures_util::{SinkExt as _, StreamExt as _};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

/// One isolate's heap: its name (the inspector's id, `:` made `-`: `core-user` is the edge's
/// Worker and its objects, the others miniflare's services), the bytes its objects use (live or
/// not yet collected) and the bytes V8 holds for it.
#[derive(Debug, Clone, PartialEq)]
pub struct Heap {
    pub name: String,
    pub used: f64,
    pub total: f64,
}

/// At most this many isolates are asked (a workerd of the edge has a handful).
const MAX_TARGETS: usize = 16;
/// An answer larger than this is not an inspector's heap figure.
const MAX_ANSWER: usize = 64 * 1024;

/// The heap of every isolate the inspector at `base` (`http://127.0.0.1:PORT`) lists, each asked
/// on a connection of its own within `within`.
pub async fn heaps(http: &reqwest::Client, base: &str, within: Duration) -> Result<Vec<Heap>, String> {
    tokio::time::timeout(within, async {
        let targets: Value = http
            .get(format!("{}/json", base.trim_end_matches('/')))
            .send()
            .await
            .map_err(|e| e.to_string())?
            .json()
            .await
            .map_err(|e| e.to_string())?;
        let mut heaps = Vec::new();
        for target in targets.as_array().into_iter().flatten().take(MAX_TARGETS) {
            let (Some(id), Some(url)) = (target["id"].as_str(), target["webSocketDebuggerUrl"].as_str())
            else {
                continue;
            };
            let usage = heap_usage(url).await?;
            heaps.push(Heap {
                name: id.replace(':', "-").trim_matches('-').to_owned(),
                used: usage["usedSize"].as_f64().ok_or_else(|| format!("no usedSize: {usage}"))?,
                total: usage["totalSize"].as_f64().ok_or_else(|| format!("no totalSize: {usage}"))?,
            });
        }
        Ok(heaps)
    })
    .await
    .map_err(|_| format!("the inspector did not answer within {within:?}"))?
}

async fn heap_usage(url: &str) -> Result<Value, String> {
    if !url.starts_with("ws://127.0.0.1:") && !url.starts_with("ws://localhost:") {
        return Err(format!("{url}: not a loopback inspector"));
    }
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await.map_err(|e| format!("{url}: {e}"))?;
    let ask = json!({ "id": 1, "method": "Runtime.getHeapUsage" }).to_string();
    ws.send(Message::text(ask)).await.map_err(|e| e.to_string())?;
    // Events the isolate sends unasked (none are enabled) are passed over until the answer.
    let answer = loop {
        let Some(message) = ws.next().await else { return Err("the inspector closed".into()) };
        let text = match message.map_err(|e| e.to_string())? {
            Message::Text(t) if t.len() <= MAX_ANSWER => t,
            Message::Text(_) => return Err("an answer too large".into()),
            _ => continue,
        };
        let v: Value = serde_json::from_str(text.as_str()).map_err(|e| e.to_string())?;
        if v["id"] == 1 {
            break v;
        }
    };
    let _ = ws.close(None).await;
    if let Some(e) = answer.get("error") {
        return Err(format!("Runtime.getHeapUsage: {e}"));
    }
    Ok(answer["result"].clone())
}
