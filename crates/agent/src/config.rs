//! The agent's configuration file (TOML): where it keeps its state, and
//! which model modules run on this device, from which source, with which
//! limits and health check. See `docs/agent.md`.

use crate::error::ConfigError;
use serde::Deserialize;
use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A parsed and checked configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub agent: AgentSettings,
    pub modules: Vec<ModuleConfig>,
    /// The cluster as a source of modules (`[cluster]`), when set.
    pub cluster: Option<ClusterSettings>,
}

/// `[cluster]`: register this device as an `EdgeDevice`, heartbeat through
/// its `Lease`, and run what the operator assigns to it (next to the
/// file's own modules).
#[derive(Debug, Clone, PartialEq)]
pub struct ClusterSettings {
    /// A kubeconfig file; without one, `KUBECONFIG`, `~/.kube/config` or
    /// the in-cluster service account.
    pub kubeconfig: Option<PathBuf>,
    pub namespace: String,
    /// The `EdgeDevice`'s name (default: the host name).
    pub device: String,
    /// The device's labels, which placements select on.
    pub labels: BTreeMap<String, String>,
    /// The address assigned modules listen on (their port comes from the
    /// assignment).
    pub bind: std::net::IpAddr,
    /// Capacity offered to the operator.
    pub memory: u64,
    pub cpus: u32,
    pub max_modules: u32,
    pub accelerators: BTreeMap<String, u32>,
    /// Lease renewal and status report interval.
    pub renew: Duration,
}

#[derive(Debug, Clone, PartialEq)]
pub struct AgentSettings {
    /// The agent's directory: `store/` (an OCI layout), `state.json`,
    /// `compiled/`, `config.last-good.toml`.
    pub dir: PathBuf,
    /// The status endpoint (`/status`, `/metrics`).
    pub status: SocketAddr,
    /// How often watched tags are resolved.
    pub poll: Duration,
    /// Previous versions kept per module, for rollback.
    pub keep: usize,
    /// Download bandwidth cap, bytes a second.
    pub max_rate: Option<u64>,
    /// Plain HTTP to registries that are not on loopback.
    pub plain_http: bool,
    /// Accept any TLS certificate from registries.
    pub skip_tls_verify: bool,
    /// Send credentials over plain HTTP to registries on other hosts.
    pub plain_http_credentials: bool,
    /// After a switch, how long the new version must keep passing its
    /// health check before it is final.
    pub probation: Duration,
    /// Health checks run this often (during probation, and to report
    /// health afterwards).
    pub check_every: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// Serves the Open Inference Protocol on its own port.
    Service,
    /// Runs to completion when a version becomes current (and every
    /// `every`, when set).
    Job,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ModuleConfig {
    pub name: String,
    /// A registry tag (watched), a registry digest (pinned), or a
    /// reference in the agent's own store (`weft copy`'d there).
    pub source: String,
    pub kind: Kind,
    pub bind: Option<SocketAddr>,
    pub grpc: Option<SocketAddr>,
    /// The served model name (default: the module's name).
    pub model: String,
    pub instances: usize,
    pub queue: usize,
    pub deadline: Duration,
    pub max_memory: usize,
    pub env: Vec<(String, String)>,
    pub args: Vec<String>,
    pub every: Option<Duration>,
    pub health: Health,
}

/// How a version proves it works.
#[derive(Debug, Clone, PartialEq)]
pub enum Health {
    /// A sample inference (V2 JSON request) whose outputs must match.
    Inference {
        request: String,
        expect: serde_json::Value,
        tolerance: f64,
    },
    /// The module starts and answers (a service's instances come up; a
    /// job exits 0).
    Probe,
    /// A job's exit code 0 and, when set, this text on its stdout.
    Job { stdout: Option<String> },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    agent: RawAgent,
    #[serde(default, rename = "module")]
    modules: Vec<RawModule>,
    #[serde(default)]
    cluster: Option<RawCluster>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCluster {
    #[serde(default)]
    kubeconfig: Option<PathBuf>,
    namespace: String,
    #[serde(default)]
    device: Option<String>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    #[serde(default)]
    bind: Option<String>,
    #[serde(default)]
    memory: Option<String>,
    #[serde(default)]
    cpus: Option<u32>,
    #[serde(default)]
    modules: Option<u32>,
    #[serde(default)]
    accelerators: BTreeMap<String, u32>,
    #[serde(default)]
    renew: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAgent {
    dir: PathBuf,
    #[serde(default = "default_status")]
    status: String,
    #[serde(default)]
    poll: Option<String>,
    #[serde(default)]
    keep: Option<usize>,
    #[serde(default)]
    max_rate: Option<String>,
    /// Removed (it meant both of the next two); refused with a hint.
    #[serde(default)]
    insecure: bool,
    #[serde(default)]
    plain_http: bool,
    #[serde(default)]
    skip_tls_verify: bool,
    #[serde(default)]
    plain_http_credentials: bool,
    #[serde(default)]
    probation: Option<String>,
    #[serde(default)]
    check_every: Option<String>,
}

fn default_status() -> String {
    "127.0.0.1:9400".into()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawModule {
    name: String,
    source: String,
    #[serde(default)]
    kind: Option<String>,
    #[serde(default)]
    bind: Option<String>,
    #[serde(default)]
    grpc: Option<String>,
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    instances: Option<usize>,
    #[serde(default)]
    queue: Option<usize>,
    #[serde(default)]
    deadline: Option<String>,
    #[serde(default)]
    max_memory: Option<String>,
    #[serde(default)]
    env: BTreeMap<String, String>,
    #[serde(default)]
    args: Vec<String>,
    #[serde(default)]
    every: Option<String>,
    #[serde(default)]
    health: Option<RawHealth>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHealth {
    #[serde(default)]
    request: Option<String>,
    #[serde(default)]
    expect: Option<String>,
    #[serde(default)]
    tolerance: Option<f64>,
    #[serde(default)]
    probe: Option<bool>,
    #[serde(default)]
    stdout: Option<String>,
}

impl Config {
    /// Read and check `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Config::parse(&text).map_err(|e| e.in_file(path))
    }

    /// Parse and check a configuration text.
    pub fn parse(text: &str) -> Result<Config, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| ConfigError::Syntax {
            path: None,
            message: e.to_string(),
        })?;
        let a = raw.agent;
        if a.insecure {
            return Err(invalid(
                "agent",
                "`insecure` was split in two: set `plain_http = true` for a registry that speaks HTTP, `skip_tls_verify = true` for one whose certificate this device does not trust, and `plain_http_credentials = true` to send credentials over plain HTTP",
            ));
        }
        if a.plain_http_credentials && !a.plain_http {
            return Err(invalid(
                "agent",
                "`plain_http_credentials` needs `plain_http = true`",
            ));
        }
        let agent = AgentSettings {
            dir: a.dir,
            status: addr("agent", "status", &a.status)?,
            poll: duration("agent", "poll", a.poll.as_deref(), "60s")?,
            keep: a.keep.unwrap_or(2),
            max_rate: a
                .max_rate
                .as_deref()
                .map(|s| size("agent", "max_rate", s).map(|n| n as u64))
                .transpose()?,
            plain_http: a.plain_http,
            skip_tls_verify: a.skip_tls_verify,
            plain_http_credentials: a.plain_http_credentials,
            probation: duration("agent", "probation", a.probation.as_deref(), "30s")?,
            check_every: duration("agent", "check_every", a.check_every.as_deref(), "5s")?,
        };
        let mut names = HashSet::new();
        let mut ports = HashSet::new();
        let mut modules = Vec::new();
        for m in raw.modules {
            let module = module(m)?;
            if !names.insert(module.name.clone()) {
                return Err(invalid(&module.name, "two modules have this name"));
            }
            for a in module.bind.iter().chain(module.grpc.iter()) {
                if !ports.insert(*a) {
                    return Err(invalid(
                        &module.name,
                        format!("{a} is used by another module"),
                    ));
                }
            }
            modules.push(module);
        }
        let cluster = raw.cluster.map(cluster).transpose()?;
        Ok(Config {
            agent,
            modules,
            cluster,
        })
    }

    pub fn module(&self, name: &str) -> Option<&ModuleConfig> {
        self.modules.iter().find(|m| m.name == name)
    }
}

fn invalid(module: &str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        module: module.into(),
        message: message.into(),
        path: None,
    }
}

fn addr(module: &str, key: &str, s: &str) -> Result<SocketAddr, ConfigError> {
    s.parse().map_err(|_| {
        invalid(
            module,
            format!("{key} = {s:?} is not an address such as 127.0.0.1:8000"),
        )
    })
}

fn duration(
    module: &str,
    key: &str,
    s: Option<&str>,
    default: &str,
) -> Result<Duration, ConfigError> {
    let s = s.unwrap_or(default);
    weft_runtime::units::duration(s)
        .ok()
        .filter(|d| !d.is_zero())
        .ok_or_else(|| {
            invalid(
                module,
                format!("{key} = {s:?} is not a duration such as 30s"),
            )
        })
}

fn size(module: &str, key: &str, s: &str) -> Result<usize, ConfigError> {
    weft_runtime::units::size(s).map_err(|e| invalid(module, format!("{key}: {e}")))
}

/// A Kubernetes object name: lowercase letters, digits, '-' and '.'.
fn dns_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
        && !s.starts_with(['-', '.'])
        && !s.ends_with(['-', '.'])
}

fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .map(|h| h.trim().to_ascii_lowercase())
        .unwrap_or_default()
}

fn total_memory() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        })
        .map_or(1 << 30, |kib| kib * 1024)
}

fn cluster(c: RawCluster) -> Result<ClusterSettings, ConfigError> {
    let at = "[cluster]";
    if !dns_name(&c.namespace) {
        return Err(invalid(
            at,
            format!(
                "namespace {:?} is not a Kubernetes namespace name",
                c.namespace
            ),
        ));
    }
    let device = c.device.unwrap_or_else(host_name);
    if !dns_name(&device) {
        return Err(invalid(
            at,
            format!(
                "device {device:?} is not a Kubernetes object name (lowercase letters, digits, '-', '.'); set device = \"...\""
            ),
        ));
    }
    let bind = match c.bind.as_deref() {
        None => std::net::IpAddr::from([0, 0, 0, 0]),
        Some(b) => b.parse().map_err(|_| {
            invalid(
                at,
                format!("bind = {b:?} is not an IP address (the port comes from each assignment)"),
            )
        })?,
    };
    let memory = match c.memory.as_deref() {
        None => total_memory(),
        Some(m) => size(at, "memory", m)? as u64,
    };
    let cpus = c
        .cpus
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get() as u32));
    Ok(ClusterSettings {
        kubeconfig: c.kubeconfig,
        namespace: c.namespace,
        device,
        labels: c.labels,
        bind,
        memory,
        cpus,
        max_modules: c.modules.unwrap_or(4),
        accelerators: c.accelerators,
        renew: duration(at, "renew", c.renew.as_deref(), "10s")?,
    })
}

fn module(m: RawModule) -> Result<ModuleConfig, ConfigError> {
    let name = m.name;
    let name_ok = !name.is_empty()
        && name.len() <= 63
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !name.starts_with('-');
    if !name_ok {
        return Err(invalid(
            &name,
            "a module name is 1-63 lowercase letters, digits and '-'",
        ));
    }
    if weft_oci::names_registry(&m.source) {
        weft_oci::parse_reference(&m.source)
            .map_err(|e| invalid(&name, format!("source {:?}: {e}", m.source)))?;
    } else {
        weft_oci::normalize_reference(&m.source)
            .map_err(|e| invalid(&name, format!("source {:?}: {e}", m.source)))?;
    }
    let kind = match m.kind.as_deref().unwrap_or("service") {
        "service" => Kind::Service,
        "job" => Kind::Job,
        other => {
            return Err(invalid(
                &name,
                format!("kind = {other:?}; use \"service\" or \"job\""),
            ));
        }
    };
    let bind = m
        .bind
        .as_deref()
        .map(|s| addr(&name, "bind", s))
        .transpose()?;
    let grpc = m
        .grpc
        .as_deref()
        .map(|s| addr(&name, "grpc", s))
        .transpose()?;
    match kind {
        Kind::Service if bind.is_none() => {
            return Err(invalid(&name, "a service needs bind = \"ADDR:PORT\""));
        }
        Kind::Job if bind.is_some() || grpc.is_some() => {
            return Err(invalid(&name, "a job does not listen; remove bind/grpc"));
        }
        _ => {}
    }
    if kind == Kind::Service && m.every.is_some() {
        return Err(invalid(&name, "every applies to jobs only"));
    }
    let health = match (kind.clone(), m.health) {
        (_, Some(h)) if h.request.is_some() || h.expect.is_some() => {
            let (Some(request), Some(expect)) = (h.request, h.expect) else {
                return Err(invalid(&name, "health needs both request and expect"));
            };
            if kind == Kind::Job {
                return Err(invalid(
                    &name,
                    "a job's health is its exit code (and stdout)",
                ));
            }
            serde_json::from_str::<serde_json::Value>(&request)
                .map_err(|e| invalid(&name, format!("health.request is not JSON: {e}")))?;
            let expect: serde_json::Value = serde_json::from_str(&expect)
                .map_err(|e| invalid(&name, format!("health.expect is not JSON: {e}")))?;
            if !expect["outputs"].is_array() {
                return Err(invalid(
                    &name,
                    "health.expect must be {\"outputs\": [{\"name\": ..., \"data\": [...]}]}",
                ));
            }
            let tolerance = h.tolerance.unwrap_or(1e-4);
            if tolerance.is_nan() || tolerance < 0.0 {
                return Err(invalid(&name, "health.tolerance must be 0 or more"));
            }
            Health::Inference {
                request,
                expect,
                tolerance,
            }
        }
        (Kind::Job, h) => Health::Job {
            stdout: h.and_then(|h| h.stdout),
        },
        (Kind::Service, Some(h)) if h.stdout.is_some() => {
            return Err(invalid(&name, "health.stdout applies to jobs only"));
        }
        (Kind::Service, Some(h)) if h.probe == Some(false) => {
            return Err(invalid(
                &name,
                "health.probe = false: give request and expect instead",
            ));
        }
        (Kind::Service, _) => Health::Probe,
    };
    Ok(ModuleConfig {
        model: m.model.unwrap_or_else(|| name.clone()),
        source: m.source,
        kind,
        bind,
        grpc,
        instances: m.instances.unwrap_or(1).clamp(1, 256),
        queue: m.queue.unwrap_or(16),
        deadline: duration(&name, "deadline", m.deadline.as_deref(), "30s")?,
        max_memory: size(
            &name,
            "max_memory",
            m.max_memory.as_deref().unwrap_or("256MiB"),
        )?,
        env: m.env.into_iter().collect(),
        args: m.args,
        every: m
            .every
            .as_deref()
            .map(|s| duration(&name, "every", Some(s), "1h"))
            .transpose()?,
        health,
        name,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[agent]
dir = "/var/lib/weft/agent"
max_rate = "1MiB"

[[module]]
name = "tiny"
source = "127.0.0.1:5000/team/tiny:stable"
bind = "127.0.0.1:8000"
max_memory = "64MiB"
env = { MODE = "fast" }

[module.health]
request = '{"inputs":[{"name":"x","shape":[1,4],"datatype":"FP32","data":[1,2,3,4]}]}'
expect = '{"outputs":[{"name":"y","data":[3,5,7,9]}]}'

[[module]]
name = "calibrate"
source = "calibrate:1"
kind = "job"
every = "10m"
health = { stdout = "ok" }
"#;

    #[test]
    fn a_full_config_parses_with_defaults() {
        let c = Config::parse(GOOD).unwrap();
        assert_eq!(c.agent.status.to_string(), "127.0.0.1:9400");
        assert_eq!((c.agent.keep, c.agent.max_rate), (2, Some(1 << 20)));
        assert_eq!(c.agent.poll, Duration::from_secs(60));
        let tiny = c.module("tiny").unwrap();
        assert_eq!(
            (tiny.kind.clone(), tiny.model.as_str()),
            (Kind::Service, "tiny")
        );
        assert_eq!(tiny.max_memory, 64 << 20);
        assert!(matches!(tiny.health, Health::Inference { tolerance, .. } if tolerance == 1e-4));
        let job = c.module("calibrate").unwrap();
        assert_eq!(job.every, Some(Duration::from_secs(600)));
        assert_eq!(
            job.health,
            Health::Job {
                stdout: Some("ok".into())
            }
        );
    }

    fn err(text: &str) -> String {
        Config::parse(text).unwrap_err().to_string()
    }

    #[test]
    fn mistakes_are_named() {
        let base = "[agent]\ndir = \"/d\"\n";
        assert!(err("[agent]\n").contains("missing field `dir`"));
        assert!(err(&format!("{base}colour = 1\n")).contains("unknown field `colour`"));
        let m = |body: &str| err(&format!("{base}[[module]]\n{body}\n"));
        assert!(
            m("name = \"Big\"\nsource = \"a:1\"\nbind = \"127.0.0.1:1\"").contains("lowercase")
        );
        assert!(m("name = \"a\"\nsource = \"a:1\"").contains("needs bind"));
        assert!(
            m("name = \"a\"\nsource = \"a:1\"\nkind = \"cron\"").contains("\"service\" or \"job\"")
        );
        assert!(m("name = \"a\"\nsource = \"a:1\"\nbind = \"port 80\"").contains("not an address"));
        assert!(
            m("name = \"a\"\nsource = \"a:1\"\nbind = \"127.0.0.1:1\"\ndeadline = \"soon\"")
                .contains("deadline")
        );
        assert!(
            m("name = \"a\"\nsource = \"reg.io/a:b:c\"\nbind = \"127.0.0.1:1\"").contains("source")
        );
        assert!(m("name = \"a\"\nsource = \"a:1\"\nbind = \"127.0.0.1:1\"\nhealth = { request = \"{\" }").contains("both request and expect"));
        assert!(m("name = \"a\"\nsource = \"a:1\"\nbind = \"127.0.0.1:1\"\nhealth = { request = \"{\", expect = \"{}\" }").contains("not JSON"));
        let two = format!(
            "{base}[[module]]\nname = \"a\"\nsource = \"a:1\"\nbind = \"127.0.0.1:1\"\n[[module]]\nname = \"b\"\nsource = \"a:1\"\nbind = \"127.0.0.1:1\"\n"
        );
        assert!(err(&two).contains("used by another module"));
        assert!(err("[agent\n").contains("TOML"));
        let c = |body: &str| err(&format!("{base}[cluster]\n{body}\n"));
        assert!(c("").contains("missing field `namespace`"));
        assert!(c("namespace = \"Edge Devices\"").contains("[cluster]: namespace"));
        assert!(
            c("namespace = \"edge\"\ndevice = \"Cam_1\"").contains("not a Kubernetes object name")
        );
        assert!(
            c("namespace = \"edge\"\ndevice = \"cam\"\nbind = \"0.0.0.0:80\"")
                .contains("not an IP address")
        );
        assert!(c("namespace = \"edge\"\ndevice = \"cam\"\nrenew = \"often\"").contains("renew"));
    }

    /// Issue 21: `insecure` meant plain HTTP and unchecked certificates at
    /// once; it is refused with the keys that replace it.
    #[test]
    fn transport_options_are_separate() {
        let base = "[agent]\ndir = \"/d\"\n";
        let e = err(&format!("{base}insecure = true\n"));
        assert!(
            e.contains("plain_http") && e.contains("skip_tls_verify"),
            "{e}"
        );
        assert!(
            err(&format!("{base}plain_http_credentials = true\n"))
                .contains("needs `plain_http = true`")
        );
        let c = Config::parse(&format!(
            "{base}plain_http = true\nplain_http_credentials = true\n"
        ))
        .unwrap();
        assert!(c.agent.plain_http && c.agent.plain_http_credentials && !c.agent.skip_tls_verify);
    }

    #[test]
    fn a_cluster_section_parses_with_defaults() {
        let c = Config::parse("[agent]\ndir = \"/d\"\n[cluster]\nnamespace = \"edge\"\ndevice = \"cam-1\"\nlabels = { site = \"f1\" }\n").unwrap();
        let k = c.cluster.unwrap();
        assert_eq!(
            (k.namespace.as_str(), k.device.as_str(), k.max_modules),
            ("edge", "cam-1", 4)
        );
        assert_eq!(k.labels.get("site").map(String::as_str), Some("f1"));
        assert_eq!(
            (k.bind.to_string(), k.renew),
            ("0.0.0.0".to_string(), Duration::from_secs(10))
        );
        assert!(k.memory > 0 && k.cpus > 0);
    }
}
