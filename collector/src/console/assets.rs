//! The console's files, compiled into the binary from `dashboards/console/`, so a
//! collector serves its console with no other install step and without the network.

/// One embedded file.
pub struct Asset {
    pub name: &'static str,
    pub content_type: &'static str,
    pub body: &'static [u8],
}

macro_rules! asset {
    ($name:literal, $content_type:expr) => {
        Asset {
            name: $name,
            content_type: $content_type,
            body: include_bytes!(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../dashboards/console/",
                $name
            )),
        }
    };
}

const JS: &str = "text/javascript; charset=utf-8";

/// Every file of the console (a test checks the folder holds no other).
pub const ASSETS: &[Asset] = &[
    asset!("index.html", "text/html; charset=utf-8"),
    asset!("login.html", "text/html; charset=utf-8"),
    asset!("console.css", "text/css; charset=utf-8"),
    asset!("alerts.js", JS),
    asset!("api.js", JS),
    asset!("app.js", JS),
    asset!("charts.js", JS),
    asset!("dashboards.js", JS),
    asset!("dom.js", JS),
    asset!("fleet.js", JS),
    asset!("login.js", JS),
    asset!("rules.js", JS),
    asset!("search.js", JS),
];

/// The embedded file called `name`.
pub fn find(name: &str) -> Option<&'static Asset> {
    ASSETS.iter().find(|asset| asset.name == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn console_dir() -> std::path::PathBuf {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../dashboards/console")
    }

    #[test]
    fn every_file_of_the_console_folder_is_embedded() {
        let mut on_disk: Vec<String> = std::fs::read_dir(console_dir())
            .expect("dashboards/console")
            .map(|entry| {
                entry
                    .expect("entry")
                    .file_name()
                    .to_string_lossy()
                    .into_owned()
            })
            .collect();
        on_disk.sort();
        let mut embedded: Vec<String> = ASSETS.iter().map(|a| a.name.to_string()).collect();
        embedded.sort();
        assert_eq!(on_disk, embedded);
    }

    /// The console must work offline and leak nothing to third parties: no file may
    /// name another host (the SVG namespace is a name, never fetched).
    #[test]
    fn no_console_file_refers_to_another_host() {
        for asset in ASSETS {
            let text = std::str::from_utf8(asset.body).expect("console files are UTF-8");
            let text = text.replace("http://www.w3.org/2000/svg", "");
            for scheme in ["http://", "https://", "//cdn", "ws://", "wss://"] {
                assert!(
                    !text.contains(scheme),
                    "{} names another host ({scheme})",
                    asset.name
                );
            }
            assert!(
                !text.contains("innerHTML") && !text.contains("eval("),
                "{} builds markup or code from strings",
                asset.name
            );
        }
    }

    #[test]
    fn pages_load_scripts_and_styles_only_from_files_not_inline() {
        for page in ["index.html", "login.html"] {
            let text = std::str::from_utf8(find(page).expect(page).body).expect("utf-8");
            assert!(!text.contains("<script>"), "{page} has an inline script");
            assert!(!text.contains("style="), "{page} has an inline style");
            let handler = text.match_indices(" on").any(|(at, _)| {
                let rest = &text[at + 3..];
                let name_len = rest.bytes().take_while(u8::is_ascii_lowercase).count();
                name_len > 0 && rest[name_len..].starts_with('=')
            });
            assert!(!handler, "{page} has an inline event handler");
        }
    }
}
