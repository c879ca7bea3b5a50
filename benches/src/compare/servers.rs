//! The servers a comparison can run: how each is started and how loadgen must talk to it.

/// Environment variable naming the external server's row.
pub const EXTRA_NAME_VAR: &str = "COMPARE_EXTRA_NAME";
/// Environment variable holding the external server's command, with `{port}` in it.
pub const EXTRA_CMD_VAR: &str = "COMPARE_EXTRA_CMD";
/// Row name for an external server given without [`EXTRA_NAME_VAR`].
pub const DEFAULT_EXTRA_NAME: &str = "extra";

/// How a server is started and how the comparison learns where it listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Launch {
    /// A binary of this workspace, started on port 0; it prints `... listening on ADDR`.
    Bundled {
        binary: &'static str,
        args: Vec<&'static str>,
    },
    /// A command from the environment, run by `sh -c 'exec COMMAND'` with `{port}` replaced
    /// by a free port; it is ready once that port accepts TCP connections.
    External { command_template: String },
    /// A binary of this workspace serving arpc over UDP on `127.0.0.1:{port}`, `{port}` in
    /// `args` replaced by a free UDP port; it is ready once it answers an arpc `/echo` request
    /// datagram sent there (a reflector's answer is the request itself).
    BundledUdp {
        binary: &'static str,
        args: Vec<&'static str>,
    },
    /// As [`Launch::Bundled`], serving TLS with the certificate compare made at start
    /// (`--tls-cert` and `--tls-key` appended).
    BundledTls {
        binary: &'static str,
        args: Vec<&'static str>,
    },
    /// As [`Launch::Bundled`], listening on a Unix socket in the output directory
    /// ([`SOCKET_PLACEHOLDER`] in `args`); ready once the socket accepts.
    BundledUnix {
        binary: &'static str,
        args: Vec<&'static str>,
    },
    /// HAProxy terminating TLS (compare's certificate, ALPN arpc) on a free port in front of
    /// a bundled server over TCP, both pinned to the server CPU; the server CPU measured is
    /// both processes' (`loadgen --also-server-pid`).
    HaproxyTls {
        binary: &'static str,
        args: Vec<&'static str>,
    },
}

impl Launch {
    /// Whether it needs the certificate compare makes.
    pub fn needs_certificate(&self) -> bool {
        matches!(self, Launch::BundledTls { .. } | Launch::HaproxyTls { .. })
    }
}

/// The Unix socket path placeholder of [`Launch::BundledUnix`].
pub const SOCKET_PLACEHOLDER: &str = "{socket}";

/// The `{port}` placeholder of [`Launch::External`] and [`Launch::BundledUdp`].
pub const PORT_PLACEHOLDER: &str = "{port}";

/// One row of the comparison.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerSpec {
    /// Row name, also used in output file names.
    pub name: String,
    pub launch: Launch,
    /// Flags loadgen needs to talk to this server (protocol, reflection).
    pub loadgen_args: Vec<&'static str>,
}

/// Every server of this workspace, in table order.
pub fn bundled_servers() -> Vec<ServerSpec> {
    let engine_args = vec!["--cores", "1", "--listen", "127.0.0.1:0", "--log", "warn"];
    let mut reflect_args = engine_args.clone();
    reflect_args.push("--reflect");
    let peer_args = vec!["--listen", "127.0.0.1:0", "--threads", "1"];
    let bundled = |name: &str, binary, args, loadgen_args| ServerSpec {
        name: name.to_owned(),
        launch: Launch::Bundled { binary, args },
        loadgen_args,
    };
    vec![
        bundled("engine", "engine", engine_args.clone(), vec![]),
        // The same engine answering from an async task after one yield (`/echo/async`).
        bundled(
            "engine-async",
            "engine",
            engine_args,
            vec!["--method", "/echo/async"],
        ),
        // The engine's own transport limit: its io_uring reactor writing bytes back undecoded.
        bundled("reflect", "engine", reflect_args, vec!["--reflect"]),
        // The floor: a plain epoll loop writing bytes back undecoded.
        bundled(
            "peer-reflect",
            "peer-reflect",
            peer_args.clone(),
            vec!["--reflect"],
        ),
        bundled("peer-tokio", "peer-tokio", peer_args.clone(), vec![]),
        bundled(
            "peer-tokio-uring",
            "peer-tokio-uring",
            peer_args.clone(),
            vec![],
        ),
        bundled("grpc-echo", "grpc-echo", peer_args, vec!["--proto", "grpc"]),
    ]
}

/// Rows run only when named in `--servers`: the engine over TLS (engine-tls), HAProxy
/// terminating TLS in front of the plaintext engine (haproxy-tls: what users had before),
/// and the engine over a Unix socket (engine-unix). loadgen's TLS checks handshake
/// signatures but not the chain (`--tls-insecure`): the certificate is made per run.
pub fn opt_in_servers() -> Vec<ServerSpec> {
    let engine_args = vec!["--cores", "1", "--listen", "127.0.0.1:0", "--log", "warn"];
    let tls = vec!["--tls", "--tls-insecure"];
    vec![
        ServerSpec {
            name: "engine-tls".into(),
            launch: Launch::BundledTls {
                binary: "engine",
                args: engine_args.clone(),
            },
            loadgen_args: tls.clone(),
        },
        ServerSpec {
            name: "haproxy-tls".into(),
            launch: Launch::HaproxyTls {
                binary: "engine",
                args: engine_args,
            },
            loadgen_args: tls,
        },
        ServerSpec {
            name: "engine-unix".into(),
            launch: Launch::BundledUnix {
                binary: "engine",
                args: vec!["--cores", "1", "--listen", "unix:{socket}", "--log", "warn"],
            },
            loadgen_args: vec![],
        },
    ]
}

/// The UDP rows (`compare --transport udp`): the engine's UDP endpoint, and the floor, a
/// reflector that writes every datagram back undecoded. loadgen drives both with
/// `--transport udp`.
pub fn udp_servers() -> Vec<ServerSpec> {
    let udp = |name: &str, binary, args, loadgen_args| ServerSpec {
        name: name.to_owned(),
        launch: Launch::BundledUdp { binary, args },
        loadgen_args,
    };
    vec![
        udp(
            "engine-udp",
            "engine",
            vec![
                "--cores",
                "1",
                "--listen",
                "127.0.0.1:0",
                "--udp-listen",
                "127.0.0.1:{port}",
                "--log",
                "warn",
            ],
            vec!["--transport", "udp"],
        ),
        udp(
            "udp-reflect",
            "peer-udp-reflect",
            vec!["--listen", "127.0.0.1:{port}", "--threads", "1"],
            vec!["--transport", "udp", "--reflect"],
        ),
    ]
}

/// The rows a transport's comparison offers, in table order: `tcp` the bundled TCP servers,
/// `udp` the [`udp_servers`], `all` both.
pub fn servers_for(transport: CompareTransport) -> Vec<ServerSpec> {
    match transport {
        CompareTransport::Tcp => bundled_servers(),
        CompareTransport::Udp => udp_servers(),
        CompareTransport::All => {
            let mut all = bundled_servers();
            all.extend(udp_servers());
            all
        }
    }
}

/// Which rows `compare --transport` offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum CompareTransport {
    /// The TCP servers (and the external one).
    Tcp,
    /// The UDP rows: engine-udp and udp-reflect.
    Udp,
    /// Both.
    All,
}

/// The external arpc server described by [`EXTRA_NAME_VAR`] and [`EXTRA_CMD_VAR`], if any.
pub fn extra_server(
    name: Option<String>,
    command: Option<String>,
) -> Result<Option<ServerSpec>, String> {
    let command = match command {
        Some(command) if !command.trim().is_empty() => command,
        _ if name.is_some() => {
            return Err(format!(
                "{EXTRA_NAME_VAR} is set but {EXTRA_CMD_VAR} is not: give the command that starts it"
            ));
        }
        _ => return Ok(None),
    };
    if !command.contains("{port}") {
        return Err(format!(
            "{EXTRA_CMD_VAR} must contain {{port}} where the listen port goes, e.g. '/path/to/server --addr 127.0.0.1:{{port}}'"
        ));
    }
    let name = name.unwrap_or_else(|| DEFAULT_EXTRA_NAME.to_owned());
    let name_is_a_file_name = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if !name_is_a_file_name || name.starts_with('.') {
        return Err(format!(
            "{EXTRA_NAME_VAR}={name:?}: use letters, digits, '-', '_' or '.' (it names output files)"
        ));
    }
    if servers_for(CompareTransport::All)
        .iter()
        .chain(&opt_in_servers())
        .any(|s| s.name == name)
    {
        return Err(format!(
            "{EXTRA_NAME_VAR}={name:?} is already a bundled server's name"
        ));
    }
    Ok(Some(ServerSpec {
        name,
        launch: Launch::External {
            command_template: command,
        },
        loadgen_args: vec![],
    }))
}

/// The rows named in `list` (comma-separated, in the order given) from `available` and
/// `opt_in`, or all of `available`.
pub fn select(
    available: Vec<ServerSpec>,
    opt_in: Vec<ServerSpec>,
    list: Option<&str>,
) -> Result<Vec<ServerSpec>, String> {
    let Some(list) = list else {
        return Ok(available);
    };
    let mut available = available;
    available.extend(opt_in);
    let mut chosen: Vec<ServerSpec> = Vec::new();
    for name in list.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        let spec = available.iter().find(|s| s.name == name).ok_or_else(|| {
            let known: Vec<&str> = available.iter().map(|s| s.name.as_str()).collect();
            format!("unknown server {name:?}; known: {}", known.join(","))
        })?;
        if chosen.iter().all(|c| c.name != name) {
            chosen.push(spec.clone());
        }
    }
    if chosen.is_empty() {
        return Err("--servers names no server".into());
    }
    Ok(chosen)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(specs: &[ServerSpec]) -> Vec<&str> {
        specs.iter().map(|s| s.name.as_str()).collect()
    }

    #[test]
    fn all_bundled_by_default_and_selection_keeps_its_order() {
        let all = bundled_servers();
        assert_eq!(
            names(&select(all.clone(), opt_in_servers(), None).unwrap()),
            [
                "engine",
                "engine-async",
                "reflect",
                "peer-reflect",
                "peer-tokio",
                "peer-tokio-uring",
                "grpc-echo"
            ]
        );
        assert_eq!(
            names(
                &select(
                    all.clone(),
                    opt_in_servers(),
                    Some("grpc-echo, engine,engine")
                )
                .unwrap()
            ),
            ["grpc-echo", "engine"]
        );
        assert!(
            select(all.clone(), vec![], Some("nginx"))
                .unwrap_err()
                .contains("known: engine")
        );
        assert!(select(all.clone(), vec![], Some(",")).is_err());
        // The TLS and Unix rows run only when named.
        assert_eq!(
            names(
                &select(
                    all,
                    opt_in_servers(),
                    Some("engine,engine-tls,haproxy-tls,engine-unix")
                )
                .unwrap()
            ),
            ["engine", "engine-tls", "haproxy-tls", "engine-unix"]
        );
        assert!(extra_server(Some("engine-tls".into()), Some("s {port}".into())).is_err());
    }

    #[test]
    fn udp_rows_pass_the_transport_and_take_a_port() {
        let udp = servers_for(CompareTransport::Udp);
        assert_eq!(names(&udp), ["engine-udp", "udp-reflect"]);
        for spec in &udp {
            assert!(spec.loadgen_args.starts_with(&["--transport", "udp"]));
            let Launch::BundledUdp { args, .. } = &spec.launch else {
                panic!("{} is not a UDP launch", spec.name);
            };
            assert!(args.iter().any(|a| a.contains(PORT_PLACEHOLDER)));
        }
        assert!(udp[1].loadgen_args.contains(&"--reflect"));
        assert_eq!(servers_for(CompareTransport::Tcp), bundled_servers());
        assert_eq!(servers_for(CompareTransport::All).len(), 9);
        assert!(extra_server(Some("udp-reflect".into()), Some("s {port}".into())).is_err());
    }

    #[test]
    fn extra_server_needs_a_port_placeholder_and_a_safe_name() {
        assert_eq!(extra_server(None, None), Ok(None));
        assert!(extra_server(Some("go".into()), None).is_err());
        assert!(extra_server(None, Some("server --addr :9000".into())).is_err());
        assert!(extra_server(Some("a/b".into()), Some("s {port}".into())).is_err());
        assert!(extra_server(Some("engine".into()), Some("s {port}".into())).is_err());
        let spec = extra_server(
            Some("arpc-go".into()),
            Some("srv --addr 127.0.0.1:{port}".into()),
        )
        .unwrap()
        .unwrap();
        assert_eq!(spec.name, "arpc-go");
        let unnamed = extra_server(None, Some("srv {port}".into()))
            .unwrap()
            .unwrap();
        assert_eq!(unnamed.name, DEFAULT_EXTRA_NAME);
    }
}
