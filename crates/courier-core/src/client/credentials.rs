//! Credentials: static, or fetched before every connect by a provider.

use std::fmt;
use std::future::Future;
use std::pin::Pin;

use crate::error::BoxError;

/// A user name and optional password. `Debug` never shows the password.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    username: String,
    password: Option<String>,
}

impl Credentials {
    /// Credentials with a password.
    pub fn new(username: impl Into<String>, password: impl Into<String>) -> Self {
        Credentials {
            username: username.into(),
            password: Some(password.into()),
        }
    }

    /// A user name without a password.
    pub fn username_only(username: impl Into<String>) -> Self {
        Credentials {
            username: username.into(),
            password: None,
        }
    }

    /// The user name.
    pub fn username(&self) -> &str {
        &self.username
    }

    pub(crate) fn password(&self) -> Option<&str> {
        self.password.as_deref()
    }
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// A boxed, sendable future.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Fetches credentials before every connect and reconnect (the Go
/// `WithCredentialFetcher`): rotate tokens without restarting the client.
///
/// Any `Fn() -> impl Future<Output = Result<Credentials, E>>` is a provider.
pub trait CredentialProvider: Send + Sync + 'static {
    /// Fetch the credentials for the next connection attempt.
    ///
    /// # Errors
    ///
    /// Any error fails this attempt with `ConnectError::Credentials`; the client backs
    /// off and asks again on the next attempt.
    fn credentials(&self) -> BoxFuture<'_, Result<Credentials, BoxError>>;
}

impl<F, Fut, E> CredentialProvider for F
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Credentials, E>> + Send + 'static,
    E: Into<BoxError>,
{
    fn credentials(&self) -> BoxFuture<'_, Result<Credentials, BoxError>> {
        let fut = self();
        Box::pin(async move { fut.await.map_err(Into::into) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_redacts_the_password() {
        let c = Credentials::new("alice", "hunter2");
        let shown = format!("{c:?}");
        assert!(shown.contains("alice"));
        assert!(!shown.contains("hunter2"));
    }
}
