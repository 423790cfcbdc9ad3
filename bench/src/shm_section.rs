//! The shared-memory section of `netron-bench` (filled in by the netron-shm work).

use crate::Options;
use crate::table::Table;

/// Runs the shared-memory measurements.
pub fn run(_opts: &Options) -> Vec<Table> {
    Vec::new()
}
