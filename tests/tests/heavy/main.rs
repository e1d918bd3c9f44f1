//! The heavy attack and load tests: each takes seconds to a minute, so they stay out of the
//! README's test command (`test = false` in tests/Cargo.toml) and CI runs them after it
//! (`cargo test -p system-tests --test heavy`, in `.ci/run`). The `system` target keeps a
//! small version of each behaviour they prove at scale.

mod crowding;
mod hostile;
mod labs;
mod load;
mod memory;
