//! Support shared by the test suites and benches.
//!
//! A test that needs a tool from outside the workspace (a Kafka broker,
//! psql, chromium, DuckDB, an OpenAPI validator) fails when the tool is
//! missing and says how to install it: a green run means the check ran.
//! A developer without the tool opts out explicitly with
//! `TWINFLOW_SKIP_<TOOL>=1`; `.ci/run` installs every tool and never opts out.

/// The environment variable that skips the tests needing `tool`
/// (`TWINFLOW_SKIP_KAFKA` for `kafka`, `TWINFLOW_SKIP_OPENAPI_VALIDATOR` for `openapi-validator`).
pub fn skip_variable(tool: &str) -> String {
    format!("TWINFLOW_SKIP_{}", tool.to_ascii_uppercase().replace(['-', ' '], "_"))
}

/// Called when `tool` is missing: returns (the caller then skips its
/// check) only when the developer opted out with [`skip_variable`];
/// otherwise fails the test, saying how to install the tool.
///
/// ```should_panic
/// // Without TWINFLOW_SKIP_NO_SUCH_TOOL set, a missing tool fails the test.
/// twinflow_schemas::testing::tool_missing("no-such-tool", "it does not exist");
/// ```
#[track_caller]
pub fn tool_missing(tool: &str, install: &str) {
    let variable = skip_variable(tool);
    if std::env::var(&variable).is_ok_and(|v| !v.is_empty() && v != "0") {
        eprintln!("skipped: {tool} is not installed and {variable} is set");
        return;
    }
    panic!("this test needs {tool}, which is not installed: {install} (or set {variable}=1 to skip it)");
}

/// Applies `edits` to `bytes`, each `(at, byte, how)`: `how` 0 overwrites
/// the byte at `at % (len + 1)` (when there is one), 1 inserts `byte`
/// there, anything else cuts the rest off. Property tests draw the edits
/// to mutate valid inputs into hostile ones.
pub fn mutate(bytes: &mut Vec<u8>, edits: &[(usize, u8, u8)]) {
    for &(at, byte, how) in edits {
        let at = at % (bytes.len() + 1);
        match how {
            0 if at < bytes.len() => bytes[at] = byte,
            0 => {}
            1 => bytes.insert(at, byte),
            _ => bytes.truncate(at),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_variable_names_the_tool() {
        assert_eq!(skip_variable("kafka"), "TWINFLOW_SKIP_KAFKA");
        assert_eq!(skip_variable("openapi-validator"), "TWINFLOW_SKIP_OPENAPI_VALIDATOR");
    }

    #[test]
    #[should_panic(expected = "pip install nothing")]
    fn a_missing_tool_fails_unless_skipped() {
        tool_missing("twinflow-test-tool-never-skipped", "pip install nothing");
    }
}
