//! Who may use the dashboard, and what every answer carries. Owns the access token
//! (`DATA_DIR/dashboard.token`, mode 0600, created at the first start), the one-time login codes
//! `clawbox dashboard` hands out, the cookie check (401 without it), the `Origin` check of every
//! state-changing request, and the security headers. What the pages show is `pages.rs`'s.
//!
//! A login code is 128 random bits; only its SHA-256 is written, as a file name under
//! `DATA_DIR/dashboard-logins/`. Redeeming removes the file, so of two requests with one code
//! exactly one wins, before and after a host restart; a code older than [`LOGIN_CODE_TTL`] is
//! refused. The cookie carries the token itself (`HttpOnly`, `SameSite=Strict`), so a browser
//! stays signed in across host restarts until the token file is deleted.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

use crate::HostError;
use crate::config::Config;

/// The cookie that carries the token.
pub const COOKIE: &str = "clawbox_dashboard";
/// How long a login link printed by `clawbox dashboard` can be used.
pub const LOGIN_CODE_TTL: Duration = Duration::from_secs(10 * 60);

/// The Content-Security-Policy of every answer: scripts and styles only from the dashboard's
/// own embedded files (no inline script, no inline style), no framing, no plugins, forms only
/// to the dashboard.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// The dashboard's access token, shared by the request checks.
#[derive(Clone)]
pub struct Access {
    token: Arc<str>,
}

impl Access {
    /// Reads the token, creating it (0600) at the first start.
    pub fn load_or_create(config: &Config) -> Result<Access, HostError> {
        let path = config.dashboard_token_path();
        match std::fs::read_to_string(&path) {
            Ok(text) if valid_token(text.trim()) => {
                // A token others can read is no secret: keep it private even if someone
                // loosened the mode.
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
                    .map_err(|e| HostError::io("chmod", &path, e))?;
                return Ok(Access {
                    token: text.trim().into(),
                });
            }
            Ok(_) => {
                return Err(HostError::Config(format!(
                    "{} does not hold a dashboard token (64 hex digits); delete it to get a new one",
                    path.display()
                )));
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(HostError::io("read", &path, e)),
        }
        let token = random_hex(/*bytes*/ 32);
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .map_err(|e| HostError::io("create", &path, e))?;
        file.write_all(format!("{token}\n").as_bytes())
            .and_then(|()| file.sync_all())
            .map_err(|e| HostError::io("write", &path, e))?;
        Ok(Access {
            token: token.into(),
        })
    }

    /// Whether the request's cookie carries the token (compared in constant time).
    pub fn signed_in(&self, headers: &HeaderMap) -> bool {
        cookie(headers, COOKIE).is_some_and(|given| constant_time_eq(given, &self.token))
    }

    /// The `Set-Cookie` value that signs a browser in.
    pub fn cookie_header(&self) -> String {
        format!("{COOKIE}={}; Path=/; HttpOnly; SameSite=Strict", self.token)
    }
}

fn valid_token(text: &str) -> bool {
    text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit())
}

fn random_hex(bytes: usize) -> String {
    use rand::RngCore;
    let mut buf = vec![0u8; bytes];
    rand::rng().fill_bytes(&mut buf);
    buf.iter().map(|b| format!("{b:02x}")).collect()
}

fn code_file_name(code: &str) -> String {
    Sha256::digest(code.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Creates a one-time login code for `clawbox dashboard` (the host need not run: the code
/// waits in `DATA_DIR` until it is used or expires).
pub fn new_login_code(config: &Config) -> Result<String, HostError> {
    let dir = config.dashboard_logins_dir();
    std::fs::create_dir_all(&dir).map_err(|e| HostError::io("create", &dir, e))?;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))
        .map_err(|e| HostError::io("chmod", &dir, e))?;
    forget_expired_codes(&dir);
    let code = random_hex(/*bytes*/ 16);
    let path = dir.join(code_file_name(&code));
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .map_err(|e| HostError::io("create", &path, e))?;
    Ok(code)
}

/// Uses up a login code: `true` when it existed and had not expired.
pub fn redeem_login_code(config: &Config, code: &str) -> bool {
    if code.len() != 32 || !code.bytes().all(|b| b.is_ascii_hexdigit()) {
        return false;
    }
    let path = config.dashboard_logins_dir().join(code_file_name(code));
    let Ok(meta) = std::fs::metadata(&path) else {
        return false;
    };
    let fresh = meta
        .modified()
        .ok()
        .and_then(|at| at.elapsed().ok())
        .is_some_and(|age| age <= LOGIN_CODE_TTL);
    // Removing is what spends the code: of two requests with it, only one removes the file.
    std::fs::remove_file(&path).is_ok() && fresh
}

/// Drops codes nobody used in time, so the directory does not grow.
fn forget_expired_codes(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let expired = entry
            .metadata()
            .ok()
            .and_then(|m| m.modified().ok())
            .and_then(|at| at.elapsed().ok())
            .is_some_and(|age| age > LOGIN_CODE_TTL);
        if expired {
            // Another `clawbox dashboard` may have removed it first; either way it is gone.
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// The value of cookie `name` in the request's `Cookie` headers.
pub fn cookie<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

fn constant_time_eq(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// Whether a state-changing request comes from a page of the dashboard itself: its `Origin`
/// names the host the request was sent to (`Host`, as a reverse proxy passes it on). A request
/// without `Origin` is refused too: every browser sends it with a POST.
pub fn same_origin(headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let Some(host) = headers.get(header::HOST).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let authority = origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"));
    authority.is_some_and(|a| a.eq_ignore_ascii_case(host))
}

/// The gate in front of every route but `/login` and the embedded assets: a signed-in browser,
/// and for anything but GET/HEAD the dashboard's own origin.
pub async fn require(State(access): State<Access>, request: Request, next: Next) -> Response {
    if !access.signed_in(request.headers()) {
        return refusal(
            StatusCode::UNAUTHORIZED,
            "Not signed in. Run `clawbox dashboard` on the host's machine and open the link it prints.",
        );
    }
    let safe = matches!(*request.method(), Method::GET | Method::HEAD);
    if !safe && !same_origin(request.headers()) {
        return refusal(
            StatusCode::FORBIDDEN,
            "This request did not come from the dashboard's own pages (Origin check).",
        );
    }
    next.run(request).await
}

fn refusal(status: StatusCode, text: &'static str) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        text,
    )
        .into_response()
}

/// Adds the security headers to every answer, refusals included.
pub async fn headers(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let h = response.headers_mut();
    for (name, value) in [
        (header::CONTENT_SECURITY_POLICY, CSP),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::CACHE_CONTROL, "no-store"),
        (
            header::HeaderName::from_static("cross-origin-opener-policy"),
            "same-origin",
        ),
        (
            header::HeaderName::from_static("cross-origin-resource-policy"),
            "same-origin",
        ),
    ] {
        h.insert(name, HeaderValue::from_static(value));
    }
    response
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn origin_must_name_the_host() {
        for (pairs, ok) in [
            (
                &[
                    ("origin", "http://127.0.0.1:7878"),
                    ("host", "127.0.0.1:7878"),
                ][..],
                true,
            ),
            (
                &[("origin", "https://dash.example"), ("host", "dash.example")][..],
                true,
            ),
            (
                &[
                    ("origin", "http://evil.example"),
                    ("host", "127.0.0.1:7878"),
                ][..],
                false,
            ),
            (
                &[
                    ("origin", "http://127.0.0.1:7879"),
                    ("host", "127.0.0.1:7878"),
                ][..],
                false,
            ),
            (&[("origin", "null"), ("host", "127.0.0.1:7878")][..], false),
            (&[("host", "127.0.0.1:7878")][..], false),
            (&[("origin", "http://127.0.0.1:7878")][..], false),
        ] {
            assert_eq!(same_origin(&headers(pairs)), ok, "{pairs:?}");
        }
    }

    #[test]
    fn cookie_is_found_among_others() {
        let h = headers(&[("cookie", "a=1; clawbox_dashboard=abc ; b=2")]);
        assert_eq!(cookie(&h, COOKIE), Some("abc"));
        assert_eq!(
            cookie(&headers(&[("cookie", "xclawbox_dashboard=1")]), COOKIE),
            None
        );
        assert!(constant_time_eq("abc", "abc"));
        assert!(!constant_time_eq("abc", "abd"));
        assert!(!constant_time_eq("abc", "ab"));
    }

    #[test]
    fn a_login_code_works_once() {
        let dir = tempfile::tempdir().unwrap();
        let config = Config::from_lookup(
            |k| (k == "DATA_DIR").then(|| dir.path().display().to_string()),
            dir.path(),
        )
        .unwrap();
        let code = new_login_code(&config).unwrap();
        let other = if code.starts_with('0') { "1" } else { "0" };
        assert!(!redeem_login_code(
            &config,
            &format!("{other}{}", &code[1..])
        ));
        assert!(redeem_login_code(&config, &code));
        assert!(!redeem_login_code(&config, &code));
        assert!(!redeem_login_code(&config, "../../etc/passwd"));
        // A code older than its ten minutes is refused (and spent).
        let old = new_login_code(&config).unwrap();
        let file = std::fs::File::options()
            .write(true)
            .open(config.dashboard_logins_dir().join(code_file_name(&old)))
            .unwrap();
        file.set_modified(std::time::SystemTime::now() - LOGIN_CODE_TTL - Duration::from_secs(1))
            .unwrap();
        assert!(!redeem_login_code(&config, &old));
        assert_eq!(
            std::fs::read_dir(config.dashboard_logins_dir())
                .unwrap()
                .count(),
            0
        );
    }

    #[test]
    fn the_token_is_private_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let config = Config::from_lookup(
            |k| (k == "DATA_DIR").then(|| dir.path().display().to_string()),
            dir.path(),
        )
        .unwrap();
        let first = Access::load_or_create(&config).unwrap();
        let mode = std::fs::metadata(config.dashboard_token_path())
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let again = Access::load_or_create(&config).unwrap();
        assert_eq!(first.token, again.token);
        // Deleting the file signs every browser out: the next start makes a new token.
        std::fs::remove_file(config.dashboard_token_path()).unwrap();
        let fresh = Access::load_or_create(&config).unwrap();
        assert_ne!(first.token, fresh.token);
        std::fs::write(config.dashboard_token_path(), "short").unwrap();
        assert!(Access::load_or_create(&config).is_err());
    }
}
