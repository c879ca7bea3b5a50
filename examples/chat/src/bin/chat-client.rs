//! `chat-client ADDR`: the terminal chat client.
//!
//! It asks for the username, then the password, then reads one command per line from
//! standard input (a terminal or a pipe) and prints every message and notice from the
//! server as it arrives. It exits 0 after `logout`, at end of input, or when the server logs
//! it out for inactivity; 1 when it cannot connect, the login is refused for good (blocked
//! account, already logged in) or the connection is lost.

use std::io::{BufRead, IsTerminal, Write};
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use clap::Parser;
use crossbeam_channel::{Receiver, Sender};
use ringrpc::{CallError, Client, Responder};
use ringrpc_chat::protocol::{self as p, DeliveryKind, NoticeKind, Refusal};
use serde::Serialize;

/// How long one command may wait for the server's answer.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// How often a client waiting for input checks that the connection is still up.
const LIVENESS_TICK: Duration = Duration::from_millis(200);

const HELP: &str = "commands:
  message <user> <text>     send <text> to <user> (stored until they log in if offline)
  broadcast <text>          send <text> to everyone online
  whoelse                   who else is online now
  whoelsesince <seconds>    who else was online in the last <seconds>
  block <user>              stop <user>'s messages, broadcasts and presence notices
  unblock <user>            undo block
  whoami                    your username
  logout                    log out and quit
  help                      this list";

/// Terminal client of chat-server.
#[derive(Parser, Debug)]
#[command(name = "chat-client", version, about)]
struct Args {
    /// The chat-server's address, HOST:PORT
    addr: String,
}

/// What the main loop waits for.
enum Input {
    Line(String),
    End,
    /// The server logged us out (inactivity) and closes the connection.
    LoggedOut,
    /// The connection is gone.
    Lost,
}

/// Lines from standard input and events from the connection, in arrival order.
struct Inputs {
    client: Client,
    lines: Receiver<Option<String>>,
    events: Receiver<()>,
}

impl Inputs {
    fn next(&self) -> Input {
        loop {
            crossbeam_channel::select! {
                recv(self.events) -> _ => return Input::LoggedOut,
                recv(self.lines) -> line => return match line {
                    Ok(Some(line)) => Input::Line(line),
                    _ => Input::End,
                },
                default(LIVENESS_TICK) => {
                    if !self.client.is_connected() {
                        // A timeout notice may have raced the close.
                        if self.events.try_recv().is_ok() {
                            return Input::LoggedOut;
                        }
                        return Input::Lost;
                    }
                }
            }
        }
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    let (logged_out, events) = crossbeam_channel::unbounded();
    let gate = Arc::new(Mutex::new(Gate::default()));
    let client = match connect(&args.addr, gate.clone(), logged_out) {
        Ok(client) => client,
        Err(e) => {
            println!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let (line_tx, lines) = crossbeam_channel::unbounded();
    std::thread::spawn(move || read_lines(&line_tx));
    let inputs = Inputs {
        client: client.clone(),
        lines,
        events,
    };
    let code = match login(&client, &inputs) {
        Ok(()) => {
            Gate::open(&gate);
            commands(&client, &inputs)
        }
        Err(code) => code,
    };
    client.close();
    code
}

fn read_lines(lines: &Sender<Option<String>>) {
    let stdin = std::io::stdin();
    for line in stdin.lock().lines() {
        match line {
            Ok(line) => {
                if lines.send(Some(line)).is_err() {
                    return;
                }
            }
            Err(_) => break,
        }
    }
    let _ = lines.send(None);
}

/// Messages that arrive before the login's answer has been printed wait here, with their
/// receipts, so the welcome comes first; once open, messages print as they arrive.
#[derive(Default)]
struct Gate {
    open: bool,
    held: Vec<(String, Responder)>,
}

impl Gate {
    fn open(gate: &Mutex<Gate>) {
        let mut gate = gate.lock().unwrap_or_else(|e| e.into_inner());
        for (line, receipt) in gate.held.drain(..) {
            println!("{line}");
            receipt.reply(b"ok");
        }
        gate.open = true;
    }
}

fn connect(addr: &str, gate: Arc<Mutex<Gate>>, logged_out: Sender<()>) -> Result<Client, String> {
    Client::builder(addr)
        .route(p::MSG, move |ctx| {
            let line = match serde_json::from_slice::<p::Delivery>(ctx.payload()) {
                Ok(msg) => {
                    let how = match (msg.kind, msg.offline) {
                        (DeliveryKind::Broadcast, _) => " (broadcast)",
                        (DeliveryKind::Private, true) => " (while you were offline)",
                        (DeliveryKind::Private, false) => "",
                    };
                    format!("{}{how}: {}", msg.from, msg.text)
                }
                Err(e) => format!("error: a message from the server could not be read: {e}"),
            };
            // The answer is the receipt: the server forgets the message once it is printed.
            let Some(receipt) = ctx.responder() else {
                return println!("{line}");
            };
            let mut gate = gate.lock().unwrap_or_else(|e| e.into_inner());
            if gate.open {
                println!("{line}");
                receipt.reply(b"ok");
            } else {
                gate.held.push((line, receipt));
            }
        })
        .route(p::NOTICE, move |ctx| {
            match serde_json::from_slice::<p::Notice>(ctx.payload()) {
                Ok(notice) => {
                    println!("{}", notice.text);
                    if notice.kind == NoticeKind::Timeout {
                        let _ = logged_out.send(());
                    }
                }
                Err(e) => println!("error: a notice from the server could not be read: {e}"),
            }
        })
        .connect()
        .map_err(|e| format!("{e} (start it with chat-server --listen {addr} ...)"))
}

/// Prompts; on a terminal the answer goes on the same line, elsewhere on the next.
fn prompt(text: &str) {
    let mut out = std::io::stdout().lock();
    if std::io::stdin().is_terminal() {
        let _ = write!(out, "{text}: ");
    } else {
        let _ = writeln!(out, "{text}:");
    }
    let _ = out.flush();
}

fn lost() -> ExitCode {
    println!("error: the connection to the server was lost");
    ExitCode::FAILURE
}

/// Asks for username and password until logged in; `Err` is the exit code.
fn login(client: &Client, inputs: &Inputs) -> Result<(), ExitCode> {
    let mut user: Option<String> = None;
    loop {
        let name = match &user {
            Some(name) => name.clone(),
            None => {
                prompt("Username");
                match inputs.next() {
                    Input::Line(line) if line.trim().is_empty() => continue,
                    Input::Line(line) => line.trim().to_owned(),
                    Input::End => return Err(ExitCode::SUCCESS),
                    Input::LoggedOut | Input::Lost => return Err(lost()),
                }
            }
        };
        user = Some(name.clone());
        prompt("Password");
        let password = match inputs.next() {
            Input::Line(line) => line.trim_end_matches(['\r', '\n']).to_owned(),
            Input::End => return Err(ExitCode::SUCCESS),
            Input::LoggedOut | Input::Lost => return Err(lost()),
        };
        let request = p::Login {
            user: name,
            password,
        };
        let answer = match call(client, p::LOGIN, &request) {
            Ok(bytes) => bytes,
            Err(CallError::Remote(text)) => {
                println!("error: {text}");
                return Err(ExitCode::FAILURE);
            }
            Err(_) => return Err(lost()),
        };
        let Ok(reply) = serde_json::from_slice::<p::LoginReply>(&answer) else {
            println!("error: the server's answer to the login could not be read");
            return Err(ExitCode::FAILURE);
        };
        if reply.ok {
            println!("{}", reply.text);
            println!("type help for the commands");
            return Ok(());
        }
        println!("error: {}", reply.text);
        match reply.refusal {
            Some(Refusal::UnknownUser) => user = None,
            Some(Refusal::WrongPassword) => {}
            _ => return Err(ExitCode::FAILURE),
        }
    }
}

fn call(client: &Client, method: &str, request: &impl Serialize) -> Result<Vec<u8>, CallError> {
    client
        .call(method, body(request).into(), CALL_TIMEOUT)
        .map(|b| b.to_vec())
}

/// What a command line asks for.
enum Command {
    Call(&'static str, Vec<u8>),
    Help,
    Logout,
    Nothing,
}

/// Parses one command line; `Err` is the message to print.
fn parse(line: &str) -> Result<Command, String> {
    let line = line.trim();
    let (word, rest) = match line.split_once(char::is_whitespace) {
        Some((word, rest)) => (word, rest.trim()),
        None => (line, ""),
    };
    let one_user = |usage: &str| -> Result<String, String> {
        match rest.split_whitespace().collect::<Vec<_>>()[..] {
            [user] => Ok(user.to_owned()),
            _ => Err(format!("usage: {usage}")),
        }
    };
    let none = |name: &str| -> Result<(), String> {
        if rest.is_empty() {
            Ok(())
        } else {
            Err(format!("{name} takes no arguments"))
        }
    };
    Ok(match word {
        "" => Command::Nothing,
        "message" => {
            let usage = "usage: message <user> <text>";
            let (to, text) = rest.split_once(char::is_whitespace).ok_or(usage)?;
            let text = text.trim();
            if text.is_empty() {
                return Err(usage.into());
            }
            Command::Call(
                p::MESSAGE,
                body(&p::Message {
                    to: to.to_owned(),
                    text: text.to_owned(),
                }),
            )
        }
        "broadcast" => {
            if rest.is_empty() {
                return Err("usage: broadcast <text>".into());
            }
            Command::Call(
                p::BROADCAST,
                body(&p::Broadcast {
                    text: rest.to_owned(),
                }),
            )
        }
        "whoelse" => {
            none("whoelse")?;
            Command::Call(p::WHOELSE, Vec::new())
        }
        "whoelsesince" => {
            let seconds = rest.parse::<u64>().map_err(|_| {
                "usage: whoelsesince <seconds> (a whole number of seconds)".to_owned()
            })?;
            Command::Call(p::WHOELSESINCE, body(&p::Since { seconds }))
        }
        "block" => Command::Call(
            p::BLOCK,
            body(&p::Target {
                user: one_user("block <user>")?,
            }),
        ),
        "unblock" => Command::Call(
            p::UNBLOCK,
            body(&p::Target {
                user: one_user("unblock <user>")?,
            }),
        ),
        "whoami" => {
            none("whoami")?;
            Command::Call(p::WHOAMI, Vec::new())
        }
        "logout" => {
            none("logout")?;
            Command::Logout
        }
        "help" => Command::Help,
        other => {
            return Err(format!(
                "unknown command {other:?}; type help for the commands"
            ));
        }
    })
}

/// A request's JSON payload.
fn body(request: &impl Serialize) -> Vec<u8> {
    serde_json::to_vec(request).expect("requests serialize")
}

/// Runs commands until logout, end of input or a lost connection; the exit code.
fn commands(client: &Client, inputs: &Inputs) -> ExitCode {
    loop {
        let line = match inputs.next() {
            Input::Line(line) => line,
            // End of input: log out properly so others are told at once.
            Input::End => {
                let _ = client.call(p::LOGOUT, Vec::new().into(), CALL_TIMEOUT);
                return ExitCode::SUCCESS;
            }
            Input::LoggedOut => return ExitCode::SUCCESS,
            Input::Lost => return lost(),
        };
        let (method, payload) = match parse(&line) {
            Ok(Command::Nothing) => continue,
            Ok(Command::Help) => {
                println!("{HELP}");
                continue;
            }
            Ok(Command::Logout) => (p::LOGOUT, Vec::new()),
            Ok(Command::Call(method, payload)) => (method, payload),
            Err(text) => {
                println!("error: {text}");
                continue;
            }
        };
        match client.call(method, payload.into(), CALL_TIMEOUT) {
            Ok(answer) => match serde_json::from_slice::<p::Reply>(&answer) {
                Ok(reply) => println!("{}", reply.text),
                Err(_) => println!("{}", String::from_utf8_lossy(&answer)),
            },
            Err(CallError::Remote(text)) => println!("error: {text}"),
            Err(CallError::Timeout) => println!("error: the server did not answer in time"),
            Err(_) => {
                // Logged out for inactivity just before this command?
                if inputs.events.try_recv().is_ok() {
                    return ExitCode::SUCCESS;
                }
                return lost();
            }
        }
        if method == p::LOGOUT {
            return ExitCode::SUCCESS;
        }
    }
}
