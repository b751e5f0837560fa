//! `sluice-state`: state stores for Sluice processors — the `KeyValueStore` trait and its sled
//! implementation, changelog records stamped with their source offsets, restore from the
//! changelog, checkpoints and the dedupe store (DESIGN §5, §6). Built in the engine-core issue.
