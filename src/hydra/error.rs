//! [`HydraError`]: why a request to Hydra, or a value in one of its answers, failed.
//!
//! The variants are what a caller may branch on: [`HydraError::NotFound`] (ask
//! [`HydraError::is_not_found`]) for a job, evaluation or build that does not exist, the others
//! for transport failures, answers that are not the expected JSON, and values that do not pass
//! the checks of the accessors.

use thiserror::Error;

use crate::fetch::FetchError;

/// Why a Hydra request or a value in its answer failed.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum HydraError {
    /// Hydra answered 404 (or 410), with its own message when it gave one, e.g. "There is no
    /// successful build to redirect to." or "Evaluation 123 doesn't exist.".
    #[error("{url}: not found on Hydra: {message}")]
    NotFound {
        /// The URL requested.
        url: String,
        /// Hydra's message, or the HTTP status when it gave none.
        message: String,
    },
    /// The request failed in transport or with another HTTP status (the error names the URL).
    #[error(transparent)]
    Fetch(FetchError),
    /// The answer was an HTML page, not JSON.
    #[error(
        "{url}: the answer is an HTML page{title} instead of JSON: the server (or a proxy in front \
         of it) ignored `Accept: application/json` or answered with an error page"
    )]
    Html {
        /// The URL requested.
        url: String,
        /// ` ("<page title>")`, or empty when the page has no title.
        title: String,
    },
    /// The answer is not JSON, or not JSON of the expected shape.
    #[error("{url}: {reason}")]
    Json {
        /// The URL requested.
        url: String,
        /// What is wrong, with the line and column of the answer.
        reason: String,
    },
    /// Hydra answered with its `{"error": "..."}` object although the status was not 404.
    #[error("{url}: Hydra reported an error: {message}")]
    Server {
        /// The URL requested.
        url: String,
        /// Hydra's message.
        message: String,
    },
    /// A value in an answer is missing or not acceptable.
    #[error("{url}: {problem}")]
    Invalid {
        /// The URL of the answer the value came from (empty if the value was built by hand).
        url: String,
        /// The field and what is wrong with it.
        problem: String,
    },
    /// A project, jobset or job name cannot be put into a request URL.
    #[error("invalid Hydra {what} name {name:?}: {reason}")]
    InvalidName {
        /// "project", "jobset" or "job".
        what: &'static str,
        /// The name, as given.
        name: String,
        /// What is wrong with it.
        reason: &'static str,
    },
}

impl HydraError {
    /// Whether Hydra answered 404: the job, evaluation or build does not exist.
    pub fn is_not_found(&self) -> bool {
        matches!(self, HydraError::NotFound { .. })
    }

    /// A [`HydraError::Invalid`] for the answer read from `url`.
    pub(super) fn invalid(url: &str, problem: impl Into<String>) -> HydraError {
        HydraError::Invalid {
            url: url.to_string(),
            problem: problem.into(),
        }
    }
}
