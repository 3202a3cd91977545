//! What the criterion benchmarks (`benches/protocol.rs`) and the scaling
//! report (`examples/scale.rs`) both build.

use bft_upgrade::crypto::{Binding, PayloadRef, PayloadSealer, CHUNK_TAG_LEN};
use bft_upgrade::deployer::UpgradePlan;
use bft_upgrade::wire::GroupId;

/// A 32-byte payload for `group`, sealed under the plan's group key in one
/// 256-byte chunk: the reference a piece signs.
pub fn small_payload(plan: &UpgradePlan<'_>, group: GroupId) -> PayloadRef {
    let key = plan.group_key(group).expect("group in plan");
    let binding = Binding::group(plan.header().upgrade, group);
    let mut sealer = PayloadSealer::new(&key, &binding, 256).expect("chunk size");
    let mut buf = [0u8; 256 + CHUNK_TAG_LEN];
    sealer.seal_chunk(&mut buf, 32, true).expect("seal");
    sealer.finish().expect("finish")
}
