//! Bearer tokens: the `AUTH_TOKEN`s `POST /logs` requires and the `METRICS_AUTH_TOKEN`s
//! `GET /metrics` requires, and the check of a request's `Authorization` header against them.
//!
//! Several tokens may be valid at once, so that a token can be rotated without downtime: add the
//! new one, move the clients, remove the old one. The header is compared with every token in
//! constant time, so the time a refusal takes tells nothing about how much of a token matched.

use std::fmt;

use axum::http::{HeaderMap, header};
use subtle::ConstantTimeEq;

/// A non-empty set of accepted bearer tokens. Its `Debug` output never shows them.
#[derive(Clone, PartialEq, Eq)]
pub struct Tokens(Vec<Box<[u8]>>);

impl Tokens {
    /// Parses a comma- or newline-separated list (the form of `AUTH_TOKEN` and of the contents
    /// of `AUTH_TOKEN_FILE`). Whitespace around each token is dropped; a token must be printable
    /// ASCII without spaces or commas, as an `Authorization` header can carry it.
    pub fn parse(list: &str) -> Result<Tokens, String> {
        let tokens: Vec<Box<[u8]>> = list
            .split([',', '\n'])
            .map(str::trim)
            .filter(|token| !token.is_empty())
            .map(|token| {
                if token.bytes().all(|b| b.is_ascii_graphic()) {
                    Ok(token.as_bytes().into())
                } else {
                    Err("a token must be printable ASCII without spaces".to_owned())
                }
            })
            .collect::<Result<_, _>>()?;
        if tokens.is_empty() {
            return Err("no token given".into());
        }
        Ok(Tokens(tokens))
    }

    /// These tokens and `other`'s.
    pub fn with(mut self, other: Tokens) -> Tokens {
        self.0.extend(other.0);
        self
    }

    /// Whether `headers` carry `Authorization: Bearer <one of the tokens>`. Every token is
    /// compared, in constant time for tokens of the presented length.
    pub fn allow(&self, headers: &HeaderMap) -> bool {
        let Some(presented) = headers
            .get(header::AUTHORIZATION)
            .and_then(|value| bearer(value.as_bytes()))
        else {
            return false;
        };
        self.0
            .iter()
            .fold(subtle::Choice::from(0), |any, token| {
                any | token.as_ref().ct_eq(presented)
            })
            .into()
    }
}

impl fmt::Debug for Tokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Tokens({} hidden)", self.0.len())
    }
}

/// The credentials of an `Authorization: Bearer <token>` value (the scheme in any case, as RFC
/// 7235 has it).
fn bearer(value: &[u8]) -> Option<&[u8]> {
    let (scheme, rest) = value.split_at_checked(7)?;
    scheme
        .eq_ignore_ascii_case(b"bearer ")
        .then(|| rest.trim_ascii())
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    fn headers(authorization: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::AUTHORIZATION,
            HeaderValue::from_str(authorization).unwrap(),
        );
        headers
    }

    #[test]
    fn lists_are_split_at_commas_and_newlines() {
        let tokens = Tokens::parse(" old-token , new-token\nthird\n").unwrap();
        for token in ["old-token", "new-token", "third"] {
            assert!(
                tokens.allow(&headers(&format!("Bearer {token}"))),
                "{token}"
            );
        }
        assert_eq!(format!("{tokens:?}"), "Tokens(3 hidden)");
    }

    #[test]
    fn bad_lists_are_refused() {
        assert!(Tokens::parse("").is_err());
        assert!(Tokens::parse(" , \n").is_err());
        assert!(Tokens::parse("has space").is_err());
        assert!(Tokens::parse("tab\there").is_err());
        assert!(Tokens::parse("é").is_err());
    }

    #[test]
    fn only_a_bearer_header_with_a_listed_token_passes() {
        let tokens = Tokens::parse("s3cret,other").unwrap();
        assert!(tokens.allow(&headers("Bearer s3cret")));
        assert!(tokens.allow(&headers("bearer s3cret")));
        assert!(tokens.allow(&headers("BEARER  other ")));
        for refused in [
            "Bearer s3cre",
            "Bearer s3cret2",
            "Bearer ",
            "Bearer",
            "Basic s3cret",
            "s3cret",
            "Bearer S3CRET",
            "Bearer s3cret,other",
        ] {
            assert!(!tokens.allow(&headers(refused)), "{refused}");
        }
        assert!(!tokens.allow(&HeaderMap::new()));
    }

    #[test]
    fn with_adds_the_other_tokens() {
        let tokens = Tokens::parse("a")
            .unwrap()
            .with(Tokens::parse("b").unwrap());
        assert!(tokens.allow(&headers("Bearer a")));
        assert!(tokens.allow(&headers("Bearer b")));
    }
}
