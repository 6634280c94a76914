//! The blocking HTTP client every caller of a twinflow server builds: the
//! CLI, the other processes of a cluster, the benches and the tests.

use std::time::Duration;

/// A client whose requests time out after `timeout` and, with `bearer`,
/// all carry `Authorization: Bearer <bearer>` (marked sensitive, so it is
/// never logged). An error names what was wrong.
pub fn blocking_client(timeout: Duration, bearer: Option<&str>) -> Result<reqwest::blocking::Client, String> {
    let mut builder = reqwest::blocking::Client::builder().timeout(timeout);
    if let Some(token) = bearer {
        let mut value = reqwest::header::HeaderValue::from_str(&format!("Bearer {}", token.trim()))
            .map_err(|_| "the key is not a valid header value".to_owned())?;
        value.set_sensitive(true);
        builder =
            builder.default_headers(reqwest::header::HeaderMap::from_iter([(reqwest::header::AUTHORIZATION, value)]));
    }
    builder.build().map_err(|e| format!("cannot build the HTTP client: {e}"))
}
