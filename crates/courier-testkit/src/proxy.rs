//! A fault-injecting TCP proxy, controlled in-process.
//!
//! [`FaultProxy`] listens on a free port of 127.0.0.1 and forwards every
//! accepted connection to an upstream address (typically a broker), both
//! directions independently. A test points its client at the proxy and
//! switches faults on and off at run time; each switch applies at once to
//! every open connection and to those accepted later:
//!
//! | Call | Effect |
//! |---|---|
//! | [`pass`](FaultProxy::pass) | plain forwarding: clears every fault below |
//! | [`blackhole`](FaultProxy::blackhole) | stop forwarding both ways, keep the sockets open (a half-open link); data waits in the socket buffers until [`pass`](FaultProxy::pass) |
//! | [`delay`](FaultProxy::delay) | forward each chunk this long after it was read (latency, not a throughput cap) |
//! | [`throttle`](FaultProxy::throttle) | at most this many bytes per second, per connection and direction |
//! | [`split_writes`](FaultProxy::split_writes) | forward in writes of at most n bytes |
//! | [`refuse`](FaultProxy::refuse) | accept new connections and reset them at once |
//! | [`close_fin`](FaultProxy::close_fin), [`close_rst`](FaultProxy::close_rst) | close every open connection now (FIN, or RST with `SO_LINGER` 0); later connections are not affected |
//! | [`cut_after_bytes`](FaultProxy::cut_after_bytes) | one shot: after n more bytes (both directions, all connections together), reset the connection they went through |
//! | [`cut_on`](FaultProxy::cut_on) | one shot: reset a connection right before the nth packet of a type in a direction would be forwarded |
//!
//! The proxy parses MQTT fixed headers in both directions, so it can also
//! [`capture`](FaultProxy::capture) what went over the wire: type, flags
//! (DUP), packet id and topic of every forwarded packet. Faults that cut a
//! stream mid-packet stop the parsing of that connection, nothing else.
//!
//! ```no_run
//! # async fn demo(broker: std::net::SocketAddr) -> std::io::Result<()> {
//! use courier_testkit::mqtt::PUBREC;
//! use courier_testkit::proxy::{Direction, FaultProxy};
//!
//! let proxy = FaultProxy::start(broker).await?;
//! // connect the client to proxy.addr() ...
//! proxy.cut_on(PUBREC, Direction::BrokerToClient, 1); // lose the first PUBREC
//! proxy.blackhole(); // then a half-open link
//! proxy.pass();
//! # Ok(())
//! # }
//! ```

use std::collections::HashMap;
use std::io;
use std::net::{Ipv4Addr, Shutdown, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::time::{Instant, sleep, sleep_until, timeout};
use tokio_util::sync::CancellationToken;

use crate::mqtt::{Frame, Packet, ScanEvent, Scanner};

/// Largest chunk read at once.
const MAX_CHUNK: usize = 16 * 1024;

/// Chunks queued between the read and the write side of one direction: with
/// the chunk size this bounds what the proxy itself buffers, so a slow side
/// pushes back on the sender through TCP, as a real link would.
const QUEUE_CHUNKS: usize = 16;

/// How long the proxy waits for the upstream to accept a connection.
const UPSTREAM_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Which way bytes flow through the proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// From the connecting client to the upstream (broker).
    ClientToBroker,
    /// From the upstream (broker) back to the client.
    BrokerToClient,
}

/// How the proxy closes a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Close {
    /// `shutdown(SHUT_RDWR)` then close: the peers see FIN (an RST may follow
    /// when unread data was pending).
    Fin,
    /// `SO_LINGER` 0 then close: the peers see RST (connection reset).
    Rst,
}

/// A packet the proxy forwarded, recorded while [`capture`](FaultProxy::capture)
/// is on.
#[derive(Debug, Clone)]
pub struct CapturedPacket {
    /// Which proxied connection (numbered from 1 in accept order).
    pub connection: u64,
    /// Which way it went.
    pub direction: Direction,
    /// The first byte of the fixed header (type and flags).
    pub header: u8,
    /// The remaining length.
    pub remaining_length: usize,
    /// The packet id, for packets that have one (see [`Packet::pkid`]).
    pub pkid: Option<u16>,
    /// The topic, for PUBLISH.
    pub topic: Option<String>,
    /// For PUBLISH, the start of the payload (the proxy keeps the first 1 KiB of
    /// each packet body).
    pub payload: Option<Vec<u8>>,
    /// When the proxy had read the whole packet.
    pub at: std::time::Instant,
}

impl CapturedPacket {
    fn new(connection: u64, direction: Direction, frame: Frame) -> Self {
        let remaining_length = frame.remaining_length;
        let packet = Packet::new(frame.header, frame.head);
        CapturedPacket {
            connection,
            direction,
            header: packet.header,
            remaining_length,
            pkid: packet.pkid(),
            topic: packet.topic(),
            payload: packet.payload(),
            at: std::time::Instant::now(),
        }
    }

    /// The packet type (see the constants in [`crate::mqtt`]).
    pub fn kind(&self) -> u8 {
        self.header >> 4
    }

    /// The DUP flag (meaningful for PUBLISH).
    pub fn dup(&self) -> bool {
        self.header & 0x08 != 0
    }

    /// The QoS bits (meaningful for PUBLISH).
    pub fn qos(&self) -> u8 {
        (self.header >> 1) & 0x03
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Settings {
    blackhole: bool,
    delay: Duration,
    throttle: Option<u64>,
    split: Option<usize>,
    refuse: bool,
}

impl Settings {
    /// How much to read at once: with a throttle, about 1/16 s worth, so that
    /// the queue holds about a second.
    fn read_limit(&self) -> usize {
        match self.throttle {
            Some(bps) => usize::try_from(bps / 16)
                .unwrap_or(MAX_CHUNK)
                .clamp(64, MAX_CHUNK),
            None => MAX_CHUNK,
        }
    }

    /// How much to write at once: with a throttle, about 1/20 s worth.
    fn write_limit(&self) -> usize {
        let throttled = match self.throttle {
            Some(bps) => usize::try_from(bps / 20)
                .unwrap_or(MAX_CHUNK)
                .clamp(1, MAX_CHUNK),
            None => usize::MAX,
        };
        throttled.min(self.split.unwrap_or(usize::MAX).max(1))
    }
}

#[derive(Debug)]
struct CutOn {
    kind: u8,
    direction: Direction,
    nth: usize,
    seen: usize,
}

#[derive(Debug, Default)]
struct Triggers {
    cut_after: Option<(u64, Close)>,
    cut_on: Option<CutOn>,
}

#[derive(Debug)]
struct Conn {
    token: CancellationToken,
    client: Arc<TcpStream>,
    upstream: Arc<TcpStream>,
}

#[derive(Debug)]
struct Shared {
    upstream: SocketAddr,
    settings: watch::Sender<Settings>,
    triggers: Mutex<Triggers>,
    conns: Mutex<HashMap<u64, Conn>>,
    capture: Mutex<Option<Vec<CapturedPacket>>>,
    accepted: AtomicU64,
    refused: AtomicU64,
    cuts: AtomicU64,
    client_to_broker: AtomicU64,
    broker_to_client: AtomicU64,
    shutdown: CancellationToken,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A fault-injecting TCP proxy in front of one upstream address; see the
/// [module documentation](self).
///
/// Dropping it stops accepting and closes every proxied connection.
#[derive(Debug)]
pub struct FaultProxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
}

impl FaultProxy {
    /// Listens on a free port of 127.0.0.1 and forwards each accepted
    /// connection to `upstream`, in pass mode. An upstream that cannot be
    /// reached makes the proxy reset the client's connection.
    ///
    /// # Errors
    ///
    /// The listener cannot be bound.
    pub async fn start(upstream: SocketAddr) -> io::Result<FaultProxy> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
        let addr = listener.local_addr()?;
        let (settings, _) = watch::channel(Settings::default());
        let shared = Arc::new(Shared {
            upstream,
            settings,
            triggers: Mutex::new(Triggers::default()),
            conns: Mutex::new(HashMap::new()),
            capture: Mutex::new(None),
            accepted: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            cuts: AtomicU64::new(0),
            client_to_broker: AtomicU64::new(0),
            broker_to_client: AtomicU64::new(0),
            shutdown: CancellationToken::new(),
        });
        tokio::spawn(accept_loop(shared.clone(), listener));
        Ok(FaultProxy { addr, shared })
    }

    /// The address clients connect to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The port clients connect to (on 127.0.0.1).
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Where connections are forwarded.
    pub fn upstream(&self) -> SocketAddr {
        self.shared.upstream
    }

    fn update(&self, f: impl FnOnce(&mut Settings)) {
        self.shared.settings.send_modify(f);
    }

    /// Plain forwarding: ends a blackhole, delay, throttle, write splitting and
    /// refusal, and disarms [`cut_after_bytes`](Self::cut_after_bytes) and
    /// [`cut_on`](Self::cut_on). Data held during a blackhole is forwarded now.
    pub fn pass(&self) {
        self.update(|s| *s = Settings::default());
        *lock(&self.shared.triggers) = Triggers::default();
    }

    /// Closes every open connection with FIN on both sides. Connections accepted
    /// afterwards are forwarded as usual.
    pub fn close_fin(&self) {
        self.shared.close_all(Close::Fin);
    }

    /// Resets every open connection (RST on both sides, `SO_LINGER` 0).
    /// Connections accepted afterwards are forwarded as usual.
    pub fn close_rst(&self) {
        self.shared.close_all(Close::Rst);
    }

    /// Stops forwarding in both directions and keeps every socket open: a
    /// half-open link as seen by both peers. New connections are accepted and
    /// connected upstream, but nothing flows. [`pass`](Self::pass) forwards
    /// whatever waited meanwhile.
    pub fn blackhole(&self) {
        self.update(|s| s.blackhole = true);
    }

    /// Forwards every chunk `delay` after it was read (one-way latency; zero
    /// turns it off).
    pub fn delay(&self, delay: Duration) {
        self.update(|s| s.delay = delay);
    }

    /// At most `bytes_per_sec` per connection and direction (0 turns the
    /// throttle off).
    pub fn throttle(&self, bytes_per_sec: u64) {
        self.update(|s| s.throttle = (bytes_per_sec > 0).then_some(bytes_per_sec));
    }

    /// Forwards in separate writes of at most `n` bytes (0 turns it off), so
    /// the peers see packets arrive in pieces.
    pub fn split_writes(&self, n: usize) {
        self.update(|s| s.split = (n > 0).then_some(n));
    }

    /// With `true`, each new connection is accepted and reset at once (the
    /// client's connect succeeds, its first read fails); open connections are
    /// not affected. `false` accepts again.
    pub fn refuse(&self, on: bool) {
        self.update(|s| s.refuse = on);
    }

    /// One shot: after `n` more bytes were forwarded (both directions and all
    /// connections counted together), reset the connection the nth byte went
    /// through, right after forwarding it (mid-packet, usually). Re-arming
    /// replaces an earlier arming.
    pub fn cut_after_bytes(&self, n: u64) {
        self.cut_after_bytes_with(n, Close::Rst);
    }

    /// [`cut_after_bytes`](Self::cut_after_bytes), closing with `how`.
    pub fn cut_after_bytes_with(&self, n: u64, how: Close) {
        lock(&self.shared.triggers).cut_after = Some((n, how));
    }

    /// One shot: counting from now, reset the connection that carries the
    /// `nth` (1-based) MQTT packet of `packet_type` in `direction`, right
    /// before that packet would be forwarded: the peer gets everything before
    /// it and nothing from it on. Re-arming replaces an earlier arming.
    pub fn cut_on(&self, packet_type: u8, direction: Direction, nth: usize) {
        lock(&self.shared.triggers).cut_on = Some(CutOn {
            kind: packet_type,
            direction,
            nth: nth.max(1),
            seen: 0,
        });
    }

    /// With `true`, starts recording the packets forwarded from now on (clears
    /// earlier records); `false` stops recording and clears.
    pub fn capture(&self, on: bool) {
        *lock(&self.shared.capture) = on.then(Vec::new);
    }

    /// The packets recorded since [`capture`](Self::capture)`(true)`, in the
    /// order the proxy read them.
    pub fn captured(&self) -> Vec<CapturedPacket> {
        lock(&self.shared.capture).clone().unwrap_or_default()
    }

    /// Connections accepted so far (refused ones included).
    pub fn accepted(&self) -> u64 {
        self.shared.accepted.load(Ordering::SeqCst)
    }

    /// Connections accepted and reset because of [`refuse`](Self::refuse).
    pub fn refused(&self) -> u64 {
        self.shared.refused.load(Ordering::SeqCst)
    }

    /// Connections open now.
    pub fn active(&self) -> usize {
        lock(&self.shared.conns).len()
    }

    /// Bytes forwarded so far in `direction`.
    pub fn bytes(&self, direction: Direction) -> u64 {
        match direction {
            Direction::ClientToBroker => self.shared.client_to_broker.load(Ordering::SeqCst),
            Direction::BrokerToClient => self.shared.broker_to_client.load(Ordering::SeqCst),
        }
    }

    /// How many [`cut_after_bytes`](Self::cut_after_bytes) and
    /// [`cut_on`](Self::cut_on) triggers fired so far.
    pub fn cuts(&self) -> u64 {
        self.shared.cuts.load(Ordering::SeqCst)
    }

    /// Waits until at least `n` connections were accepted; false after `within`.
    pub async fn wait_accepted(&self, n: u64, within: Duration) -> bool {
        wait_until(within, || self.accepted() >= n).await
    }

    /// Waits until at least `n` cuts fired; false after `within`.
    pub async fn wait_cuts(&self, n: u64, within: Duration) -> bool {
        wait_until(within, || self.cuts() >= n).await
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.shared.shutdown.cancel();
    }
}

async fn wait_until(within: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + within;
    loop {
        if done() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        sleep(Duration::from_millis(5)).await;
    }
}

impl Shared {
    fn close_all(&self, how: Close) {
        for conn in lock(&self.conns).values() {
            conn.close(how);
        }
    }

    fn close(&self, id: u64, how: Close) {
        if let Some(conn) = lock(&self.conns).get(&id) {
            conn.close(how);
        }
    }

    /// Scans a chunk read in `direction` of connection `id`: records packets,
    /// fires triggers. Returns how much of it to forward and whether to close
    /// after that.
    fn inspect(
        &self,
        id: u64,
        direction: Direction,
        scanner: &mut Scanner,
        data: &[u8],
    ) -> (usize, Option<Close>) {
        let events = scanner.feed(data);
        let mut cut: Option<(usize, Close)> = None;
        {
            let mut triggers = lock(&self.triggers);
            if let Some(on) = &mut triggers.cut_on {
                if on.direction == direction {
                    for event in &events {
                        if let ScanEvent::Start { offset, header } = event {
                            if header >> 4 == on.kind {
                                on.seen += 1;
                                if on.seen >= on.nth {
                                    cut = Some((*offset, Close::Rst));
                                    break;
                                }
                            }
                        }
                    }
                }
                if cut.is_some() {
                    triggers.cut_on = None;
                }
            }
            let forwarded = cut.map_or(data.len(), |(at, _)| at) as u64;
            if let Some((left, how)) = triggers.cut_after {
                if forwarded >= left {
                    cut = Some((usize::try_from(left).unwrap_or(usize::MAX), how));
                    triggers.cut_after = None;
                } else {
                    triggers.cut_after = Some((left - forwarded, how));
                }
            }
        }
        let len = cut.map_or(data.len(), |(at, _)| at);
        if cut.is_some() {
            self.cuts.fetch_add(1, Ordering::SeqCst);
        }
        if let Some(records) = lock(&self.capture).as_mut() {
            for event in events {
                if let ScanEvent::End { offset, frame } = event {
                    if offset <= len {
                        records.push(CapturedPacket::new(id, direction, frame));
                    }
                }
            }
        }
        (len, cut.map(|(_, how)| how))
    }

    fn count(&self, direction: Direction, n: usize) {
        let counter = match direction {
            Direction::ClientToBroker => &self.client_to_broker,
            Direction::BrokerToClient => &self.broker_to_client,
        };
        counter.fetch_add(n as u64, Ordering::SeqCst);
    }
}

impl Conn {
    fn close(&self, how: Close) {
        for socket in [&self.client, &self.upstream] {
            match how {
                Close::Rst => {
                    let _ = socket.set_zero_linger();
                }
                Close::Fin => {
                    let _ = socket2::SockRef::from(&**socket).shutdown(Shutdown::Both);
                }
            }
        }
        self.token.cancel();
    }
}

async fn accept_loop(shared: Arc<Shared>, listener: TcpListener) {
    let mut next_id = 0u64;
    loop {
        let accepted = tokio::select! {
            _ = shared.shutdown.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        let Ok((client, _)) = accepted else {
            // Out of file descriptors or similar: do not spin.
            sleep(Duration::from_millis(10)).await;
            continue;
        };
        shared.accepted.fetch_add(1, Ordering::SeqCst);
        if shared.settings.borrow().refuse {
            shared.refused.fetch_add(1, Ordering::SeqCst);
            let _ = client.set_zero_linger();
            drop(client);
            continue;
        }
        next_id += 1;
        tokio::spawn(serve(shared.clone(), client, next_id));
    }
}

/// Forwards one connection until both directions ended or it is closed.
async fn serve(shared: Arc<Shared>, client: TcpStream, id: u64) {
    let token = shared.shutdown.child_token();
    let upstream = tokio::select! {
        _ = token.cancelled() => return,
        upstream = timeout(UPSTREAM_CONNECT_TIMEOUT, TcpStream::connect(shared.upstream)) => upstream,
    };
    let Ok(Ok(upstream)) = upstream else {
        let _ = client.set_zero_linger();
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = upstream.set_nodelay(true);
    let client = Arc::new(client);
    let upstream = Arc::new(upstream);
    lock(&shared.conns).insert(
        id,
        Conn {
            token: token.clone(),
            client: client.clone(),
            upstream: upstream.clone(),
        },
    );
    let forward = async {
        tokio::join!(
            pump(&shared, id, Direction::ClientToBroker, &client, &upstream),
            pump(&shared, id, Direction::BrokerToClient, &upstream, &client),
        )
    };
    tokio::select! {
        _ = token.cancelled() => {}
        _ = forward => {}
    }
    lock(&shared.conns).remove(&id);
}

#[derive(Debug)]
enum Chunk {
    Data(Instant, Vec<u8>),
    /// The source closed its sending side.
    Eof,
    /// The source broke (reset): break the other side too.
    Reset,
    /// A trigger fired: close the connection after the data before this.
    Cut(Close),
}

/// One direction: a read side feeding a write side through a bounded queue.
async fn pump(shared: &Shared, id: u64, direction: Direction, src: &TcpStream, dst: &TcpStream) {
    let (tx, rx) = mpsc::channel(QUEUE_CHUNKS);
    tokio::join!(
        read_side(shared, id, direction, src, tx),
        write_side(shared, id, direction, dst, rx),
    );
}

async fn read_side(
    shared: &Shared,
    id: u64,
    direction: Direction,
    src: &TcpStream,
    tx: mpsc::Sender<Chunk>,
) {
    let mut scanner = Scanner::new();
    let mut settings = shared.settings.subscribe();
    let mut buf = vec![0u8; MAX_CHUNK];
    loop {
        let limit = match settings.wait_for(|s| !s.blackhole).await {
            Ok(s) => s.read_limit(),
            Err(_) => return,
        };
        if src.readable().await.is_err() {
            let _ = tx.send(Chunk::Reset).await;
            return;
        }
        let n = match src.try_read(&mut buf[..limit]) {
            Ok(0) => {
                let _ = tx.send(Chunk::Eof).await;
                return;
            }
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(_) => {
                let _ = tx.send(Chunk::Reset).await;
                return;
            }
        };
        let (len, cut) = shared.inspect(id, direction, &mut scanner, &buf[..n]);
        if len > 0
            && tx
                .send(Chunk::Data(Instant::now(), buf[..len].to_vec()))
                .await
                .is_err()
        {
            return;
        }
        if let Some(how) = cut {
            let _ = tx.send(Chunk::Cut(how)).await;
            return;
        }
    }
}

async fn write_side(
    shared: &Shared,
    id: u64,
    direction: Direction,
    dst: &TcpStream,
    mut rx: mpsc::Receiver<Chunk>,
) {
    let mut settings = shared.settings.subscribe();
    let mut next_free = Instant::now();
    while let Some(chunk) = rx.recv().await {
        let data = match chunk {
            Chunk::Data(read_at, data) => {
                let delay = settings.borrow().delay;
                if !delay.is_zero() {
                    sleep_until(read_at + delay).await;
                }
                data
            }
            Chunk::Eof => {
                let _ = socket2::SockRef::from(dst).shutdown(Shutdown::Write);
                return;
            }
            Chunk::Reset => return shared.close(id, Close::Rst),
            Chunk::Cut(how) => return shared.close(id, how),
        };
        let mut at = 0;
        while at < data.len() {
            let current = match settings.wait_for(|s| !s.blackhole).await {
                Ok(s) => *s,
                Err(_) => return,
            };
            let piece = (data.len() - at).min(current.write_limit());
            if let Some(bps) = current.throttle {
                let now = Instant::now();
                if next_free > now {
                    sleep_until(next_free).await;
                }
                next_free = next_free.max(now) + Duration::from_secs_f64(piece as f64 / bps as f64);
            }
            if write_all(dst, &data[at..at + piece]).await.is_err() {
                return shared.close(id, Close::Rst);
            }
            shared.count(direction, piece);
            at += piece;
            if current.split.is_some() {
                tokio::task::yield_now().await;
            }
        }
    }
}

async fn write_all(dst: &TcpStream, mut data: &[u8]) -> io::Result<()> {
    while !data.is_empty() {
        dst.writable().await?;
        match dst.try_write(data) {
            Ok(n) => data = &data[n..],
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
