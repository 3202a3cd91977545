//! 10,000 malformed frames at a running replica: garbage before the
//! handshake, oversized lengths, records cut short, and, on authenticated
//! connections, frames that do not decode, frames replayed and frames
//! tampered with. Each must close its connection with a logged reason; the
//! replica then completes an upgrade with its group as if nothing had
//! happened.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bft_upgrade::step::Peer;
use bft_upgrade::wire::{GroupId, Outcome};
use bft_upgrade_node::cluster;
use bft_upgrade_node::config::{key_path, Cluster, Secrets};
use bft_upgrade_node::frame::{self, Body, Frame};
use bft_upgrade_node::transport::testing::Session;
use common::{node, TempCluster};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const FRAMES: usize = 10_000;
const KINDS: usize = 6;

/// Waits for the server to close the connection (EOF or reset).
async fn closed_by_peer(stream: &mut TcpStream) -> bool {
    let mut buf = [0u8; 256];
    loop {
        match tokio::time::timeout(Duration::from_secs(15), stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue,
            Err(_) => return false,
        }
    }
}

fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// One malformed frame of kind `i % KINDS`, on its own connection.
async fn one(cluster: Arc<Cluster>, key: Secrets, target: Peer, i: usize) -> bool {
    let addr = cluster.lookup(target).unwrap().0.unwrap();
    let me = Peer::Installer(2);
    match i % KINDS {
        // Garbage where the handshake's hello should be.
        0 => {
            let mut s = TcpStream::connect(addr).await.unwrap();
            let body = noise(i as u64, 1 + i % 300);
            let mut rec = (body.len() as u32).to_be_bytes().to_vec();
            rec.extend_from_slice(&body);
            let _ = s.write_all(&rec).await;
            closed_by_peer(&mut s).await
        }
        // A length far over the limit.
        1 => {
            let mut s = TcpStream::connect(addr).await.unwrap();
            let _ = s.write_all(&[0xff, 0xff, 0xff, 0xf0 | (i as u8 & 0x0f), 1, 2, 3]).await;
            closed_by_peer(&mut s).await
        }
        // A record cut short: the length promises more than arrives.
        2 => {
            let mut s = TcpStream::connect(addr).await.unwrap();
            let _ = s.write_all(&[0, 0, 1, 0, 7, 7, 7]).await;
            let _ = s.shutdown().await;
            closed_by_peer(&mut s).await
        }
        // Authenticated, sealed correctly, but not a frame.
        3 => {
            let mut session = Session::connect(cluster, me, key.sign_key, target).await.unwrap();
            let rec = session.seal(&noise(i as u64, 1 + i % 200));
            let _ = session.stream.write_all(&rec).await;
            closed_by_peer(&mut session.stream).await
        }
        // A valid frame, then the same bytes again: a replay.
        4 => {
            let mut session = Session::connect(cluster, me, key.sign_key, target).await.unwrap();
            let ok = Frame::Submit { nonce: 7, body: Body::Tick { txn: 7 } };
            let rec = session.seal(&frame::encode(&ok));
            let _ = session.stream.write_all(&rec).await;
            let _ = session.stream.write_all(&rec).await;
            closed_by_peer(&mut session.stream).await
        }
        // A valid frame with one bit flipped in transit.
        _ => {
            let mut session = Session::connect(cluster, me, key.sign_key, target).await.unwrap();
            let ok = Frame::Submit { nonce: 8, body: Body::Tick { txn: 8 } };
            let mut rec = session.seal(&frame::encode(&ok));
            let at = 4 + i % (rec.len() - 4);
            rec[at] ^= 1 << (i % 8);
            let _ = session.stream.write_all(&rec).await;
            closed_by_peer(&mut session.stream).await
        }
    }
}

#[test]
fn ten_thousand_malformed_frames_then_an_upgrade() {
    let c = TempCluster::new("malformed", &["--groups", "2", "--guardians", "4"]);
    let up = node().args(["cluster", "up", "--dir"]).arg(c.path()).status().unwrap();
    assert!(up.success(), "cluster up failed");
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let cluster = Arc::new(Cluster::load(c.path()).unwrap());
    let target = Peer::Replica { group: GroupId(1), index: 0 };
    let started = Instant::now();
    let closed = rt.block_on(async {
        let mut closed = 0usize;
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..FRAMES {
            if tasks.len() >= 32 {
                closed += usize::from(tasks.join_next().await.unwrap().unwrap());
            }
            let key = Secrets::load(&key_path(c.path(), Peer::Installer(2))).unwrap();
            tasks.spawn(one(cluster.clone(), key, target, i));
        }
        while let Some(r) = tasks.join_next().await {
            closed += usize::from(r.unwrap());
        }
        closed
    });
    eprintln!("{FRAMES} malformed frames in {:?}", started.elapsed());
    assert_eq!(closed, FRAMES, "every malformed frame closes its connection");

    // Every closing is logged with its reason.
    std::thread::sleep(Duration::from_millis(500));
    let log = c.log("replica-1-0");
    let closings = log.lines().filter(|l| l.contains("closing connection")).count();
    assert!(closings >= FRAMES, "{closings} closings logged for {FRAMES} malformed frames");
    for reason in
        ["handshake failed", "oversized length", "truncated record", "undecodable frame", "failed authentication"]
    {
        assert!(log.contains(reason), "no closing logged for: {reason}");
    }

    // The replica still works: an upgrade completes through its group.
    let bundle = bft_upgrade_node::deployer::deploy(c.path(), "after the flood").unwrap();
    let install = node()
        .arg("install")
        .arg(&bundle)
        .arg("--dir")
        .arg(c.path())
        .args(["--id", "1", "--timeout-s", "120"])
        .output()
        .unwrap();
    assert!(install.status.success(), "install failed: {}", String::from_utf8_lossy(&install.stderr));
    let upgrade = bft_upgrade_node::deployer::load_bundle(&bundle).unwrap().header.upgrade;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let statuses = rt.block_on(cluster::query(c.path(), Duration::from_secs(2))).unwrap();
        let committed = |s: &bft_upgrade_node::frame::Status| {
            s.upgrades.iter().any(|u| u.upgrade == upgrade && u.outcome == Some(Outcome::Committed))
        };
        let flooded = statuses.iter().find(|s| s.group == GroupId(1) && s.index == 0);
        if statuses.len() == 8 && statuses.iter().all(committed) {
            assert!(flooded.is_some_and(|s| s.payload.contains("after the flood")));
            break;
        }
        assert!(Instant::now() < deadline, "the upgrade did not complete at every replica");
        std::thread::sleep(Duration::from_millis(300));
    }
}
