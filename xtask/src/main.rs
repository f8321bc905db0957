//! `cargo xtask`: project chores (ci, bench, fixtures).
fn main() {}
