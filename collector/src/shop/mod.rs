//! The reference shop service: accounts with MFA, a cart and a form, built as a defended
//! service should be, and streaming its audit trail into the collector like any source.
//!
//! Onion layers, dependencies pointing inward only:
//! - [`domain`]: entities (users and roles, carts, passwords' rules) and the invariants
//!   that hold whatever stores or serves them; no I/O, no framework types;
//! - [`application`]: the use cases (register, authenticate, MFA, cart, form), talking to
//!   storage and the audit trail through the domain's ports;
//! - [`infrastructure`]: what the ports are made of — password hashing (Argon2id), TOTP,
//!   the hash-chained audit record, SQL repositories;
//! - [`http`]: axum routes, extractors and middleware.
//!
//! The audit trail is hash-chained in the shop's database (`yagura shop audit verify`)
//! and forwarded into the collector's archive as batches signed with the shop's own key,
//! so the SIEM watches the shop like any other source.

pub mod application;
pub mod domain;
pub mod http;
pub mod infrastructure;

#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;

use crate::config::CollectorConfig;
use application::{Shop, ShopPolicy};
use domain::user::Role;
use infrastructure::database::ShopDatabase;
use infrastructure::field_cipher::FieldKeyring;
use infrastructure::password_hash::{HashCost, PasswordHasher};
use infrastructure::sql_repository::SqlShopRepository;

/// The shop as the collector runs it.
pub type ShopService = Shop<SqlShopRepository>;

/// The field-encryption keyring `[shop]` names: from the environment variable when it is
/// set, else from the file (made, mode 0600, at first start).
pub fn load_keyring(config: &CollectorConfig) -> anyhow::Result<FieldKeyring> {
    if let Some(var) = &config.shop.field_keys_env
        && let Ok(value) = std::env::var(var)
    {
        return FieldKeyring::from_env_value(&value).with_context(|| format!("${var}"));
    }
    let path = config.shop_field_keys_path();
    if path.exists() {
        Ok(FieldKeyring::load_file(&path)?)
    } else {
        Ok(FieldKeyring::create_file(&path)?)
    }
}

/// The use-case policy `[shop]` sets.
pub fn policy(config: &CollectorConfig) -> ShopPolicy {
    let shop = &config.shop;
    ShopPolicy {
        session_idle: Duration::from_secs(shop.session_idle_seconds),
        session_absolute: Duration::from_secs(shop.session_absolute_seconds),
        lockout_threshold: shop.lockout_threshold.max(1),
        lockout_duration: Duration::from_secs(shop.lockout_seconds),
        ip_failure_limit: shop.ip_failure_limit,
        ip_window: Duration::from_secs(shop.ip_window_seconds),
        mfa_required: shop
            .mfa_required_roles
            .iter()
            .filter_map(|r| Role::parse(r))
            .collect(),
        ..ShopPolicy::default()
    }
}

/// Opens (and migrates) the shop's database and builds the shop.
pub async fn open(config: &CollectorConfig) -> anyhow::Result<Arc<ShopService>> {
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("creating {}", config.data_dir.display()))?;
    let db = ShopDatabase::open(
        &config.shop_database_url(),
        config.shop.migrate_url.as_deref(),
    )
    .await
    .context("opening the shop database")?;
    let hasher = PasswordHasher::new(HashCost {
        memory_kib: config.shop.argon2_memory_kib,
        iterations: config.shop.argon2_iterations,
        parallelism: config.shop.argon2_parallelism,
    })
    .context("[shop] Argon2id parameters")?;
    let keys = load_keyring(config).context("[shop] field-encryption keyring")?;
    Ok(Arc::new(Shop::new(
        SqlShopRepository::new(db),
        hasher,
        keys,
        policy(config),
    )))
}
