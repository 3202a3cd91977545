//! The identifiers every layer names: upgrades, groups, deployers,
//! resources. They live below both `crypto` (which binds digests to them)
//! and `wire` (which re-exports them), so neither imports the other for
//! them.

use serde::{Deserialize, Serialize};

/// An upgrade's identifier: its deployer's id (4 bytes, big-endian), then
/// 96 random bits the deployer draws.
///
/// Groups and guardians refuse a piece whose upgrade id names another
/// deployer than the one that signed it, so no authorized deployer can take
/// (squat) an upgrade id of another: everything keyed by upgrade id is
/// keyed by (deployer, upgrade) too.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct UpgradeId(pub [u8; 16]);

impl UpgradeId {
    /// The id of an upgrade of `deployer`, with `random` drawn for it.
    pub fn new(deployer: DeployerId, random: [u8; 12]) -> Self {
        let mut id = [0u8; 16];
        let (d, r) = id.split_at_mut(4);
        d.copy_from_slice(&deployer.0.to_be_bytes());
        r.copy_from_slice(&random);
        Self(id)
    }

    /// The deployer this id names.
    pub fn deployer(&self) -> DeployerId {
        let [a, b, c, d, ..] = self.0;
        DeployerId(u32::from_be_bytes([a, b, c, d]))
    }
}

impl core::fmt::Debug for UpgradeId {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        // The deployer, then the first random bytes.
        let [_, _, _, _, a, b, c, d, ..] = self.0;
        write!(f, "U{}:{a:02x}{b:02x}{c:02x}{d:02x}", self.deployer().0)
    }
}

/// A replica group's identifier.
#[derive(Default, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct GroupId(pub u32);

impl GroupId {
    /// Stands for "every group" in digests of values common to an upgrade.
    pub const ALL: GroupId = GroupId(u32::MAX);
}

/// A deployer's identifier, as the groups' configurations name it.
#[derive(Default, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct DeployerId(pub u32);

/// A resource a piece changes; pieces that name a common resource conflict.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct ResourceId(pub u32);

impl ResourceId {
    /// The group's membership, as a resource: every piece that changes it
    /// ([`PieceHeader::next`](crate::wire::PieceHeader::next)) lists this,
    /// so two such pieces conflict under the ordinary rules.
    pub const MEMBERSHIP: Self = Self(u32::MAX);
}
