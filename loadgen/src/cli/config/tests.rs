//! Flag combinations: defaults and derived values, and each refusal naming its flag.

use std::time::Duration;

use clap::Parser;

use super::*;

#[test]
fn flags_defaults_and_derived_values() {
    let cli = Cli::try_parse_from([
        "loadgen",
        "--target",
        ":9000",
        "--conns",
        "3",
        "--threads",
        "8",
    ])
    .unwrap();
    let config = Config::from_cli(cli).unwrap();
    assert_eq!(config.target, "127.0.0.1:9000");
    assert_eq!(config.threads, 3, "threads are capped at conns");
    assert_eq!(config.per_conn, 10);
    assert_eq!(config.duration, Duration::from_secs(10));
    assert_eq!(config.warmup, Duration::from_secs(2));
    assert_eq!(config.timeout, Duration::from_secs(5));
    assert_eq!(config.payload, 32);
    assert_eq!(config.method, "/echo");
}

#[test]
fn sizes_take_units() {
    for (text, bytes) in [
        ("4096", 4096),
        ("4KiB", 4096),
        ("4k", 4096),
        ("1MiB", 1 << 20),
    ] {
        let cli = Cli::try_parse_from(["loadgen", "--payload", text, "--udp-max-datagram", "8k"])
            .unwrap();
        assert_eq!(cli.payload, bytes, "--payload {text}");
        assert_eq!(cli.udp_max_datagram, 8192);
    }
    let err = Cli::try_parse_from(["loadgen", "--payload", "1.5KiB"])
        .unwrap_err()
        .to_string();
    assert!(err.contains("--payload") && err.contains("KiB"), "{err}");
}

#[test]
fn flags_rejected() {
    for flag in ["--conns", "--per-conn"] {
        let err = Cli::try_parse_from(["loadgen", flag, "0"])
            .unwrap_err()
            .to_string();
        assert!(err.contains(flag), "{flag}: {err}");
        assert!(err.contains("must be at least 1, got 0"), "{flag}: {err}");
    }
    for args in [
        &["loadgen", "--duration", "0s"][..],
        &["loadgen", "--threads", "0"],
        &["loadgen", "--method", ""],
    ] {
        let cli = Cli::try_parse_from(args).unwrap();
        assert!(
            Config::from_cli(cli).is_err(),
            "{args:?} should be rejected"
        );
    }
    assert!(Cli::try_parse_from(["loadgen", "--duration", "soon"]).is_err());
    assert!(Cli::try_parse_from(["loadgen", "--cpus", "1-"]).is_err());
    assert!(Cli::try_parse_from(["loadgen", "--proto", "http"]).is_err());
}

#[test]
fn negative_numbers_are_named_not_taken_for_flags() {
    for flag in [
        "--payload",
        "--conns",
        "--per-conn",
        "--threads",
        "--server-pid",
    ] {
        let err = Cli::try_parse_from(["loadgen", flag, "-5"])
            .unwrap_err()
            .to_string();
        assert!(err.contains(flag), "{flag}: {err}");
        assert!(
            err.contains("must not be negative, got -5"),
            "{flag}: {err}"
        );
    }
    let cli = Cli::try_parse_from(["loadgen", "--rate", "-5"]).unwrap();
    let err = Config::from_cli(cli).unwrap_err();
    assert!(err.0.contains("--rate must be a positive number"), "{err}");
}

#[test]
fn targets_need_a_port_in_range() {
    let target = |t: &str| normalize_target(t);
    assert_eq!(target(":9000").unwrap(), "127.0.0.1:9000");
    assert_eq!(target("[::1]:9000").unwrap(), "[::1]:9000");
    assert_eq!(target("localhost:9000").unwrap(), "localhost:9000");
    assert!(target("::1").unwrap_err().contains("has no port"));
    assert!(target("localhost").unwrap_err().contains("has no port"));
    assert!(
        target(":99999")
            .unwrap_err()
            .contains("out of range (0–65535)")
    );
    assert!(target("host:http").unwrap_err().contains("not a number"));
}

#[test]
fn grpc_calls_the_echo_service_and_refuses_arpc_only_flags() {
    let cli = Cli::try_parse_from(["loadgen", "--proto", "grpc", "--io", "std"]).unwrap();
    let config = Config::from_cli(cli).unwrap();
    assert_eq!(config.proto, Proto::Grpc);
    assert_eq!(config.method, GRPC_ECHO_METHOD);
    let arpc = Config::from_cli(Cli::try_parse_from(["loadgen"]).unwrap()).unwrap();
    assert_eq!((arpc.proto, arpc.method.as_str()), (Proto::Arpc, "/echo"));

    let too_big = (GRPC_MAX_PAYLOAD + 1).to_string();
    for (flags, named) in [
        (&["--rate", "100"][..], "--rate"),
        (&["--reflect"], "--reflect"),
        (&["--method", "/other"], "--method"),
        (&["--payload", too_big.as_str()], "--payload"),
    ] {
        let mut args = vec!["loadgen", "--proto", "grpc"];
        args.extend_from_slice(flags);
        let error = Config::from_cli(Cli::try_parse_from(&args).unwrap()).unwrap_err();
        assert!(error.0.contains(named), "{args:?}: {error}");
    }
}

#[test]
fn udp_flags_defaults_and_oversize_payload_refused() {
    let config =
        Config::from_cli(Cli::try_parse_from(["loadgen", "--transport", "udp"]).unwrap()).unwrap();
    assert_eq!(config.transport, Transport::Udp);
    let udp = config.udp.unwrap();
    assert_eq!(udp.retry_after, Duration::from_millis(20));
    assert_eq!((udp.attempts, udp.max_datagram), (5, 1472));
    assert_eq!(udp.backoff(1), Duration::from_millis(20));
    assert_eq!(udp.backoff(3), Duration::from_millis(80));
    let tcp = Config::from_cli(Cli::try_parse_from(["loadgen"]).unwrap()).unwrap();
    assert_eq!((tcp.transport, tcp.udp), (Transport::Tcp, None));

    // 16 + 5 ("/echo") + 1451 = 1472 fits; one byte more does not.
    let fits = ["loadgen", "--transport", "udp", "--payload", "1451"];
    assert!(Config::from_cli(Cli::try_parse_from(fits).unwrap()).is_ok());
    let over = ["loadgen", "--transport", "udp", "--payload", "1452"];
    let error = Config::from_cli(Cli::try_parse_from(over).unwrap()).unwrap_err();
    assert!(error.0.contains("--udp-max-datagram 1472"), "{error}");
    assert!(error.0.contains("--payload 1451 or less"), "{error}");
    let raised = [
        "loadgen",
        "--transport",
        "udp",
        "--payload",
        "1452",
        "--udp-max-datagram",
        "65507",
    ];
    assert!(Config::from_cli(Cli::try_parse_from(raised).unwrap()).is_ok());
    for bad in [
        &["--udp-max-datagram", "65508"][..],
        &["--udp-attempts", "0"],
        &["--udp-retry-after", "0ms"],
        &["--proto", "grpc"],
    ] {
        let mut args = vec!["loadgen", "--transport", "udp"];
        args.extend_from_slice(bad);
        assert!(
            Config::from_cli(Cli::try_parse_from(&args).unwrap()).is_err(),
            "{args:?}"
        );
    }
}

#[test]
fn pubsub_flags_defaults_and_refusals() {
    let config =
        Config::from_cli(Cli::try_parse_from(["loadgen", "--pattern", "pubsub"]).unwrap()).unwrap();
    assert_eq!(config.pattern, Pattern::Pubsub);
    assert_eq!(config.method, METHOD_PUBLISH);
    assert_eq!(config.subscribers, DEFAULT_SUBSCRIBERS);
    assert_eq!(config.topic, DEFAULT_TOPIC);
    assert_eq!(config.pubsub_password, None);
    let given = [
        "loadgen",
        "--pattern",
        "pubsub",
        "--subscribers",
        "5",
        "--topic",
        "news",
        "--pubsub-password",
        "s3cret",
    ];
    let config = Config::from_cli(Cli::try_parse_from(given).unwrap()).unwrap();
    assert_eq!(config.subscribers, 5);
    assert_eq!(config.topic, "news");
    assert_eq!(config.pubsub_password.as_deref(), Some("s3cret"));
    let call = Config::from_cli(Cli::try_parse_from(["loadgen"]).unwrap()).unwrap();
    assert_eq!(call.subscribers, 0);

    let long_topic = "t".repeat(1025);
    for (flags, named) in [
        (
            &["--pattern", "pubsub", "--subscribers", "0"][..],
            "--subscribers",
        ),
        (&["--pattern", "pubsub", "--topic", ""], "--topic"),
        (&["--pattern", "pubsub", "--topic", &long_topic], "--topic"),
        (&["--pattern", "pubsub", "--method", "in_P1"], "--method"),
        (
            &["--pattern", "pubsub", "--transport", "udp"],
            "--transport tcp",
        ),
        (&["--pattern", "pubsub", "--reflect"], "--reflect"),
        (
            &["--subscribers", "3"],
            "--subscribers applies to --pattern pubsub",
        ),
        (&["--pattern", "stream", "--topic", "x"], "--topic applies"),
        (&["--pubsub-password", "x"], "--pubsub-password applies"),
    ] {
        let mut args = vec!["loadgen"];
        args.extend_from_slice(flags);
        let error = Config::from_cli(Cli::try_parse_from(&args).unwrap()).unwrap_err();
        assert!(error.0.contains(named), "{args:?}: {error}");
    }
}
