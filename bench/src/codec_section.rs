//! The codec section of `netron-bench`.

use crate::Options;
use crate::table::Table;

/// Runs the codec measurements.
pub fn run(_opts: &Options) -> Vec<Table> {
    Vec::new()
}
