#![allow(dead_code)] // the seed writer uses the tags, not the count

//! `decode_wire`'s type tags (byte 0 of an input, modulo [`COUNT`]), shared
//! with the seed writer.

pub const PIECE: u8 = 0;
pub const PIECE_HEADER: u8 = 1;
pub const OPERATION: u8 = 2;
pub const MESSAGE: u8 = 3;
pub const ANSWER: u8 = 4;
pub const REPLY: u8 = 5;
pub const FINISH: u8 = 6;
pub const UPGRADE_HEADER: u8 = 7;
pub const CLIENT_CALL: u8 = 8;
pub const CLIENT_REPLY: u8 = 9;
pub const ATTACHMENT: u8 = 10;
pub const MEMBERSHIP: u8 = 11;
pub const GUARDIAN_SET: u8 = 12;
pub const PAYLOAD_REF: u8 = 13;
pub const ORDER_KEY: u8 = 14;
pub const CUSTODY: u8 = 15;
pub const NEXT_MEMBERSHIP: u8 = 16;
pub const REPLICA_ENTRY: u8 = 17;
pub const GUARDIAN_ENTRY: u8 = 18;
pub const SHARE: u8 = 19;
pub const PUBLIC_KEY: u8 = 20;
pub const SIGNATURE: u8 = 21;
pub const SEALED_BOX_AND_TOKEN: u8 = 22;
pub const GROUP_REPLICA: u8 = 23;
pub const INSTALLER: u8 = 24;
/// `Guardian<8>` (with byte 0's high bit clear).
pub const GUARDIAN: u8 = 25;
/// `Client<8>`: the same residue as [`GUARDIAN`] with the high bit set.
pub const CLIENT: u8 = 25 + 27 * 4;
pub const RETIREMENT: u8 = 26;
pub const COUNT: u8 = 27;
