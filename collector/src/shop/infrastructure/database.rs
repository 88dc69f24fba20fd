//! The shop's database: SQLite by default, PostgreSQL by URL, reached through sqlx's Any
//! driver so one set of portable queries (`$n` parameters, standard SQL) serves both.
//!
//! Least privilege on PostgreSQL: when a separate `migrate_url` is configured, the schema
//! is created and migrated over that (owner) connection, then the service's own role —
//! the user of `database_url` — is granted exactly what the service does: reading and
//! writing its tables, and only *inserting* into the audit trail (which it can therefore
//! never rewrite). The service connection can run no DDL. `docs/operations.md` gives the
//! SQL for setting the roles up.

use std::str::FromStr as _;
use std::sync::Once;
use std::time::Duration;

use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::migrate::Migrator;
use sqlx::{AnyPool, ConnectOptions as _, Connection as _, Executor as _};

/// One set of migrations for both engines: the schema is written in their common SQL.
static MIGRATIONS: Migrator = sqlx::migrate!("./shop_migrations");

/// The PostgreSQL schema the shop's tables live in.
pub const POSTGRES_SCHEMA: &str = "shop";

/// Tables the service reads and writes.
const SERVICE_TABLES: &[&str] = &[
    "users",
    "recovery_codes",
    "sessions",
    "carts",
    "cart_items",
    "form_submissions",
    "audit_forwarding",
];
/// The audit trail: the service may only read and append.
const AUDIT_TABLE: &str = "audit_log";

#[derive(Debug, thiserror::Error)]
pub enum DatabaseError {
    #[error("shop database URL: {0}")]
    Url(String),
    #[error("shop database: {0}")]
    Sql(#[from] sqlx::Error),
    #[error("shop database migrations: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

/// Which engine a URL names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    pub fn of_url(url: &str) -> Result<Self, DatabaseError> {
        if url.starts_with("sqlite:") {
            Ok(Backend::Sqlite)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(Backend::Postgres)
        } else {
            Err(DatabaseError::Url(
                "expected sqlite:… or postgres://… (the password, if any, is not shown)".into(),
            ))
        }
    }
}

/// An open, migrated shop database.
#[derive(Debug, Clone)]
pub struct ShopDatabase {
    pub pool: AnyPool,
    pub backend: Backend,
}

fn install_drivers() {
    static ONCE: Once = Once::new();
    ONCE.call_once(sqlx::any::install_default_drivers);
}

fn options(url: &str) -> Result<AnyConnectOptions, DatabaseError> {
    AnyConnectOptions::from_str(url)
        .map(|o| o.disable_statement_logging())
        .map_err(|e| DatabaseError::Url(redact(&e.to_string())))
}

/// Drops anything that looks like a password from a message about a URL.
fn redact(text: &str) -> String {
    match (text.find("://"), text.find('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            format!("{}://…{}", &text[..scheme], &text[at..])
        }
        _ => text.to_string(),
    }
}

/// The role a PostgreSQL URL connects as.
fn url_user(url: &str) -> Option<String> {
    let rest = url.split_once("://")?.1;
    let (authority, _) = rest.split_once('@')?;
    let user = authority.split(':').next()?;
    (!user.is_empty()).then(|| user.to_string())
}

/// A PostgreSQL identifier, quoted.
fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

impl ShopDatabase {
    /// Opens `url`, migrating first: over `migrate_url` (the owner role) when given, then
    /// granting the service role its privileges; else over `url` itself.
    pub async fn open(url: &str, migrate_url: Option<&str>) -> Result<Self, DatabaseError> {
        install_drivers();
        let backend = Backend::of_url(url)?;
        match migrate_url {
            Some(owner_url) if backend == Backend::Postgres => {
                if Backend::of_url(owner_url)? != Backend::Postgres {
                    return Err(DatabaseError::Url(
                        "migrate_url must name the same PostgreSQL database".into(),
                    ));
                }
                let service_role = url_user(url).ok_or_else(|| {
                    DatabaseError::Url("database_url must name the service role".into())
                })?;
                migrate_as_owner(owner_url, &service_role).await?;
            }
            Some(_) => {
                return Err(DatabaseError::Url(
                    "migrate_url is for PostgreSQL (SQLite has no roles)".into(),
                ));
            }
            None => {}
        }
        let pool = pool(url, backend).await?;
        if migrate_url.is_none() {
            if backend == Backend::Postgres {
                pool.execute("CREATE SCHEMA IF NOT EXISTS shop").await?;
            }
            MIGRATIONS.run(&pool).await?;
        }
        Ok(ShopDatabase { pool, backend })
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }
}

async fn pool(url: &str, backend: Backend) -> Result<AnyPool, DatabaseError> {
    let options = options(url)?;
    let pool = AnyPoolOptions::new()
        .max_connections(match backend {
            // One writer at a time in SQLite anyway; readers share WAL snapshots.
            Backend::Sqlite => 4,
            Backend::Postgres => 16,
        })
        .acquire_timeout(Duration::from_secs(10))
        .after_connect(move |conn, _| {
            Box::pin(async move {
                match backend {
                    Backend::Sqlite => {
                        conn.execute(
                            "PRAGMA journal_mode = WAL; PRAGMA foreign_keys = ON; \
                             PRAGMA busy_timeout = 10000",
                        )
                        .await?;
                    }
                    Backend::Postgres => {
                        conn.execute("SET search_path TO shop").await?;
                    }
                }
                Ok(())
            })
        })
        .connect_with(options)
        .await?;
    Ok(pool)
}

/// Creates and migrates the schema as its owner, then grants the service role.
async fn migrate_as_owner(owner_url: &str, service_role: &str) -> Result<(), DatabaseError> {
    {
        let mut owner = options(owner_url)?.connect().await?;
        owner.execute("CREATE SCHEMA IF NOT EXISTS shop").await?;
        owner.close().await?;
    }
    let owner = AnyPoolOptions::new()
        .max_connections(1)
        .after_connect(|conn, _| {
            Box::pin(async move {
                conn.execute("SET search_path TO shop").await?;
                Ok(())
            })
        })
        .connect_with(options(owner_url)?)
        .await?;
    MIGRATIONS.run(&owner).await?;
    let role = quote_ident(service_role);
    let mut grants = vec![
        format!("REVOKE ALL ON SCHEMA {POSTGRES_SCHEMA} FROM PUBLIC"),
        format!("GRANT USAGE ON SCHEMA {POSTGRES_SCHEMA} TO {role}"),
        format!("REVOKE ALL ON ALL TABLES IN SCHEMA {POSTGRES_SCHEMA} FROM {role}"),
        format!("GRANT SELECT, INSERT ON {AUDIT_TABLE} TO {role}"),
    ];
    for table in SERVICE_TABLES {
        grants.push(format!(
            "GRANT SELECT, INSERT, UPDATE, DELETE ON {table} TO {role}"
        ));
    }
    for statement in grants {
        // Built from constants and a quoted identifier only.
        sqlx::raw_sql(sqlx::AssertSqlSafe(statement))
            .execute(&owner)
            .await?;
    }
    owner.close().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert_eq!(
            Backend::of_url("sqlite:///tmp/x.db").expect("sqlite"),
            Backend::Sqlite
        );
        assert_eq!(
            Backend::of_url("postgres://app@127.0.0.1/shop").expect("pg"),
            Backend::Postgres
        );
        assert!(Backend::of_url("mysql://x").is_err());
        assert_eq!(
            url_user("postgres://app:secret@127.0.0.1/shop").as_deref(),
            Some("app")
        );
        assert_eq!(url_user("postgres://127.0.0.1/shop"), None);
        assert_eq!(
            redact("bad url postgres://app:secret@host/db"),
            "bad url postgres://…@host/db"
        );
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
    }
}
