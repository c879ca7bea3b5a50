//! The command line: the flags as parsed (`flags`: [`Cli`] and the value types and parsers
//! of its flags) and the validated [`Config`] a run uses (`config`: every check that flags
//! fit together).

pub(crate) mod config;
pub(crate) mod flags;

pub use config::{
    Config, DEFAULT_SUBSCRIBERS, DEFAULT_TOPIC, UDP_MAX_DATAGRAM, UdpSettings, UsageError,
};
pub use flags::{
    Cli, CpuList, IoMode, Proto, Transport, UDP_DEFAULT_MAX_DATAGRAM, parse_count, parse_cpu_list,
    parse_duration, parse_positive, parse_size_as,
};
