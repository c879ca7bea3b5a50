//! A large upload with progress: 1 GiB (or the size given in MiB) streamed to a server whose
//! frame limit is 1 MiB, consumed chunk by chunk on the server, so neither side holds more
//! than a few chunks. Run: `cargo run --release --example upload` (or `-- 64` for 64 MiB).

use std::io::{self, Read, Write};
use std::time::Instant;

use ringrpc::transfer::Download;
use ringrpc::{Client, Config, Server};

/// `len` bytes of zeros-and-counter, produced as read: the source holds no buffer.
struct Source {
    left: u64,
    counter: u8,
}

impl Read for Source {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = (buf.len() as u64).min(self.left) as usize;
        for b in &mut buf[..n] {
            self.counter = self.counter.wrapping_add(1);
            *b = self.counter;
        }
        self.left -= n as u64;
        Ok(n)
    }
}

/// Counts and sums what it is given.
#[derive(Default)]
struct Tally {
    bytes: u64,
    sum: u64,
}

impl Write for Tally {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.bytes += buf.len() as u64;
        self.sum = buf.iter().fold(self.sum, |s, &b| s.wrapping_add(b as u64));
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn run(mib: u64) -> Result<(), Box<dyn std::error::Error>> {
    let total = mib << 20;
    let config = Config::builder()
        .cores(1)
        .listen("127.0.0.1:0")
        .max_body(1 << 20) // far below the upload: it travels as chunks
        .build()?;
    let server = Server::builder()
        .config(config)
        .route_stream_blocking("/upload", |stream| {
            let result = Download::start(&stream, None).and_then(|download| {
                let mut tally = Tally::default();
                download.copy_to(&mut tally, |_, _| {})?;
                Ok(tally)
            });
            let _ = match result {
                Ok(t) => stream.send_and_close(format!("stored {} bytes, sum {}", t.bytes, t.sum)),
                Err(e) => stream.close_with_error(&e.to_string()),
            };
        })
        .build()?
        .start()?;

    let client = Client::connect(&server.local_addr().to_string())?;
    let started = Instant::now();
    let mut next_report = 0u64;
    let answer = client.upload(
        "/upload",
        Source {
            left: total,
            counter: 0,
        },
        total,
        |sent, total| {
            if sent >= next_report {
                println!(
                    "{:>5.1}%  {} MiB",
                    sent as f64 * 100.0 / total as f64,
                    sent >> 20
                );
                next_report += total / 10;
            }
        },
    )?;
    let secs = started.elapsed().as_secs_f64();
    println!(
        "server: {}  ({:.0} MiB/s)",
        String::from_utf8_lossy(&answer),
        (total >> 20) as f64 / secs
    );
    let mut expected = Tally::default();
    io::copy(
        &mut Source {
            left: total,
            counter: 0,
        },
        &mut expected,
    )?;
    assert_eq!(
        String::from_utf8_lossy(&answer),
        format!("stored {} bytes, sum {}", expected.bytes, expected.sum)
    );
    drop(client);
    server.shutdown()?;
    Ok(())
}

#[cfg_attr(test, allow(dead_code))]
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mib = std::env::args()
        .nth(1)
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(1024);
    run(mib)
}

#[test]
fn example_runs() {
    run(16).unwrap();
}
