//! The one alarm an object keeps. Each object arms at most one alarm (its next expiry or tick);
//! [`Alarm`] remembers what this instance last set, so that an unchanged wake costs no storage
//! call, and forgets it when told to (the alarm fired, or the object reads its storage again).

use std::cell::Cell;

use worker::{Result, Storage};

/// Milliseconds since the epoch.
pub type Millis = i64;

/// What this instance last set the alarm to: `None` unknown, `Some(None)` no alarm.
#[derive(Default)]
pub struct Alarm {
    armed: Cell<Option<Option<Millis>>>,
}

impl Alarm {
    /// Keeps exactly one alarm, at `at` (or none).
    pub async fn keep(&self, storage: &Storage, at: Option<Millis>) -> Result<()> {
        if self.armed.get() == Some(at) {
            return Ok(());
        }
        match at {
            Some(at) => {
                let when = worker::js_sys::Date::new(&wasm_bindgen::JsValue::from_f64(at as f64));
                storage.set_alarm(worker::ScheduledTime::new(when)).await?;
            }
            None => storage.delete_alarm().await?,
        }
        self.armed.set(Some(at));
        Ok(())
    }

    /// The alarm this instance set, if it knows.
    pub fn armed(&self) -> Option<Option<Millis>> {
        self.armed.get()
    }

    /// Forgets what was set (the alarm fired, or storage is to be read again).
    pub fn forget(&self) {
        self.armed.set(None);
    }
}
