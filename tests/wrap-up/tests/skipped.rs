//! The README's test command ends here: one line saying how many checks of this run were
//! skipped for a missing tool (`system_tests::tools` records each skip), so a green run
//! cannot hide checks that did not run. In CI a missing tool fails its test instead, and
//! this says `none`.

fn main() {
    println!(
        "{}",
        system_tests::tools::skip_line(&system_tests::tools::skip_records())
    );
}
