//! The installer role: prepare one group of 4, rebuild `s_g` from the
//! `f + 1` shares its replicas released, decide the commit with `τ`.

use bft_upgrade::installer::{Installer, InstallerEffect, InstallerOptions};
use bft_upgrade::step::{Instant, Peer, Step};
use bft_upgrade::wire::{self, Finish, GroupId, Message, Outcome, Piece, UpgradeHeader};
use static_cell::StaticCell;

use crate::meter::Meter;
use crate::{ensure, phase, report, Context, Failure};

macro_rules! bundle {
    ($name:literal) => {
        include_bytes!(concat!(env!("OUT_DIR"), "/", $name))
    };
}

const HEADER: &[u8] = bundle!("installer_header.bin");
const PIECE: &[u8] = bundle!("installer_piece.bin");
const ANSWERS: [&[u8]; 2] = [bundle!("installer_answer0.bin"), bundle!("installer_answer1.bin")];
const TAU: &[u8; 32] = bundle!("installer_tau.bin");

/// One group, up to 8 shares held at once.
type OneGroupInstaller = Installer<1, 8>;

/// The host keeps the group's piece (the installer checks shares against
/// it); it lives in static memory.
static PIECE_SLOT: StaticCell<Piece> = StaticCell::new();

/// Decodes the piece into its static slot, in place (`wire::decode_into`):
/// decoded by value, it is copied up through every level of the decoder.
#[inline(never)]
fn decode_piece() -> Result<&'static mut Piece, Failure> {
    let piece = PIECE_SLOT.init_with(Piece::default);
    wire::decode_into(PIECE, piece).or_fail("decode piece")?;
    Ok(piece)
}

pub fn run(meter: &Meter) -> Result<(), Failure> {
    report!("size.Installer<1,8>", core::mem::size_of::<OneGroupInstaller>());
    report!("size.Installer<64,1024>", core::mem::size_of::<bft_upgrade::installer::DefaultInstaller>());
    report!("size.Step<InstallerEffect>", core::mem::size_of::<Step<InstallerEffect>>());
    report!("size.Piece", core::mem::size_of::<Piece>());
    let bundle_bytes = HEADER.len() + PIECE.len() + ANSWERS.iter().map(|a| a.len()).sum::<usize>() + TAU.len();
    report!("bundle.bytes", bundle_bytes);
    let piece = phase(meter, "decode_piece", decode_piece)?;
    let header: UpgradeHeader = wire::decode(HEADER).or_fail("decode header")?;
    let group = GroupId(7);
    let mut installer = OneGroupInstaller::new(1, header, &[(group, 1)], InstallerOptions::default().retry_ms(100))
        .or_fail("Installer::new")?;
    let step = installer.start(Instant(0));
    ensure(step.effects.contains(&InstallerEffect::SendPrepare { group }), "start: no SendPrepare")?;
    drop(step);
    let mut decided = false;
    for (i, bytes) in ANSWERS.iter().enumerate() {
        let Message::Answer(answer) = wire::decode::<Message>(bytes).or_fail("decode answer")? else {
            return Err("not an answer");
        };
        let from = Peer::Replica { group, index: answer.replica };
        let step = phase(meter, if i == 0 { "answer0" } else { "answer1" }, || {
            installer.handle_answer(Instant(1), from, &answer, piece)
        })
        .or_fail("handle_answer")?;
        ensure(step.faults.is_empty(), "answer: faults")?;
        decided |= step.effects.contains(&InstallerEffect::Decided(Outcome::Committed));
    }
    ensure(decided, "no decision")?;
    // The commit goes out at the sweep, due at once.
    let step = installer.handle_timeout(Instant(1));
    let commits = step.messages.iter().any(|m| {
        m.to == Peer::Group(group) && matches!(&m.message, Message::Submit(Finish { outcome: Outcome::Committed, .. }))
    });
    ensure(commits, "no CommitInstall sent after the decision")?;
    let (outcome, code) = installer.decided().or_fail("decided")?;
    ensure(outcome == Outcome::Committed && code.expose() == TAU, "wrong τ")
}
