//! Authenticated, encrypted connections between the cluster's parties.
//!
//! On the wire, every record is a 4-byte big-endian length and that many
//! bytes. A connection opens with a three-message handshake (the initiator's
//! `Hello` with its claimed identity and an ephemeral P-256 key; the
//! responder's `Accept` with its ephemeral key and an ECDSA signature over
//! the transcript; the initiator's `Confirm`, a signature over the whole
//! transcript), each signature by the party's transport key as
//! `cluster.json` lists it. ECDH of the ephemeral keys, through HKDF-SHA256
//! salted with the transcript, gives one ChaCha20-Poly1305 key per
//! direction; every frame after that is sealed under its direction's key
//! with a counter nonce, so a forged, replayed, reordered or truncated frame
//! fails to open.
//!
//! Anything wrong on a connection (garbage, a truncated record, a length
//! over [`MAX_FRAME`], a frame that does not open or decode, a frame kind
//! the receiver does not take from that peer) closes that connection with
//! the reason logged; nothing else is affected.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Result};
use bft_upgrade::crypto::{shared_secret, DeployerKey, Digest, PublicKey, ReplicaSecretKey, Signature};
use bft_upgrade::step::Peer;
use chacha20poly1305::aead::{Aead, KeyInit};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use hkdf::Hkdf;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Semaphore};
use tracing::{debug, info, warn};

use crate::config::Cluster;
use crate::frame::{self, Frame};

/// The largest record accepted (ciphertext bytes after the length).
pub const MAX_FRAME: usize = 1 << 20;
/// The largest handshake record.
const MAX_HANDSHAKE: usize = 512;
/// Time allowed for a whole handshake, and for the rest of a record once
/// its length arrived.
const IO_TIMEOUT: Duration = Duration::from_secs(5);
/// Handshakes in progress at once (a flood of connections waits here).
const MAX_HANDSHAKES: usize = 64;
/// Frames queued per connection before new ones are dropped.
const QUEUE: usize = 4096;
/// After a failed dial, frames to that peer are dropped for this long.
const BACKOFF: Duration = Duration::from_millis(300);

const MAGIC: [u8; 8] = *b"bftup/1\0";

#[derive(Serialize, Deserialize)]
struct Hello {
    magic: [u8; 8],
    from: Peer,
    to: Peer,
    ephemeral: PublicKey,
    nonce: [u8; 32],
}

#[derive(Serialize, Deserialize)]
struct Accept {
    ephemeral: PublicKey,
    signature: Signature,
}

#[derive(Serialize, Deserialize)]
struct Confirm {
    signature: Signature,
}

/// Who may send which frames: the receiving process's rule, checked on
/// every frame; a refusal closes the connection with the reason.
pub type Policy = Arc<dyn Fn(Peer, &Frame) -> Result<(), String> + Send + Sync>;

struct Link {
    id: u64,
    tx: mpsc::Sender<Vec<u8>>,
}

/// One party's network: its identity and keys, the cluster directory, the
/// open connections, and the channel incoming frames go to.
pub struct Net {
    me: Peer,
    key: DeployerKey,
    cluster: Arc<Cluster>,
    links: Mutex<HashMap<Peer, Link>>,
    failed: Mutex<HashMap<Peer, Instant>>,
    next_id: AtomicU64,
    inbound: mpsc::Sender<(Peer, Frame)>,
    policy: Policy,
    handshakes: Semaphore,
}

fn transcript(parts: &[&[u8]]) -> Digest {
    let mut h = Sha256::new();
    h.update(b"bft-upgrade-node/handshake/v1");
    for p in parts {
        h.update((p.len() as u32).to_be_bytes());
        h.update(p);
    }
    Digest(h.finalize().into())
}

fn label(d: &Digest, what: &[u8]) -> Digest {
    let mut h = Sha256::new();
    h.update(what);
    h.update(d.0);
    Digest(h.finalize().into())
}

/// The two directions' ciphers of one connection.
struct Keys {
    send: ChaCha20Poly1305,
    recv: ChaCha20Poly1305,
}

fn derive(secret: &[u8; 32], salt: &Digest, initiator: bool) -> Keys {
    let hk = Hkdf::<Sha256>::new(Some(&salt.0), secret);
    let mut i2r = [0u8; 32];
    let mut r2i = [0u8; 32];
    // Output lengths of 32 bytes never fail for SHA-256.
    let _ = hk.expand(b"initiator to responder", &mut i2r);
    let _ = hk.expand(b"responder to initiator", &mut r2i);
    let (send, recv) = if initiator { (i2r, r2i) } else { (r2i, i2r) };
    Keys { send: ChaCha20Poly1305::new(&Key::from(send)), recv: ChaCha20Poly1305::new(&Key::from(recv)) }
}

fn nonce(counter: u64) -> Nonce {
    let mut n = [0u8; 12];
    n[4..].copy_from_slice(&counter.to_be_bytes());
    Nonce::from(n)
}

async fn read_record(stream: &mut (impl AsyncReadExt + Unpin), max: usize, idle: Option<Duration>) -> Result<Vec<u8>> {
    let mut len = [0u8; 4];
    match idle {
        Some(t) => tokio::time::timeout(t, stream.read_exact(&mut len)).await.map_err(|_| anyhow!("timed out"))??,
        None => stream.read_exact(&mut len).await.map_err(|e| anyhow!("connection ended ({e})"))?,
    };
    let len = u32::from_be_bytes(len) as usize;
    if len > max {
        bail!("oversized length {len} (limit {max})");
    }
    let mut buf = vec![0u8; len];
    match tokio::time::timeout(IO_TIMEOUT, stream.read_exact(&mut buf)).await {
        Ok(Ok(_)) => Ok(buf),
        Ok(Err(_)) => bail!("truncated record: the connection ended inside a {len}-byte record"),
        Err(_) => bail!("truncated record: the rest of a {len}-byte record did not arrive in time"),
    }
}

async fn write_record(stream: &mut (impl AsyncWriteExt + Unpin), bytes: &[u8]) -> Result<()> {
    let mut out = Vec::with_capacity(bytes.len() + 4);
    out.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
    out.extend_from_slice(bytes);
    stream.write_all(&out).await?;
    Ok(())
}

impl Net {
    /// A network for `me`, signing with `key`; incoming frames that pass
    /// `policy` go to `inbound`.
    pub fn new(
        me: Peer,
        key: DeployerKey,
        cluster: Arc<Cluster>,
        inbound: mpsc::Sender<(Peer, Frame)>,
        policy: Policy,
    ) -> Arc<Self> {
        Arc::new(Self {
            me,
            key,
            cluster,
            links: Mutex::new(HashMap::new()),
            failed: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
            inbound,
            policy,
            handshakes: Semaphore::new(MAX_HANDSHAKES),
        })
    }

    /// This party.
    pub fn me(&self) -> Peer {
        self.me
    }

    /// The cluster directory.
    pub fn cluster(&self) -> &Cluster {
        &self.cluster
    }

    /// Accepts connections on `listener` until the process ends.
    pub fn listen(self: &Arc<Self>, listener: TcpListener) {
        let net = self.clone();
        tokio::spawn(async move {
            loop {
                let (stream, addr) = match listener.accept().await {
                    Ok(x) => x,
                    Err(e) => {
                        warn!("accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let net = net.clone();
                tokio::spawn(async move {
                    let Ok(_permit) = net.handshakes.acquire().await else { return };
                    match tokio::time::timeout(IO_TIMEOUT, net.respond(stream)).await {
                        Ok(Ok((peer, stream, keys))) => {
                            drop(_permit);
                            net.clone().run(peer, stream, keys, None);
                        }
                        Ok(Err(e)) => info!(%addr, "closing connection: handshake failed: {e}"),
                        Err(_) => info!(%addr, "closing connection: handshake timed out"),
                    }
                });
            }
        });
    }

    /// Sends `frame` to `peer`: over the open connection, or a new one if
    /// `peer` listens. Best effort: the roles retry what matters.
    pub fn send(self: &Arc<Self>, peer: Peer, frame: &Frame) {
        let bytes = frame::encode(frame);
        if bytes.is_empty() || bytes.len() + 16 > MAX_FRAME {
            warn!(?peer, len = bytes.len(), "frame not sent: over the frame limit");
            return;
        }
        let mut links = self.links.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(link) = links.get(&peer) {
            match link.tx.try_send(bytes) {
                Ok(()) => return,
                Err(mpsc::error::TrySendError::Full(_)) => {
                    debug!(?peer, "queue full: frame dropped");
                    return;
                }
                Err(mpsc::error::TrySendError::Closed(b)) => {
                    links.remove(&peer);
                    return self.dial(&mut links, peer, b);
                }
            }
        }
        self.dial(&mut links, peer, bytes);
    }

    fn dial(self: &Arc<Self>, links: &mut HashMap<Peer, Link>, peer: Peer, first: Vec<u8>) {
        let Some((Some(addr), _)) = self.cluster.lookup(peer) else {
            debug!(?peer, "no connection to a peer that does not listen: frame dropped");
            return;
        };
        let recently =
            self.failed.lock().unwrap_or_else(|e| e.into_inner()).get(&peer).is_some_and(|t| t.elapsed() < BACKOFF);
        if recently {
            return;
        }
        let (tx, rx) = mpsc::channel(QUEUE);
        let _ = tx.try_send(first);
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        links.insert(peer, Link { id, tx });
        let net = self.clone();
        tokio::spawn(async move {
            let result = tokio::time::timeout(IO_TIMEOUT, net.initiate(peer, addr)).await;
            match result {
                Ok(Ok((stream, keys))) => net.clone().run(peer, stream, keys, Some((id, rx))),
                Ok(Err(e)) => net.dial_failed(peer, id, &e.to_string()),
                Err(_) => net.dial_failed(peer, id, "timed out"),
            }
        });
    }

    fn dial_failed(&self, peer: Peer, id: u64, why: &str) {
        debug!(?peer, "dial failed: {why}");
        self.failed.lock().unwrap_or_else(|e| e.into_inner()).insert(peer, Instant::now());
        let mut links = self.links.lock().unwrap_or_else(|e| e.into_inner());
        if links.get(&peer).is_some_and(|l| l.id == id) {
            links.remove(&peer);
        }
    }

    /// Initiator's side of the handshake.
    async fn initiate(&self, peer: Peer, addr: SocketAddr) -> Result<(TcpStream, Keys)> {
        let (_, their_key) = self.cluster.lookup(peer).ok_or_else(|| anyhow!("unknown peer"))?;
        let mut stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        let mut rng = crate::deployer::os_rng();
        let eph = ReplicaSecretKey::random(&mut rng);
        let mut n = [0u8; 32];
        getrandom::fill(&mut n).map_err(|e| anyhow!("randomness: {e}"))?;
        let hello = Hello { magic: MAGIC, from: self.me, to: peer, ephemeral: eph.public_key(), nonce: n };
        let hello_bytes = frame::encode(&hello);
        write_record(&mut stream, &hello_bytes).await?;
        let accept_bytes = read_record(&mut stream, MAX_HANDSHAKE, Some(IO_TIMEOUT)).await?;
        let accept: Accept = frame::decode(&accept_bytes).map_err(|e| anyhow!("bad accept: {e}"))?;
        let t1 = transcript(&[&hello_bytes, &frame::encode(&accept.ephemeral)]);
        accept
            .signature
            .verify(&their_key, &label(&t1, b"accept"))
            .map_err(|_| anyhow!("responder's signature does not verify"))?;
        let t2 = transcript(&[&hello_bytes, &accept_bytes]);
        let signature = self.key.sign(&label(&t2, b"confirm")).map_err(|e| anyhow!("sign: {e:?}"))?;
        write_record(&mut stream, &frame::encode(&Confirm { signature })).await?;
        let secret = shared_secret(&eph, &accept.ephemeral).map_err(|e| anyhow!("ecdh: {e:?}"))?;
        Ok((stream, derive(&secret, &t2, true)))
    }

    /// Responder's side of the handshake: who is calling, proven.
    async fn respond(&self, mut stream: TcpStream) -> Result<(Peer, TcpStream, Keys)> {
        stream.set_nodelay(true)?;
        let hello_bytes = read_record(&mut stream, MAX_HANDSHAKE, Some(IO_TIMEOUT)).await?;
        let hello: Hello = frame::decode(&hello_bytes).map_err(|e| anyhow!("bad hello: {e}"))?;
        if hello.magic != MAGIC {
            bail!("bad hello: wrong magic");
        }
        if hello.to != self.me {
            bail!("hello addressed to {:?}, not to this party", hello.to);
        }
        let (_, their_key) = self.cluster.lookup(hello.from).ok_or_else(|| anyhow!("unknown peer {:?}", hello.from))?;
        let mut rng = crate::deployer::os_rng();
        let eph = ReplicaSecretKey::random(&mut rng);
        let t1 = transcript(&[&hello_bytes, &frame::encode(&eph.public_key())]);
        let signature = self.key.sign(&label(&t1, b"accept")).map_err(|e| anyhow!("sign: {e:?}"))?;
        let accept_bytes = frame::encode(&Accept { ephemeral: eph.public_key(), signature });
        write_record(&mut stream, &accept_bytes).await?;
        let confirm_bytes = read_record(&mut stream, MAX_HANDSHAKE, Some(IO_TIMEOUT)).await?;
        let confirm: Confirm = frame::decode(&confirm_bytes).map_err(|e| anyhow!("bad confirm: {e}"))?;
        let t2 = transcript(&[&hello_bytes, &accept_bytes]);
        confirm
            .signature
            .verify(&their_key, &label(&t2, b"confirm"))
            .map_err(|_| anyhow!("{:?}'s signature does not verify", hello.from))?;
        let secret = shared_secret(&eph, &hello.ephemeral).map_err(|e| anyhow!("ecdh: {e:?}"))?;
        Ok((hello.from, stream, derive(&secret, &t2, false)))
    }

    /// Runs an authenticated connection: a writer task draining the link's
    /// queue, and the reader here until the first bad frame.
    fn run(self: Arc<Self>, peer: Peer, stream: TcpStream, keys: Keys, link: Option<(u64, mpsc::Receiver<Vec<u8>>)>) {
        let (id, mut rx) = match link {
            Some(x) => x,
            None => {
                let (tx, rx) = mpsc::channel(QUEUE);
                let id = self.next_id.fetch_add(1, Ordering::Relaxed);
                self.links.lock().unwrap_or_else(|e| e.into_inner()).insert(peer, Link { id, tx });
                (id, rx)
            }
        };
        debug!(?peer, "connection up");
        let (mut reader, mut writer) = stream.into_split();
        let Keys { send, recv } = keys;
        let writer_task = tokio::spawn(async move {
            let mut counter = 0u64;
            while let Some(plain) = rx.recv().await {
                let Ok(sealed) = send.encrypt(&nonce(counter), plain.as_slice()) else { break };
                counter += 1;
                if write_record(&mut writer, &sealed).await.is_err() {
                    break;
                }
            }
        });
        tokio::spawn(async move {
            let mut counter = 0u64;
            let reason = loop {
                let sealed = match read_record(&mut reader, MAX_FRAME, None).await {
                    Ok(b) => b,
                    Err(e) => break e.to_string(),
                };
                let Ok(plain) = recv.decrypt(&nonce(counter), sealed.as_slice()) else {
                    break "frame failed authentication (forged, replayed or reordered)".to_string();
                };
                counter += 1;
                let frame: Frame = match frame::decode(&plain) {
                    Ok(f) => f,
                    Err(e) => break format!("undecodable frame: {e}"),
                };
                if let Err(why) = (self.policy)(peer, &frame) {
                    break why;
                }
                if self.inbound.try_send((peer, frame)).is_err() {
                    debug!(?peer, "inbound queue full: frame dropped");
                }
            };
            if reason.starts_with("connection ended") {
                debug!(?peer, "connection closed: {reason}");
            } else {
                warn!(?peer, "closing connection: {reason}");
            }
            writer_task.abort();
            let mut links = self.links.lock().unwrap_or_else(|e| e.into_inner());
            if links.get(&peer).is_some_and(|l| l.id == id) {
                links.remove(&peer);
            }
        });
    }
}

/// The raw pieces of the handshake, for tests that play a misbehaving
/// peer: connect to `addr` as `me` and return the open stream and a
/// function sealing frames as the connection's next ones.
pub mod testing {
    use super::*;

    /// An authenticated connection from the outside: seal frames by hand.
    pub struct Session {
        /// The TCP stream.
        pub stream: TcpStream,
        keys: Keys,
        counter: u64,
    }

    impl Session {
        /// Connects and handshakes as `me` (whose signing key is `key`) to
        /// `peer` at its address in `cluster`.
        ///
        /// # Errors
        /// When the connection or the handshake fails.
        pub async fn connect(cluster: Arc<Cluster>, me: Peer, key: DeployerKey, peer: Peer) -> Result<Self> {
            let (tx, _rx) = mpsc::channel(1);
            let net = Net::new(me, key, cluster.clone(), tx, Arc::new(|_, _| Ok(())));
            let (Some(addr), _) = cluster.lookup(peer).ok_or_else(|| anyhow!("unknown peer"))? else {
                bail!("peer does not listen");
            };
            let (stream, keys) = net.initiate(peer, addr).await?;
            Ok(Self { stream, keys, counter: 0 })
        }

        /// Seals `plain` as the next frame (length prefix included).
        pub fn seal(&mut self, plain: &[u8]) -> Vec<u8> {
            let sealed = self.keys.send.encrypt(&nonce(self.counter), plain).unwrap_or_default();
            self.counter += 1;
            let mut out = (sealed.len() as u32).to_be_bytes().to_vec();
            out.extend_from_slice(&sealed);
            out
        }
    }
}
