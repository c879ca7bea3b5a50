//! Large transfers over streams: past `max_body` with bounded memory, progress, both
//! directions, and every way the declared length can disagree with the data.

use std::hash::Hasher;
use std::io::{self, Read, Write};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use ringrpc::transfer::{Download, TransferError, send_from};
use ringrpc::{Client, Config, RunningServer, Server, ServerBuilder, StreamError};

const LONG: Duration = Duration::from_secs(30);

fn serve(builder: ServerBuilder) -> RunningServer {
    let config = Config::builder()
        .cores(1)
        .listen("127.0.0.1:0")
        .max_body(1 << 20)
        .build()
        .unwrap();
    builder.config(config).build().unwrap().start().unwrap()
}

/// A reader of `len` bytes of a repeating pattern, generated as read (no buffer).
struct Pattern {
    left: u64,
    next: u8,
}

impl Read for Pattern {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = (buf.len() as u64).min(self.left) as usize;
        for b in &mut buf[..n] {
            *b = self.next;
            self.next = self.next.wrapping_mul(31).wrapping_add(7);
        }
        self.left -= n as u64;
        Ok(n)
    }
}

fn pattern(len: u64) -> Pattern {
    Pattern { left: len, next: 1 }
}

/// A sink that hashes what it is given.
#[derive(Default)]
struct HashSink(std::collections::hash_map::DefaultHasher);

impl Write for HashSink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.write(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn hash_of(mut source: impl Read) -> u64 {
    let mut sink = HashSink::default();
    io::copy(&mut source, &mut sink).unwrap();
    sink.0.finish()
}

fn store_server() -> RunningServer {
    serve(Server::builder().route_stream_blocking("/store", |stream| {
        let download = match Download::start(&stream, Some(LONG)) {
            Ok(d) => d,
            Err(e) => return drop(stream.close_with_error(&e.to_string())),
        };
        let mut sink = HashSink::default();
        let mut last = 0;
        match download.copy_to(&mut sink, |got, _total| {
            assert!(got > last, "progress moves forward");
            last = got;
        }) {
            Ok(n) => drop(stream.send_and_close(format!("{n} {}", sink.0.finish()))),
            Err(e) => drop(stream.close_with_error(&e.to_string())),
        }
    }))
}

#[test]
fn an_upload_far_past_max_body_arrives_whole_with_progress() {
    const TOTAL: u64 = 48 << 20; // 48 frames' worth of max_body
    let server = store_server();
    let client = Client::connect(&server.local_addr().to_string()).unwrap();
    let progress = Arc::new(Mutex::new(Vec::new()));
    let seen = progress.clone();
    let answer = client
        .upload("/store", pattern(TOTAL), TOTAL, move |sent, total| {
            seen.lock().unwrap().push((sent, total));
        })
        .unwrap();
    assert_eq!(
        answer,
        Bytes::from(format!("{TOTAL} {}", hash_of(pattern(TOTAL))))
    );
    let progress = progress.lock().unwrap();
    assert_eq!(progress.last(), Some(&(TOTAL, TOTAL)));
    assert_eq!(
        progress.len() as u64,
        TOTAL / ringrpc::transfer::DEFAULT_CHUNK as u64
    );
    server.shutdown().unwrap();
}

#[test]
fn a_source_shorter_or_longer_than_declared_fails_both_sides() {
    let server = store_server();
    let client = Client::connect(&server.local_addr().to_string()).unwrap();
    let short = client.upload("/store", pattern(500), 1000, |_, _| {});
    assert!(
        matches!(
            short,
            Err(TransferError::LengthMismatch {
                declared: 1000,
                actual: 500
            })
        ),
        "{short:?}"
    );
    let long = client.upload("/store", pattern(2000), 1000, |_, _| {});
    assert!(
        matches!(long, Err(TransferError::LengthMismatch { .. })),
        "{long:?}"
    );

    // The receiver's view of a short stream: its error end names the cause.
    let stream = client.open_stream("/store").unwrap();
    let sender = stream.sender();
    sender
        .send(Bytes::copy_from_slice(&100u64.to_le_bytes()))
        .unwrap();
    sender.send("only ten b").unwrap();
    sender.close_send().unwrap();
    assert_eq!(
        stream.recv_timeout(LONG),
        Err(StreamError::Remote(
            "the transfer declared 100 bytes but carried 10".into()
        ))
    );
    server.shutdown().unwrap();
}

#[test]
fn a_download_is_reassembled_under_a_limit_or_refused_before_reading() {
    const TOTAL: u64 = 5 << 20;
    let server = serve(Server::builder().route_stream_blocking("/fetch", |stream| {
        // The request names the size; the answer is the transfer.
        let Ok(Some(size)) = stream.recv() else {
            return;
        };
        let size: u64 = String::from_utf8_lossy(&size).parse().unwrap();
        let _ = send_from(&stream.sender(), pattern(size), size, 64 * 1024, |_, _| {});
    }));
    let client = Client::connect(&server.local_addr().to_string()).unwrap();

    let stream = client.open_stream("/fetch").unwrap();
    stream.send(TOTAL.to_string()).unwrap();
    let download = Download::start(&stream, Some(LONG)).unwrap();
    assert_eq!(download.total(), TOTAL);
    let all = download.into_bytes(8 << 20).unwrap();
    assert_eq!(all.len() as u64, TOTAL);
    assert_eq!(hash_of(&all[..]), hash_of(pattern(TOTAL)));

    let stream = client.open_stream("/fetch").unwrap();
    stream.send(TOTAL.to_string()).unwrap();
    let download = Download::start(&stream, Some(LONG)).unwrap();
    assert!(matches!(
        download.into_bytes(1 << 20),
        Err(TransferError::TooLarge {
            declared: TOTAL,
            limit: 1_048_576
        })
    ));
    server.shutdown().unwrap();
}
