//! Handing memory back to the system after a crowd of connections has gone.
//!
//! glibc's malloc keeps what a thread freed in that thread's arena for reuse, and returns only
//! a free top of each arena: after 10,000 idle connections closed, about 95 MiB stayed resident
//! although the heap held 9 MB (docs/failure-modes.md, "Scale: idle connections"). When the
//! open connections have fallen well below their high-water mark, [`keep`] asks glibc for the
//! free pages back (`malloc_trim`). Other allocators return memory themselves: there it does
//! nothing.

use std::time::Duration;

use crate::state::AppState;

/// How often the open connections are looked at.
const EVERY: Duration = Duration::from_secs(2);
/// A fall from the high-water mark worth a trim: at least this many connections, and at least
/// half of the mark.
const FALL: usize = 1_000;

/// Runs for the server's life: trims after every large fall in open connections.
pub async fn keep(state: AppState) {
    let mut high = 0;
    loop {
        tokio::time::sleep(EVERY).await;
        let open = state.connections.len();
        high = high.max(open);
        if high - open >= FALL && open <= high / 2 {
            let released = tokio::task::spawn_blocking(release).await.unwrap_or(false);
            tracing::debug!(high, open, released, "returned freed memory to the system");
            high = open;
        }
    }
}

/// Asks the allocator to return its free pages to the system; whether it gave any back.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
pub fn release() -> bool {
    // SAFETY: malloc_trim takes no pointer and changes only glibc's own free lists, under
    // the locks of the arenas it walks.
    unsafe { libc::malloc_trim(0) == 1 }
}

/// Elsewhere the allocator returns memory itself.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn release() -> bool {
    false
}
