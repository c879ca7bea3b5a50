//! What one seed simulates: the connections and their transports, the limits, which faults
//! are on, how long the workload runs. Everything is drawn from the seed.

use std::time::Duration;

use ringrpc::StreamLimits;
use ringrpc::simulation::SimFraming;

use crate::rng::Rng;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    /// Raw arpc over TCP.
    Raw,
    /// arpc in WebSocket messages.
    WebSocket,
}

#[derive(Clone, Debug)]
pub struct LinkPlan {
    pub transport: Transport,
    /// How the server side frames it.
    pub framing: SimFraming,
    /// One-way latencies.
    pub up_latency: Duration,
    pub down_latency: Duration,
    /// Socket buffers: bytes a direction holds before a send waits.
    pub capacity: usize,
}

#[derive(Clone, Debug)]
pub struct Scenario {
    pub links: Vec<LinkPlan>,
    pub udp_clients: usize,
    pub max_send_queue_bytes: usize,
    pub max_send_queue_frames: u64,
    pub max_in_flight: usize,
    pub streams: StreamLimits,
    pub idle_timeout: Option<Duration>,
    pub keepalive: Option<Duration>,
    pub read_timeout: Option<Duration>,
    pub gzip_threshold: Option<usize>,
    /// Largest call payload.
    pub max_payload: usize,
    /// Largest recv chunk the kernel hands over.
    pub max_chunk: usize,
    pub call_timeout: Duration,
    /// Workload steps before the settle and close phases.
    pub steps: usize,
    /// Faults on.
    pub resets: bool,
    pub half_closes: bool,
    pub garbage: bool,
    pub slow_readers: bool,
    pub clock_jumps: bool,
    /// The end: the server drains (true) or the clients close first.
    pub drain: bool,
    /// Close while calls are still in flight (no settle phase first).
    pub abrupt_end: bool,
    pub udp_loss_per_mille: u64,
    pub udp_dup_per_mille: u64,
    pub dedup_window: Duration,
    pub dedup_capacity: usize,
}

impl Scenario {
    pub fn draw(rng: &mut Rng) -> Scenario {
        let links = (0..rng.usize(1, 4))
            .map(|_| {
                let transport = if rng.percent(40) {
                    Transport::WebSocket
                } else {
                    Transport::Raw
                };
                let framing = match transport {
                    Transport::Raw if rng.percent(50) => SimFraming::ArpcOrWebSocket,
                    Transport::Raw => SimFraming::Arpc,
                    Transport::WebSocket if rng.percent(50) => SimFraming::WebSocket,
                    Transport::WebSocket => SimFraming::ArpcOrWebSocket,
                };
                LinkPlan {
                    transport,
                    framing,
                    up_latency: Duration::from_micros(rng.below(20_000)),
                    down_latency: Duration::from_micros(rng.below(20_000)),
                    capacity: rng.pick(&[2048, 8192, 65_536, 1 << 20]),
                }
            })
            .collect();
        let max_payload = rng.pick(&[64, 2048, 40_000, 200_000]);
        let faults = rng.percent(60);
        Scenario {
            links,
            udp_clients: rng.usize(0, 2),
            max_send_queue_bytes: rng.pick(&[8 << 10, 64 << 10, 4 << 20]),
            max_send_queue_frames: rng.pick(&[16, 256, 65_536]),
            max_in_flight: rng.pick(&[1, 4, 4096]),
            streams: StreamLimits {
                max_streams: rng.pick(&[1, 4, 64]),
                queue_bytes: rng.pick(&[1024, 16 << 10, 1 << 20]),
                send_window: rng.pick(&[512, 16 << 10, 1 << 20]),
            },
            idle_timeout: rng
                .percent(30)
                .then(|| Duration::from_secs(rng.range(5, 60))),
            keepalive: rng
                .percent(30)
                .then(|| Duration::from_millis(rng.range(200, 5000))),
            read_timeout: rng
                .percent(30)
                .then(|| Duration::from_secs(rng.range(2, 30))),
            gzip_threshold: rng.percent(20).then(|| rng.pick(&[64, 1024])),
            max_payload,
            max_chunk: rng.pick(&[1, 7, 1500, 65_536]),
            call_timeout: Duration::from_secs(rng.range(5, 120)),
            steps: rng.usize(20, 400),
            resets: faults && rng.percent(30),
            half_closes: faults && rng.percent(30),
            garbage: faults && rng.percent(15),
            slow_readers: rng.percent(40),
            clock_jumps: faults && rng.percent(40),
            drain: rng.percent(50),
            abrupt_end: rng.percent(30),
            udp_loss_per_mille: rng.pick(&[0, 50, 300]),
            udp_dup_per_mille: rng.pick(&[0, 50, 300]),
            dedup_window: Duration::from_secs(rng.range(1, 10)),
            dedup_capacity: rng.pick(&[4, 64, 4096]),
        }
    }

    pub fn config(&self, framing: SimFraming) -> ringrpc::simulation::SimConfig {
        ringrpc::simulation::SimConfig {
            framing,
            max_body: (self.max_payload as u32 + 1024).max(4096),
            idle_timeout: self.idle_timeout,
            read_timeout: self.read_timeout,
            keepalive: self.keepalive,
            max_send_queue_bytes: self.max_send_queue_bytes,
            max_send_queue_frames: self.max_send_queue_frames,
            pause_reading: true,
            max_in_flight: self.max_in_flight,
            streams: self.streams,
            auth_secret: None,
            gzip_threshold: self.gzip_threshold,
        }
    }
}
