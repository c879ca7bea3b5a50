//! loadgen's `--tls`, `unix:` targets and `--reconnect-every` against a real ringrpc engine
//! (TLS-only, certificates made here with rcgen): every request accounted for, the engine
//! seeing one connection per reconnect, and the flags that do not fit refused.

mod common;

use std::path::{Path, PathBuf};

use clap::Parser;
use common::assert_clean;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
use ringrpc::{Config as EngineConfig, RunningServer, Server};
use ringrpc_loadgen::{Cli, Config, Report, run};

/// A CA (`ca.pem`) and a certificate for localhost it signed (`server.pem`, `server.key`).
struct Certs(PathBuf);

impl Certs {
    fn new(name: &str) -> Certs {
        let dir = std::env::temp_dir().join(format!("loadgen-tls-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let ca_key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "loadgen test CA");
        let ca = params.self_signed(&ca_key).unwrap();
        let key = KeyPair::generate().unwrap();
        let server = CertificateParams::new(vec!["localhost".to_string()])
            .unwrap()
            .signed_by(&key, &ca, &ca_key)
            .unwrap();
        std::fs::write(dir.join("ca.pem"), ca.pem()).unwrap();
        std::fs::write(dir.join("server.pem"), server.pem()).unwrap();
        std::fs::write(dir.join("server.key"), key.serialize_pem()).unwrap();
        Certs(dir)
    }

    fn path(&self, file: &str) -> String {
        self.0.join(file).to_str().unwrap().to_string()
    }
}

impl Drop for Certs {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// An engine on `listen`, TLS-only when `certs` are given.
fn engine(listen: &str, certs: Option<&Certs>) -> RunningServer {
    let mut config = EngineConfig::builder().cores(1).listen(listen);
    if let Some(certs) = certs {
        config = config
            .tls(certs.path("server.pem"), certs.path("server.key"))
            .tls_required(true);
    }
    Server::builder()
        .config(config.build().unwrap())
        .build()
        .unwrap()
        .start()
        .unwrap()
}

fn cli(target: &str, flags: &[&str]) -> Result<Config, String> {
    let mut args = vec![
        "loadgen",
        "--target",
        target,
        "--quiet",
        "--duration",
        "500ms",
        "--warmup",
        "100ms",
    ];
    args.extend_from_slice(flags);
    let cli = Cli::try_parse_from(args).map_err(|e| e.to_string())?;
    Config::from_cli(cli).map_err(|e| e.to_string())
}

fn load(target: &str, flags: &[&str]) -> Report {
    run(&cli(target, flags).expect("valid flags")).expect("run")
}

#[test]
fn calls_over_tls_on_every_io_engine_with_a_ca_or_insecure() {
    let certs = Certs::new("calls");
    let server = engine("127.0.0.1:0", Some(&certs));
    let target = server.local_addr().to_string();
    let ca = certs.path("ca.pem");
    for io in ["uring", "std", "epoll"] {
        let report = load(
            &target,
            &[
                "--tls",
                "--tls-ca",
                &ca,
                "--io",
                io,
                "--conns",
                "3",
                "--per-conn",
                "4",
            ],
        );
        assert_clean(&report);
    }
    // 4 KiB payloads (records of their own) and a certificate loadgen does not check.
    let report = load(
        &target,
        &[
            "--tls",
            "--tls-insecure",
            "--payload",
            "4KiB",
            "--conns",
            "2",
        ],
    );
    assert_clean(&report);
    let stats = server.shutdown().unwrap().total();
    assert_eq!(stats.accepted, 3 + 3 + 3 + 2);
    assert!(stats.requests >= report.counts.answered);
}

#[test]
fn a_certificate_from_another_ca_or_a_wrong_name_fails_the_connect() {
    let certs = Certs::new("refused");
    let other = Certs::new("refused-other");
    let server = engine("127.0.0.1:0", Some(&certs));
    let target = server.local_addr().to_string();
    for flags in [
        vec!["--tls", "--tls-ca", &other.path("ca.pem")],
        vec![
            "--tls",
            "--tls-ca",
            &certs.path("ca.pem"),
            "--tls-server-name",
            "example.com",
        ],
    ] {
        let e = run(&cli(&target, &flags).unwrap()).unwrap_err();
        assert!(e.to_string().contains("TLS handshake failed"), "{e}");
    }
    server.shutdown().unwrap();
}

#[test]
fn reconnect_every_opens_a_new_connection_and_handshake_per_n_calls() {
    let certs = Certs::new("reconnect");
    let ca = certs.path("ca.pem");
    for io in ["uring", "std", "epoll"] {
        let server = engine("127.0.0.1:0", Some(&certs));
        let target = server.local_addr().to_string();
        let report = load(
            &target,
            &[
                "--tls",
                "--tls-ca",
                &ca,
                "--io",
                io,
                "--conns",
                "2",
                "--per-conn",
                "4",
                "--reconnect-every",
                "5",
            ],
        );
        assert_clean(&report);
        let answered = report.counts.answered;
        let stats = server.shutdown().unwrap().total();
        // At least one connection per 5 measured answers (warmup ones opened more).
        assert!(
            stats.accepted >= answered / 5 && stats.accepted > 4,
            "--io {io}: {} connections for {answered} calls",
            stats.accepted
        );
    }
}

#[test]
fn unix_targets_carry_calls_plain_and_under_tls() {
    let certs = Certs::new("unix");
    let dir = Path::new(&certs.0);
    for tls in [false, true] {
        let path = dir.join(format!("engine-{tls}.sock"));
        let listen = format!("unix:{}", path.display());
        let server = engine(&listen, tls.then_some(&certs));
        let ca = certs.path("ca.pem");
        let mut flags = vec!["--conns", "2", "--reconnect-every", "50"];
        if tls {
            flags.extend(["--tls", "--tls-ca", &ca]);
        }
        for io in ["uring", "std"] {
            let mut flags = flags.clone();
            flags.extend(["--io", io]);
            assert_clean(&load(&listen, &flags));
        }
        server.shutdown().unwrap();
    }
    // The abstract namespace.
    let name = format!("unix:@loadgen-test-{}", std::process::id());
    let server = engine(&name, None);
    assert_clean(&load(&name, &["--conns", "2"]));
    server.shutdown().unwrap();
}

#[test]
fn tls_unix_and_reconnect_flags_that_do_not_fit_are_refused() {
    for (target, flags, says) in [
        (
            "127.0.0.1:1",
            vec!["--tls-ca", "x.pem"],
            "--tls-ca needs --tls",
        ),
        ("127.0.0.1:1", vec!["--tls"], "--tls-ca FILE"),
        (
            "127.0.0.1:1",
            vec!["--tls", "--transport", "ws", "--tls-insecure"],
            "--transport tcp",
        ),
        (
            "unix:/tmp/x.sock",
            vec!["--proto", "grpc"],
            "--transport tcp",
        ),
        ("unix:", vec![], "names no socket"),
        (
            "127.0.0.1:1",
            vec!["--reconnect-every", "3", "--pattern", "notify"],
            "--pattern call",
        ),
        (
            "127.0.0.1:1",
            vec!["--tls", "--tls-insecure", "--tls-ca", "x.pem"],
            "drop --tls-ca",
        ),
    ] {
        let e = cli(target, &flags).unwrap_err();
        assert!(e.contains(says), "{flags:?}: {e}");
    }
}
