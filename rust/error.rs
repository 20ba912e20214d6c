//! The one error type of the core. The binding layer (`py.rs`) maps it to Python
//! exceptions in exactly one place; the core never panics on user input.

use std::fmt;

/// An argument with a value the core cannot accept.
///
/// `arg` names the argument as the user sees it (`"fmt"`, `"bits"`, `"codes"`, …);
/// `msg` says what was expected and what was seen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    pub arg: String,
    pub msg: String,
}

impl Error {
    /// Build an error for argument `arg`.
    pub fn value(arg: impl Into<String>, msg: impl Into<String>) -> Self {
        Error { arg: arg.into(), msg: msg.into() }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.arg, self.msg)
    }
}

impl std::error::Error for Error {}

/// Result with the core's error.
pub type Result<T> = std::result::Result<T, Error>;
