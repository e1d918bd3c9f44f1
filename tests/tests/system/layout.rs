//! docs/layout.md names every source file of the three crates, and only files that exist:
//! each table row's first cell is a path from the folder the nearest heading above it names
//! (`telemetry/src/`, `service-a/src/`, `service-b/src/`).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// The source folders the layout covers, from the repository root.
const ROOTS: [&str; 3] = ["telemetry/src/", "service-a/src/", "service-b/src/"];

fn repository() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ is inside the repository")
        .to_path_buf()
}

/// Every `.rs` file under `dir`, as a path from the repository root with `/` separators.
fn sources(repository: &Path, dir: &Path, found: &mut BTreeSet<String>) {
    for entry in std::fs::read_dir(dir).expect("a source folder") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            sources(repository, &path, found);
        } else if path.extension().is_some_and(|e| e == "rs") {
            let relative = path
                .strip_prefix(repository)
                .expect("inside the repository");
            found.insert(relative.to_string_lossy().replace('\\', "/"));
        }
    }
}

/// The files the layout names: each table row whose first cell is a backticked `.rs` path,
/// joined to the source folder of the nearest heading above it that names one.
fn named(layout: &str) -> BTreeSet<String> {
    let mut root: Option<&str> = None;
    let mut named = BTreeSet::new();
    for line in layout.lines() {
        if line.starts_with('#') {
            if let Some(heading_root) = ROOTS.iter().find(|r| line.contains(&format!("`{r}`"))) {
                root = Some(heading_root);
            }
            continue;
        }
        let Some(cell) = line.strip_prefix("| `") else {
            continue;
        };
        let Some((path, _)) = cell.split_once('`') else {
            continue;
        };
        if let (true, Some(root)) = (path.ends_with(".rs"), root) {
            named.insert(format!("{root}{path}"));
        }
    }
    named
}

#[test]
fn every_source_file_is_in_the_layout_and_every_file_it_names_exists() {
    // Arrange
    let repository = repository();
    let mut on_disk = BTreeSet::new();
    for root in ROOTS {
        sources(&repository, &repository.join(root), &mut on_disk);
    }
    let layout = std::fs::read_to_string(repository.join("docs/layout.md")).expect("layout");

    // Act
    let in_layout = named(&layout);

    // Assert
    let missing: Vec<_> = on_disk.difference(&in_layout).collect();
    let gone: Vec<_> = in_layout.difference(&on_disk).collect();
    assert!(
        missing.is_empty() && gone.is_empty(),
        "docs/layout.md does not name {missing:?}; it names files that do not exist: {gone:?}"
    );
    assert!(on_disk.len() > 80, "read the sources: {}", on_disk.len());
}

#[test]
fn a_row_is_read_from_its_headings_folder() {
    let layout = "### A: `service-a/src/`\n| `main.rs` | x |\n#### sub\n| `a/b.rs` | y |\n\
                  ### T: `telemetry/src/`\n| `lib.rs` | z |\n| not a file | w |\n";
    assert_eq!(
        named(layout),
        BTreeSet::from([
            "service-a/src/main.rs".to_owned(),
            "service-a/src/a/b.rs".to_owned(),
            "telemetry/src/lib.rs".to_owned(),
        ])
    );
}
