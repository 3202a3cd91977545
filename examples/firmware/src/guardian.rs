//! A guardian: keep its shares of a guardian-custody piece for a group of
//! 4 (guardians: 4, threshold 3), then release the `s_g` share once `f + 1`
//! replicas asked with their tokens, after the host made it durable.

use bft_upgrade::crypto::{ReplicaSecretKey, ShareKind};
use bft_upgrade::guardian::{Guardian, GuardianConfig, GuardianEffect, MAX_GUARDED};
use bft_upgrade::step::{Instant, Peer, Step};
use bft_upgrade::wire::{self, Message, Piece};
use static_cell::StaticCell;

use crate::meter::Meter;
use crate::{ensure, phase, report, Context, Failure};

macro_rules! bundle {
    ($name:literal) => {
        include_bytes!(concat!(env!("OUT_DIR"), "/", $name))
    };
}

const CONFIG: &[u8] = bundle!("guardian_config.bin");
const KEY: &[u8; 32] = bundle!("guardian_key.bin");
const PIECE: &[u8] = bundle!("guardian_piece.bin");
const REQUESTS: [&[u8]; 2] = [bundle!("guardian_request0.bin"), bundle!("guardian_request1.bin")];

/// Records for as many (upgrade, group) pairs as groups it may guard.
type OneGuardian = Guardian<MAX_GUARDED>;

struct Slots {
    piece: Option<Piece>,
    guardian: Option<OneGuardian>,
}

static SLOTS: StaticCell<Slots> = StaticCell::new();

/// Decodes the piece into its static slot, in place (`wire::decode_into`):
/// decoded by value, it is copied up through every level of the decoder.
#[inline(never)]
fn decode_piece(slot: &mut Option<Piece>) -> Result<&mut Piece, Failure> {
    let piece = slot.get_or_insert_with(Piece::default);
    wire::decode_into(PIECE, piece).or_fail("decode piece")?;
    Ok(piece)
}

/// `Guardian::new` on the decoded configuration, into its static slot.
#[inline(never)]
fn new_guardian(slot: &mut Option<OneGuardian>) -> Result<&mut OneGuardian, Failure> {
    let config: GuardianConfig = wire::decode(CONFIG).or_fail("decode config")?;
    Ok(slot.insert(OneGuardian::new(config)))
}

pub fn run(meter: &Meter) -> Result<(), Failure> {
    report!("size.Guardian<16>", core::mem::size_of::<OneGuardian>());
    report!("size.Step<GuardianEffect>", core::mem::size_of::<Step<GuardianEffect>>());
    report!("size.Piece", core::mem::size_of::<Piece>());
    let bundle_bytes = CONFIG.len() + KEY.len() + PIECE.len() + REQUESTS.iter().map(|r| r.len()).sum::<usize>();
    report!("bundle.bytes", bundle_bytes);
    let slots = SLOTS.init_with(|| Slots { piece: None, guardian: None });
    let piece = phase(meter, "decode_piece", || decode_piece(&mut slots.piece))?;
    let guardian = phase(meter, "new", || new_guardian(&mut slots.guardian))?;
    let key = ReplicaSecretKey::from_bytes(KEY).or_fail("guardian key")?;
    let (upgrade, group) = (piece.header.upgrade, piece.header.group);
    let from = Peer::Replica { group, index: 0 };
    let step = phase(meter, "handle_piece", || guardian.handle_piece(Instant(0), from, piece, &key));
    ensure(step.is_empty(), "handle_piece: not kept")?;
    drop(step);
    let mut persist = false;
    for (i, bytes) in REQUESTS.iter().enumerate() {
        let request: Message = wire::decode(bytes).or_fail("decode request")?;
        let Message::GuardianRequest { replica, .. } = &request else { return Err("not a request") };
        let from = Peer::Replica { group, index: *replica };
        let step = phase(meter, if i == 0 { "request0" } else { "request1" }, || {
            guardian.handle_message(Instant(1), from, &request)
        });
        ensure(step.faults.is_empty(), "request: faults")?;
        persist |= step.effects.contains(&GuardianEffect::Persist { upgrade, group, kind: ShareKind::Secret });
    }
    ensure(persist, "no Persist after f + 1 requests")?;
    let step = guardian.persisted(Instant(2), upgrade, group);
    let mut released = 0;
    for m in &step.messages {
        if let Message::GuardianShare { kind: ShareKind::Secret, share, .. } = &m.message {
            ensure(piece.guardian_share_is_valid(ShareKind::Secret, share), "released share is not valid")?;
            released += 1;
        }
    }
    ensure(released == 2, "shares not released to both replicas")?;
    ensure(guardian.released(upgrade, group) == Some(ShareKind::Secret), "release not recorded")
}
