//! The one clock: wall time as milliseconds since the Unix epoch, the unit
//! of every `*_at_ms` column and field.

/// Milliseconds since the Unix epoch (0 if the system clock is before it).
pub fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}
