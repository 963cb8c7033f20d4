//! What an operator sees and tunes: Prometheus metrics, the fan-out clock
//! behind `ssio_fanout_seconds`, logging and memory trimming.

pub(crate) mod clock;
pub mod logging;
pub mod memory;
pub(crate) mod metrics;
