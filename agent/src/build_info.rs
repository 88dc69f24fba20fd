//! What a binary was built from, for `yagura version --deps` and `yagura-agent version
//! --deps`: every package of the workspace's `Cargo.lock` (compiled into the binary) that
//! the binary's crate depends on, directly or not, with its exact version and source — so
//! an operator can check a deployed binary against security advisories without the
//! source tree (`cargo deny check advisories` where the advisory database is reachable).
//!
//! The lock file records a workspace crate's dev-dependencies among its dependencies, so
//! the list can name a few test-only packages too: it errs on the side of listing more.

use std::collections::{BTreeSet, HashMap, VecDeque};

use serde::Deserialize;

/// The workspace's lock file, as the binaries were built with it.
pub const CARGO_LOCK: &str = include_str!("../../Cargo.lock");

#[derive(Debug, Deserialize)]
struct LockFile {
    #[serde(default, rename = "package")]
    packages: Vec<LockedPackage>,
}

#[derive(Debug, Deserialize)]
struct LockedPackage {
    name: String,
    version: String,
    source: Option<String>,
    #[serde(default)]
    dependencies: Vec<String>,
}

/// One package the binary was built with.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct LockedDependency {
    pub name: String,
    pub version: String,
    /// `registry+https://…`, `git+…`, or `None` for the workspace's own crates.
    pub source: Option<String>,
}

/// Every package `root` (a crate name in `lock`) depends on, itself excluded, sorted by
/// name and version.
pub fn locked_dependencies(lock: &str, root: &str) -> Result<Vec<LockedDependency>, String> {
    let lock: LockFile = toml::from_str(lock).map_err(|e| format!("Cargo.lock: {e}"))?;
    let mut by_name: HashMap<&str, Vec<usize>> = HashMap::new();
    for (i, package) in lock.packages.iter().enumerate() {
        by_name.entry(package.name.as_str()).or_default().push(i);
    }
    // A dependency is written `name`, or `name version` (or `name version (source)`)
    // when several versions of `name` are locked.
    let resolve = |reference: &str| -> Result<usize, String> {
        let mut words = reference.split_whitespace();
        let name = words.next().unwrap_or_default();
        let version = words.next();
        let candidates = by_name
            .get(name)
            .ok_or_else(|| format!("Cargo.lock: `{reference}` is not a locked package"))?;
        candidates
            .iter()
            .copied()
            .find(|&i| version.is_none_or(|v| lock.packages[i].version == v))
            .ok_or_else(|| format!("Cargo.lock: no locked package matches `{reference}`"))
    };
    let start = by_name
        .get(root)
        .and_then(|c| c.first().copied())
        .ok_or_else(|| format!("Cargo.lock: no package `{root}`"))?;
    let mut seen = BTreeSet::from([start]);
    let mut queue = VecDeque::from([start]);
    while let Some(i) = queue.pop_front() {
        for reference in &lock.packages[i].dependencies {
            let dependency = resolve(reference)?;
            if seen.insert(dependency) {
                queue.push_back(dependency);
            }
        }
    }
    let mut list: Vec<LockedDependency> = seen
        .into_iter()
        .filter(|&i| i != start)
        .map(|i| {
            let p = &lock.packages[i];
            LockedDependency {
                name: p.name.clone(),
                version: p.version.clone(),
                source: p.source.clone(),
            }
        })
        .collect();
    list.sort();
    Ok(list)
}

/// The `version --deps` listing: `name version` per line, `(workspace)` for the
/// project's own crates, `(git …)` for anything not from crates.io.
pub fn format_dependencies(list: &[LockedDependency]) -> String {
    let mut out = String::new();
    for dependency in list {
        out.push_str(&dependency.name);
        out.push(' ');
        out.push_str(&dependency.version);
        match dependency.source.as_deref() {
            None => out.push_str(" (workspace)"),
            Some(source)
                if source.starts_with("registry+https://github.com/rust-lang/crates.io-index") => {}
            Some(source) => {
                out.push_str(" (");
                out.push_str(source);
                out.push(')');
            }
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOCK: &str = r#"
version = 4

[[package]]
name = "app"
version = "0.1.0"
dependencies = ["lib", "old 1.0.0", "shared"]

[[package]]
name = "lib"
version = "2.3.4"
source = "registry+https://github.com/rust-lang/crates.io-index"
dependencies = ["old 2.0.0"]

[[package]]
name = "old"
version = "1.0.0"
source = "registry+https://github.com/rust-lang/crates.io-index"

[[package]]
name = "old"
version = "2.0.0"
source = "registry+https://github.com/rust-lang/crates.io-index"

[[package]]
name = "shared"
version = "0.1.0"

[[package]]
name = "unrelated"
version = "9.9.9"
source = "registry+https://github.com/rust-lang/crates.io-index"
"#;

    #[test]
    fn the_closure_follows_versioned_references_and_leaves_out_the_rest() {
        let list = locked_dependencies(LOCK, "app").expect("closure");
        let named: Vec<String> = list
            .iter()
            .map(|d| format!("{} {}", d.name, d.version))
            .collect();
        assert_eq!(
            named,
            ["lib 2.3.4", "old 1.0.0", "old 2.0.0", "shared 0.1.0"]
        );
        assert_eq!(
            format_dependencies(&list),
            "lib 2.3.4\nold 1.0.0\nold 2.0.0\nshared 0.1.0 (workspace)\n"
        );
        assert!(locked_dependencies(LOCK, "nothing").is_err());
        let broken = LOCK.replace("\"lib\", ", "\"missing\", ");
        assert!(locked_dependencies(&broken, "app").is_err());
    }

    #[test]
    fn this_workspace_lock_lists_what_the_binaries_are_built_with() {
        for root in ["yagura-agent", "yagura-collector"] {
            let list = locked_dependencies(CARGO_LOCK, root).expect(root);
            for expected in ["rustls", "ed25519-dalek", "zstd", "tokio"] {
                assert!(
                    list.iter().any(|d| d.name == expected),
                    "{root}: {expected}"
                );
            }
        }
        let collector = locked_dependencies(CARGO_LOCK, "yagura-collector").expect("collector");
        assert!(collector.iter().any(|d| d.name == "tantivy"));
        let agent = locked_dependencies(CARGO_LOCK, "yagura-agent").expect("agent");
        assert!(
            !agent.iter().any(|d| d.name == "tantivy"),
            "the agent has no index"
        );
    }
}
