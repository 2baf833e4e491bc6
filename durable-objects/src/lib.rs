//! The Durable Object classes of the edge. Each is a thin shell: parse the request, call a pure
//! state machine (in this crate or in `shared-types`), persist to the object's SQLite storage,
//! answer. The edge Worker links this crate so that one script deploys the Worker and its objects.

pub mod alarm;
pub mod caller;
pub mod directory;
pub mod health_probe;
pub mod http;
pub mod inventory;
pub mod log;
pub mod stub;
pub mod waiting_room;
pub mod waitlist;

pub use health_probe::{HealthProbe, ProbeReadBack, ProbeWrite};

/// Milliseconds since the epoch, from the runtime's clock (Workers: `Date.now()`, which does not
/// advance while a request computes). The one clock of the objects and the edge.
pub fn now_ms() -> i64 {
    worker::Date::now().as_millis() as i64
}

/// The size of this isolate's wasm linear memory (the heap's high-water mark: it never shrinks).
pub fn wasm_memory_bytes() -> usize {
    #[cfg(target_arch = "wasm32")]
    {
        core::arch::wasm32::memory_size(0) * 65_536
    }
    #[cfg(not(target_arch = "wasm32"))]
    {
        0
    }
}
