//! placeholder: clean, chunk and instruct functions (being written).
