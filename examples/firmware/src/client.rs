//! An external client: carry the version it saw at one group and the
//! trigger code it learned there on to the next group.

use bft_upgrade::client::{Client, ClientEvent};
use bft_upgrade::wire::{self, ClientReply, GroupId};

use crate::meter::Meter;
use crate::{ensure, phase, report, Context, Failure};

const REPLY: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/client_reply.bin"));

/// A client of up to 16 groups.
type SmallClient = Client<16>;

pub fn run(meter: &Meter) -> Result<(), Failure> {
    report!("size.Client<16>", core::mem::size_of::<SmallClient>());
    report!("bundle.bytes", REPLY.len());
    let mut client = SmallClient::new(1);
    let first = client.call(GroupId(3));
    ensure(first.seen == 0 && first.codes.is_empty(), "fresh call")?;
    let reply: ClientReply = wire::decode(REPLY).or_fail("decode reply")?;
    let event = phase(meter, "on_reply", || client.on_reply(&reply)).or_fail("on_reply")?;
    ensure(event == ClientEvent::Current, "reply: not current")?;
    ensure(client.seen(GroupId(3)) == 1, "version not recorded")?;
    let next = client.call(GroupId(4));
    ensure(next.seen == 0 && next.codes.len() == 1, "code not carried on")
}
