//! [`Auth`]: a token check on the `authorization` request metadata.

use crate::{Before, Interceptor, Status, StatusCode};

/// Checks the token in the `authorization` request metadata (`Bearer <token>`, or the bare
/// token) with a user-supplied verifier, rejects calls without a valid one with
/// `Unauthenticated`, and puts the identity the verifier returns into the request metadata
/// as [`Auth::IDENTITY`] (`auth-identity`), where the handler reads it
/// ([`crate::Request::metadata`]). Every `auth-identity` field the caller sent is removed
/// first, on every call (services exempted with [`Auth::allow`] included), so a caller cannot
/// forge its identity.
///
/// The verifier is `Fn(&[u8]) -> Option<I>` with `I: AsRef<[u8]>`: the token in, the
/// identity out (`None`: not valid). It runs on the core, once per call, and must not
/// block (for a lookup that must await, write an [`crate::AsyncInterceptor`]). With a
/// verifier that returns a borrowed or shared identity (`&'static str`, `Arc<str>`), a call
/// costs no allocation.
///
/// `$sys` calls are checked too, unless exempted with [`Auth::allow`] (then a client can
/// resolve requirements without a token).
pub struct Auth<F> {
    verify: F,
    allow: Vec<Box<[u8]>>,
}

impl<F> std::fmt::Debug for Auth<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth")
            .field("allow", &self.allow.len())
            .finish_non_exhaustive()
    }
}

impl Auth<()> {
    /// The request metadata field that carries the verified identity to the handler.
    pub const IDENTITY: &'static str = "auth-identity";
    /// The request metadata field that carries the token.
    pub const AUTHORIZATION: &'static str = "authorization";
}

impl<F, I> Auth<F>
where
    F: Fn(&[u8]) -> Option<I> + Send + Sync + 'static,
    I: AsRef<[u8]>,
{
    /// A check with `verify` (token → identity).
    pub fn new(verify: F) -> Self {
        Self {
            verify,
            allow: Vec::new(),
        }
    }

    /// Lets calls to every version of service `name` (e.g. `"$sys"`) through without a
    /// token (no identity is set for them, and one the caller sent is removed).
    pub fn allow(mut self, name: &str) -> Self {
        self.allow.push(name.as_bytes().into());
        self
    }

    fn allowed(&self, service: Option<&[u8]>) -> bool {
        let Some(s) = service else { return false };
        let name = s.iter().rposition(|&b| b == b'@').map_or(s, |at| &s[..at]);
        self.allow.iter().any(|a| **a == *name)
    }
}

/// The token of an `authorization` value: after a `Bearer ` scheme (any case), or all of it.
fn token(value: &[u8]) -> &[u8] {
    match value.get(..7) {
        Some(scheme) if scheme.eq_ignore_ascii_case(b"bearer ") => value[7..].trim_ascii(),
        _ => value.trim_ascii(),
    }
}

impl<F, I> Interceptor for Auth<F>
where
    F: Fn(&[u8]) -> Option<I> + Send + Sync + 'static,
    I: AsRef<[u8]>,
{
    fn before(&self, call: &mut Before<'_>) -> Result<(), Status> {
        // Only this interceptor vouches for an identity: a caller's own `auth-identity` is
        // dropped on every call, services exempted with `allow` included.
        call.remove(Auth::IDENTITY);
        if self.allowed(call.service()) {
            return Ok(());
        }
        let Some(value) = call.metadata(Auth::AUTHORIZATION) else {
            return Err(Status::new(
                StatusCode::Unauthenticated,
                "no authorization metadata: send `authorization: Bearer <token>` (Auth \
                 interceptor)",
            ));
        };
        let token = token(value);
        if token.is_empty() {
            return Err(Status::new(
                StatusCode::Unauthenticated,
                "the authorization metadata holds no token (Auth interceptor)",
            ));
        }
        match (self.verify)(token) {
            Some(identity) => {
                // Copied into the connection's reused header buffer: no allocation.
                call.insert(Auth::IDENTITY, identity.as_ref());
                Ok(())
            }
            None => Err(Status::new(
                StatusCode::Unauthenticated,
                "the token in the authorization metadata was not accepted (Auth interceptor)",
            )),
        }
    }
}
