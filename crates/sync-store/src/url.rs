//! Database URLs: which backend a URL names, decided in this one place for the server,
//! the store and the client.
//!
//! Guarantee: [`DatabaseUrl::parse`] accepts `postgres://…` and `postgresql://…`
//! (PostgreSQL, the URL kept whole), and `sqlite://PATH`, `sqlite:PATH` or a plain path
//! (SQLite; query parameters such as `?mode=rwc` are dropped, since the file is always
//! created when missing). It refuses a URL that names no file and any other scheme. It
//! needs no database driver, so it is there without the backend features.

use std::fmt;
use std::path::PathBuf;

/// A database URL, classified by backend.
#[derive(Clone, PartialEq, Eq)]
pub enum DatabaseUrl {
    /// A PostgreSQL server: the URL as given, for the driver to read.
    Postgres(String),
    /// An SQLite database file.
    Sqlite(PathBuf),
}

/// Why a string is not a database URL.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum UrlError {
    /// An SQLite URL or a path that names no file (`sqlite:`, `sqlite://?mode=rwc`, ``).
    #[error("no database path in {url:?}")]
    NoPath {
        /// The URL as given.
        url: String,
    },
    /// A URL whose scheme is neither PostgreSQL's nor SQLite's. Only the scheme is kept:
    /// the rest may hold a password.
    #[error(
        "{scheme}:// is not a database URL (use postgres://…, postgresql://…, sqlite://PATH, sqlite:PATH or a path)"
    )]
    UnknownScheme {
        /// What came before `://`.
        scheme: String,
    },
}

impl DatabaseUrl {
    /// Classifies a database URL; see the module documentation for what it accepts.
    ///
    /// Spaces around an SQLite path are dropped: no one means a file whose name starts or
    /// ends with a space, and an environment variable or a config value easily carries one.
    pub fn parse(url: &str) -> Result<DatabaseUrl, UrlError> {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            return Ok(DatabaseUrl::Postgres(url.to_owned()));
        }
        let path = if let Some(rest) = url.strip_prefix("sqlite://").or_else(|| url.strip_prefix("sqlite:")) {
            rest.split_once('?').map_or(rest, |(path, _query)| path)
        } else if let Some((scheme, _)) = url.split_once("://") {
            return Err(UrlError::UnknownScheme { scheme: scheme.to_owned() });
        } else {
            url
        };
        let path = path.trim();
        if path.is_empty() {
            return Err(UrlError::NoPath { url: url.to_owned() });
        }
        Ok(DatabaseUrl::Sqlite(PathBuf::from(path)))
    }
}

/// The password of a PostgreSQL URL is left out.
impl fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DatabaseUrl::Postgres(url) => f.debug_tuple("Postgres").field(&redact_url(url)).finish(),
            DatabaseUrl::Sqlite(path) => f.debug_tuple("Sqlite").field(path).finish(),
        }
    }
}

/// The URL with the password of its user info replaced by `****`, for logs and errors.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else { return url.to_owned() };
    // The user info ends at the last `@` before the path: a password may hold `@` or `/`
    // only percent-encoded, but a careless one may not be, so the last `@` is the safe end.
    match rest.rsplit_once('@') {
        Some((user_info, host)) => {
            let user = user_info.split_once(':').map_or(user_info, |(user, _password)| user);
            let hidden = if user.len() < user_info.len() { ":****" } else { "" };
            format!("{scheme}://{user}{hidden}@{host}")
        }
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sqlite(path: &str) -> Option<DatabaseUrl> {
        Some(DatabaseUrl::Sqlite(PathBuf::from(path)))
    }

    #[test]
    fn sqlite_urls_and_paths_name_files() {
        for (url, path) in [
            // The store's cases.
            ("sqlite://sync.db", "sync.db"),
            ("sqlite:///var/lib/sync/sync.db", "/var/lib/sync/sync.db"),
            ("sqlite:./data/sync.db", "./data/sync.db"),
            ("sqlite:sync.db?mode=rwc", "sync.db"),
            ("sqlite://sync.db?mode=rwc&cache=shared", "sync.db"),
            ("/tmp/plain.db", "/tmp/plain.db"),
            ("relative.db", "relative.db"),
            // The server's cases.
            ("sqlite://./sync.db", "./sync.db"),
            ("sqlite:client.db?mode=rwc", "client.db"),
            ("/var/lib/sync.db", "/var/lib/sync.db"),
            // The client's cases.
            ("sqlite:///tmp/x.db", "/tmp/x.db"),
            ("plain.db", "plain.db"),
            // The client's trimming.
            ("sqlite: spaced.db ?mode=rwc", "spaced.db"),
        ] {
            assert_eq!(DatabaseUrl::parse(url).ok(), sqlite(path), "{url}");
        }
    }

    #[test]
    fn postgres_urls_are_kept_whole() {
        for url in ["postgres://user@host/db", "postgres://x", "postgresql://sync:pw@db:5432/sync?sslmode=require"] {
            assert_eq!(DatabaseUrl::parse(url).ok(), Some(DatabaseUrl::Postgres(url.to_owned())), "{url}");
        }
    }

    #[test]
    fn urls_that_name_no_database_are_refused() {
        for url in ["sqlite://", "sqlite:?mode=rwc", "", "sqlite:", "sqlite:  ", "  "] {
            assert_eq!(DatabaseUrl::parse(url), Err(UrlError::NoPath { url: url.to_owned() }), "{url}");
        }
        let refused = DatabaseUrl::parse("mysql://root:hunter2@db/sync");
        assert_eq!(refused, Err(UrlError::UnknownScheme { scheme: "mysql".to_owned() }));
        let message = refused.map(drop).unwrap_err().to_string();
        assert!(!message.contains("hunter2"), "{message}");
    }

    #[test]
    fn debug_hides_the_password() {
        let url = DatabaseUrl::Postgres("postgres://sync:hunter2@db:5432/sync".to_owned());
        assert_eq!(format!("{url:?}"), r#"Postgres("postgres://sync:****@db:5432/sync")"#);
        let url = DatabaseUrl::Postgres("postgres://sync@db/sync".to_owned());
        assert_eq!(format!("{url:?}"), r#"Postgres("postgres://sync@db/sync")"#);
    }
}
