//! Integration tests of the feature engine: the oracle (every table equals a
//! from-scratch recomputation after every epoch, on 1 and 4 workers) and work
//! counting (only changed chunk texts are embedded).

mod admission;
mod harness;
mod oracle;
mod work;
