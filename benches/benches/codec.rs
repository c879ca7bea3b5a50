//! Criterion benchmarks of the codec: encode and decode of 32 B and 4 KiB payload frames.
//!
//! Each iteration handles a batch of frames, reported both as frames per second and as wire
//! bytes per second.
use std::hint::black_box;

use bytes::{Bytes, BytesMut};
use criterion::measurement::WallTime;
use criterion::{
    BatchSize, BenchmarkGroup, BenchmarkId, Criterion, Throughput, criterion_group, criterion_main,
};
use ringrpc_protocol::{
    Command, DEFAULT_MAX_BODY, Decoder, Flags, Frame, parse_frame, write_frame,
};

/// Frames per iteration: enough to amortise the per-iteration overhead of criterion.
const FRAMES_PER_BATCH: usize = 1000;
const METHOD: &[u8] = b"/echo";

/// One payload size's inputs: the frames and their concatenated encoding.
struct Workload {
    label: &'static str,
    payload: Bytes,
    frames: Vec<Frame>,
    wire: BytesMut,
}

impl Workload {
    fn new(label: &'static str, payload_len: usize) -> Workload {
        let payload: Bytes = (0..payload_len)
            .map(|i| i as u8)
            .collect::<Vec<u8>>()
            .into();
        let frames: Vec<Frame> = (0..FRAMES_PER_BATCH as u64)
            .map(|seq| Frame::request(seq, METHOD, payload.clone()))
            .collect();
        let mut wire = BytesMut::new();
        for frame in &frames {
            frame.encode_to(&mut wire);
        }
        Workload {
            label,
            payload,
            frames,
            wire,
        }
    }

    fn wire_len(&self) -> u64 {
        self.wire.len() as u64
    }
}

fn decode_with_decoder(decoder: &Decoder, mut buf: BytesMut) -> usize {
    let mut count = 0;
    while let Some(frame) = decoder.decode(&mut buf).expect("benchmark input is valid") {
        black_box(&frame);
        count += 1;
    }
    count
}

fn decode_with_parse_frame(mut rest: &[u8]) -> usize {
    let mut count = 0;
    while let Some((frame, used)) =
        parse_frame(rest, DEFAULT_MAX_BODY).expect("benchmark input is valid")
    {
        black_box(&frame);
        rest = &rest[used..];
        count += 1;
    }
    count
}

fn encode_with_write_frame(dst: &mut BytesMut, payload: &[u8]) {
    dst.clear();
    for seq in 0..FRAMES_PER_BATCH as u64 {
        write_frame(
            dst,
            Command::Response,
            Flags::default(),
            0,
            seq,
            METHOD,
            payload,
        );
    }
    black_box(dst.len());
}

fn encode_with_frame_head(frames: &[Frame]) {
    for frame in frames {
        let (head, payload) = frame.encode();
        black_box(head.as_bytes());
        black_box(payload);
    }
}

/// Registers every codec benchmark for `workload` in `group`.
fn bench_workload(group: &mut BenchmarkGroup<'_, WallTime>, workload: &Workload) {
    let decoder = Decoder::default();
    // Both decode paths must see every frame, or the throughput figures would lie.
    assert_eq!(
        decode_with_decoder(&decoder, workload.wire.clone()),
        FRAMES_PER_BATCH
    );
    assert_eq!(decode_with_parse_frame(&workload.wire), FRAMES_PER_BATCH);

    group.bench_function(BenchmarkId::new("decode/Decoder", workload.label), |b| {
        b.iter_batched(
            || workload.wire.clone(),
            |buf| decode_with_decoder(&decoder, buf),
            BatchSize::LargeInput,
        )
    });
    group.bench_function(
        BenchmarkId::new("decode/parse_frame", workload.label),
        |b| b.iter(|| decode_with_parse_frame(black_box(&workload.wire))),
    );

    let mut reused = BytesMut::with_capacity(workload.wire.len());
    group.bench_function(
        BenchmarkId::new("encode/write_frame", workload.label),
        |b| b.iter(|| encode_with_write_frame(&mut reused, black_box(&workload.payload))),
    );
    group.bench_function(
        BenchmarkId::new("encode/Frame::encode", workload.label),
        |b| b.iter(|| encode_with_frame_head(black_box(&workload.frames))),
    );
}

fn codec(c: &mut Criterion) {
    let workloads = [Workload::new("32B", 32), Workload::new("4KiB", 4096)];

    let mut frames = c.benchmark_group("codec_frames");
    for workload in &workloads {
        frames.throughput(Throughput::Elements(FRAMES_PER_BATCH as u64));
        bench_workload(&mut frames, workload);
    }
    frames.finish();

    let mut bytes = c.benchmark_group("codec_bytes");
    for workload in &workloads {
        bytes.throughput(Throughput::Bytes(workload.wire_len()));
        bench_workload(&mut bytes, workload);
    }
    bytes.finish();
}

criterion_group!(benches, codec);
criterion_main!(benches);
