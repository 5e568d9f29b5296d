//! `weft agent` as a process, with real parts: Debian's `docker-registry` on
//! 127.0.0.1 (stopped and restarted for network loss, or inside a network
//! namespace behind a veth pair), real model-module artifacts pushed under a
//! moving tag, `kill -9` and failpoints at every step of an update, a small
//! tmpfs for a full disk.

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use weft_tests::containerd::{free_port, http, is_root};
use weft_tests::{Guest, TestRegistry, big_file, data, module, skip_or_fail};

/// The `weft` binary of this build (next to the test binary's directory).
fn weft() -> Option<PathBuf> {
    let exe = std::env::current_exe().unwrap();
    let p = exe.parent()?.parent()?.join("weft");
    if p.exists() {
        Some(p)
    } else {
        skip_or_fail("the weft binary is not built: cargo build -p weft-cli");
        None
    }
}

fn out(o: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

const REQUEST: &str =
    r#"{"inputs":[{"name":"x","shape":[1,4],"datatype":"FP32","data":[1,2,3,4]}]}"#;

/// Builds artifact versions and pushes them under a tag.
struct Publisher {
    weft: PathBuf,
    work: tempfile::TempDir,
    registry: String,
    plain_http: bool,
}

/// What a version is made of.
#[derive(Clone, Copy)]
enum Make {
    /// predictor + tiny.onnx: y = 2x + 1 (healthy).
    Good,
    /// predictor + double_f32.onnx: wrong shape for the health request.
    WrongModel,
    /// passes its first check, fails the next ones.
    Flaky,
    /// a command module, not a serving one: does not start as a service.
    Command,
}

impl Publisher {
    fn new(weft: &Path, registry: &str) -> Publisher {
        Publisher {
            weft: weft.to_owned(),
            work: tempfile::tempdir().unwrap(),
            registry: registry.into(),
            plain_http: false,
        }
    }

    fn weft(&self, args: &[&str]) -> String {
        let mut cmd = Command::new(&self.weft);
        cmd.args(args)
            .arg("--store")
            .arg(self.work.path().join("store"));
        let o = cmd.output().unwrap();
        assert!(o.status.success(), "weft {args:?}: {}", out(&o));
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    /// Build version `version` and push it as `repo:tag`; its digest.
    fn publish(
        &self,
        repo: &str,
        tag: &str,
        version: &str,
        make: Make,
        extra_mib: usize,
    ) -> String {
        let pkg = self.work.path().join(format!("pkg-{repo}-{version}"));
        std::fs::create_dir_all(pkg.join("models")).unwrap();
        let (wasm, model) = match make {
            Make::Good => ("predictor", Some("tiny.onnx")),
            Make::WrongModel => ("predictor", Some("double_f32.onnx")),
            Make::Flaky => ("flaky", None),
            Make::Command => ("tinyrun", Some("tiny.onnx")),
        };
        std::fs::copy(module(Guest::P1, wasm), pkg.join("m.wasm")).unwrap();
        let mut toml =
            format!("[module]\nname = \"{repo}\"\nversion = \"{version}\"\nfile = \"m.wasm\"\n");
        if let Some(m) = model {
            std::fs::copy(data(m), pkg.join("models/m.onnx")).unwrap();
            toml.push_str("\n[[model]]\nname = \"model\"\nfile = \"models/m.onnx\"\n");
        }
        if extra_mib > 0 {
            big_file(&pkg.join("big.bin"), extra_mib);
            toml.push_str("\n[[file]]\nfile = \"big.bin\"\n");
        }
        std::fs::write(pkg.join("weft.toml"), toml).unwrap();
        self.weft(&["build", pkg.to_str().unwrap()]);
        let target = format!("{}/{repo}:{tag}", self.registry);
        let mut args = vec!["push", "--json"];
        if self.plain_http {
            args.push("--plain-http");
        }
        let local = format!("{repo}:{version}");
        args.extend([local.as_str(), target.as_str()]);
        let pushed: Value = serde_json::from_str(self.weft(&args).trim()).unwrap();
        pushed["report"]["manifest_digest"]
            .as_str()
            .unwrap()
            .to_owned()
    }
}

/// A `weft agent` process; killed on drop.
struct Agent {
    child: Option<Child>,
    weft: PathBuf,
    config: PathBuf,
    pub status_addr: String,
    log: PathBuf,
}

impl Agent {
    fn start(weft: &Path, config: &Path, status_addr: &str, env: &[(&str, &str)]) -> Agent {
        let mut a = Agent {
            child: None,
            weft: weft.to_owned(),
            config: config.to_owned(),
            status_addr: status_addr.into(),
            log: config.with_extension("log"),
        };
        a.spawn(env);
        a
    }

    fn spawn(&mut self, env: &[(&str, &str)]) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let mut cmd = Command::new(&self.weft);
        cmd.args(["agent", "--config"])
            .arg(&self.config)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log);
        for (k, v) in env {
            cmd.env(k, v);
        }
        self.child = Some(cmd.spawn().unwrap());
    }

    fn restart(&mut self, env: &[(&str, &str)]) {
        self.kill9();
        self.spawn(env);
    }

    fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Wait for the process to end by itself (a failpoint); its status.
    fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let started = Instant::now();
        while started.elapsed() < timeout {
            if let Some(s) = self.child.as_mut()?.try_wait().unwrap() {
                self.child = None;
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn status(&self) -> Option<Value> {
        let (code, body) = http(&self.status_addr, "GET", "/status", "").ok()?;
        (code == 200)
            .then(|| serde_json::from_str(&body).ok())
            .flatten()
    }

    /// Poll the status until `pred` holds.
    fn wait_for(&self, what: &str, timeout: Duration, pred: impl Fn(&Value) -> bool) -> Value {
        let started = Instant::now();
        let mut last = None;
        while started.elapsed() < timeout {
            if let Some(s) = self.status() {
                if pred(&s) {
                    return s;
                }
                last = Some(s);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!(
            "timed out waiting for {what}; last status:\n{}\nagent log:\n{}",
            last.map(|s| serde_json::to_string_pretty(&s).unwrap())
                .unwrap_or_default(),
            self.log()
        );
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.kill9();
    }
}

fn module_status<'a>(s: &'a Value, name: &str) -> &'a Value {
    &s["modules"][name]
}

fn running(s: &Value, name: &str) -> Option<String> {
    module_status(s, name)["running"]
        .as_str()
        .map(str::to_owned)
}

/// `digest` runs and is committed (probation over).
fn settled(s: &Value, name: &str, digest: &str) -> bool {
    running(s, name).as_deref() == Some(digest) && module_status(s, name)["state"] == "running"
}

/// The served model answers y = 2x + 1.
fn serves(bind: &str) -> bool {
    matches!(http(bind, "POST", "/v2/models/tiny/infer", REQUEST), Ok((200, body)) if body.contains("[3.0,5.0,7.0,9.0]"))
}

fn config_text(dir: &Path, status: &str, modules: &str, agent_extra: &str) -> String {
    format!(
        "[agent]\ndir = \"{}\"\nstatus = \"{status}\"\npoll = \"500ms\"\nprobation = \"1500ms\"\ncheck_every = \"300ms\"\n{agent_extra}\n{modules}",
        dir.display()
    )
}

fn tiny_module(source: &str, bind: &str) -> String {
    format!(
        "[[module]]\nname = \"tiny\"\nsource = \"{source}\"\nbind = \"{bind}\"\nmax_memory = \"64MiB\"\n\n[module.health]\nrequest = '{REQUEST}'\nexpect = '{{\"outputs\":[{{\"data\":[3,5,7,9]}}]}}'\n"
    )
}

/// An agent following `repo:stable` on a fresh registry.
struct Setup {
    reg: TestRegistry,
    publisher: Publisher,
    tmp: tempfile::TempDir,
    bind: String,
    status: String,
    config: PathBuf,
    weft: PathBuf,
}

fn setup(agent_extra: &str) -> Option<Setup> {
    let weft = weft()?;
    let reg = TestRegistry::start(None)?;
    let publisher = Publisher::new(&weft, &reg.addr);
    let tmp = tempfile::tempdir().unwrap();
    let bind = format!("127.0.0.1:{}", free_port());
    let status = format!("127.0.0.1:{}", free_port());
    let config = tmp.path().join("agent.toml");
    let source = format!("{}/tiny:stable", reg.addr);
    std::fs::write(
        &config,
        config_text(
            &tmp.path().join("agent"),
            &status,
            &tiny_module(&source, &bind),
            agent_extra,
        ),
    )
    .unwrap();
    Some(Setup {
        reg,
        publisher,
        tmp,
        bind,
        status,
        config,
        weft,
    })
}

const WAIT: Duration = Duration::from_secs(60);

#[test]
fn updates_follow_the_tag_and_bad_versions_are_refused_or_rolled_back() {
    let Some(s) = setup("") else { return };
    let v1 = s.publisher.publish("tiny", "stable", "1", Make::Good, 0);
    let agent = Agent::start(&s.weft, &s.config, &s.status, &[]);
    agent.wait_for("v1 running", WAIT, |st| settled(st, "tiny", &v1));
    assert!(serves(&s.bind));

    // A healthy new version under the same tag: taken.
    let v2 = s.publisher.publish("tiny", "stable", "2", Make::Good, 0);
    let st = agent.wait_for("v2 running", WAIT, |st| {
        running(st, "tiny").as_deref() == Some(&v2)
            && module_status(st, "tiny")["state"] == "running"
    });
    let m = module_status(&st, "tiny");
    assert_eq!(m["version"], "2");
    assert_eq!(m["previous"][0], v1.as_str());
    assert_eq!(m["last_transition"]["kind"], "update");
    assert!(serves(&s.bind));

    // Fails its health check before any switch: refused, v2 keeps serving.
    let bad = s
        .publisher
        .publish("tiny", "stable", "3", Make::WrongModel, 0);
    let st = agent.wait_for("the wrong model refused", WAIT, |st| {
        module_status(st, "tiny")["last_transition"]["to"] == bad.as_str()
    });
    let m = module_status(&st, "tiny");
    assert_eq!(m["last_transition"]["kind"], "refused", "{m}");
    let reason = m["last_transition"]["reason"].as_str().unwrap();
    assert!(
        reason.contains("health check failed") && reason.contains("shape"),
        "{reason}"
    );
    assert_eq!(running(&st, "tiny").as_deref(), Some(v2.as_str()));
    assert!(serves(&s.bind));

    // Passes once, then breaks during probation: switched, rolled back.
    let flaky = s.publisher.publish("tiny", "stable", "4", Make::Flaky, 0);
    let st = agent.wait_for("the flaky version rolled back", WAIT, |st| {
        module_status(st, "tiny")["last_transition"]["kind"] == "rollback"
    });
    let m = module_status(&st, "tiny");
    assert_eq!(m["last_transition"]["from"], flaky.as_str());
    assert_eq!(m["last_transition"]["to"], v2.as_str());
    assert!(
        m["last_transition"]["reason"]
            .as_str()
            .unwrap()
            .contains("flaky: broken"),
        "{m}"
    );
    assert_eq!(running(&st, "tiny").as_deref(), Some(v2.as_str()));
    assert!(serves(&s.bind));
    assert!(agent.log().contains("rolled back"), "{}", agent.log());

    // Not a serving module: does not start, refused.
    let cmd = s.publisher.publish("tiny", "stable", "5", Make::Command, 0);
    let st = agent.wait_for("the command module refused", WAIT, |st| {
        module_status(st, "tiny")["last_transition"]["to"] == cmd.as_str()
    });
    let reason = module_status(&st, "tiny")["last_transition"]["reason"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        reason.contains("does not start") && reason.contains("serving"),
        "{reason}"
    );
    assert!(serves(&s.bind));

    // What a person and a scraper see.
    let o = Command::new(&s.weft)
        .args(["agent", "status", "--addr", &s.status])
        .output()
        .unwrap();
    let text = out(&o);
    assert!(o.status.success(), "{text}");
    assert!(
        text.contains("tiny (service on") && text.contains(&v2[7..19]),
        "{text}"
    );
    let (_, metrics) = http(&s.status, "GET", "/metrics", "").unwrap();
    for line in [
        r#"weft_agent_updates_total{module="tiny",result="applied"} 2"#,
        r#"weft_agent_updates_total{module="tiny",result="rolled_back"} 1"#,
        r#"weft_agent_updates_total{module="tiny",result="refused"} 2"#,
    ] {
        assert!(metrics.contains(line), "{line} in\n{metrics}");
    }
    assert!(
        metrics.contains(&format!(
            r#"weft_agent_running{{module="tiny",digest="{v2}"}} 1"#
        )),
        "{metrics}"
    );
}

#[test]
fn offline_the_agent_keeps_serving_and_restarts_from_its_store() {
    let Some(mut s) = setup("") else { return };
    let v1 = s.publisher.publish("tiny", "stable", "1", Make::Good, 0);
    let mut agent = Agent::start(&s.weft, &s.config, &s.status, &[]);
    agent.wait_for("v1 running", WAIT, |st| settled(st, "tiny", &v1));

    // The network goes: the agent says so and keeps serving.
    s.reg.stop();
    let st = agent.wait_for("the source reported unreachable", WAIT, |st| {
        module_status(st, "tiny")["error"]
            .as_str()
            .is_some_and(|e| e.contains("unreachable"))
    });
    assert!(
        module_status(&st, "tiny")["error"]
            .as_str()
            .unwrap()
            .contains("still running what it has")
    );
    assert!(serves(&s.bind));

    // A restart without network: the same version from the store.
    agent.restart(&[]);
    let st = agent.wait_for("v1 back after a restart offline", WAIT, |st| {
        running(st, "tiny").as_deref() == Some(&v1)
            && module_status(st, "tiny")["state"] == "running"
    });
    assert_eq!(
        module_status(&st, "tiny")["last_transition"]["kind"],
        "start"
    );
    assert!(serves(&s.bind));

    // The network comes back with a new version.
    s.reg.restart();
    let v2 = s.publisher.publish("tiny", "stable", "2", Make::Good, 0);
    let st = agent.wait_for("v2 after the network came back", WAIT, |st| {
        running(st, "tiny").as_deref() == Some(&v2)
            && module_status(st, "tiny")["state"] == "running"
    });
    assert!(module_status(&st, "tiny")["error"].is_null(), "{st}");
}

/// Network loss between the agent and the registry for real: the registry
/// runs in its own network namespace, reached over a veth pair whose link
/// the test takes down and up.
#[test]
fn network_loss_through_a_network_namespace() {
    if !is_root() {
        skip_or_fail("network namespace tests need root");
        return;
    }
    let Some(weft) = weft() else { return };
    let n = std::process::id() % 200 + 20;
    let ns = format!("weft-agent-{}", std::process::id());
    let (host_if, ns_if) = (format!("wfa{n}h"), format!("wfa{n}n"));
    let (host_ip, ns_ip) = (format!("10.232.{n}.1"), format!("10.232.{n}.2"));
    let sh = |cmd: &str| {
        let o = Command::new("sh").arg("-c").arg(cmd).output().unwrap();
        assert!(o.status.success(), "{cmd}: {}", out(&o));
    };
    struct Cleanup(String, String);
    impl Drop for Cleanup {
        fn drop(&mut self) {
            let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
            let _ = Command::new("ip").args(["link", "del", &self.1]).status();
        }
    }
    let _cleanup = Cleanup(ns.clone(), host_if.clone());
    sh(&format!("ip netns add {ns}"));
    sh(&format!(
        "ip link add {host_if} type veth peer name {ns_if}"
    ));
    sh(&format!("ip link set {ns_if} netns {ns}"));
    sh(&format!(
        "ip addr add {host_ip}/30 dev {host_if} && ip link set {host_if} up"
    ));
    sh(&format!(
        "ip netns exec {ns} sh -c 'ip addr add {ns_ip}/30 dev {ns_if} && ip link set {ns_if} up && ip link set lo up'"
    ));
    // Only reachable over the veth pair, from this machine.
    let Some(_reg) = TestRegistry::start_at(format!("{ns_ip}:5000"), Some(&ns), None) else {
        return;
    };
    let registry = format!("{ns_ip}:5000");
    let mut publisher = Publisher::new(&weft, &registry);
    publisher.plain_http = true;
    let v1 = publisher.publish("tiny", "stable", "1", Make::Good, 0);
    let tmp = tempfile::tempdir().unwrap();
    let bind = format!("127.0.0.1:{}", free_port());
    let status = format!("127.0.0.1:{}", free_port());
    let config = tmp.path().join("agent.toml");
    std::fs::write(
        &config,
        config_text(
            &tmp.path().join("agent"),
            &status,
            &tiny_module(&format!("{registry}/tiny:stable"), &bind),
            "plain_http = true\n",
        ),
    )
    .unwrap();
    let agent = Agent::start(&weft, &config, &status, &[]);
    agent.wait_for("v1 running", WAIT, |st| settled(st, "tiny", &v1));

    // The registry's side of the link goes down: packets to it vanish
    // (taking the host side down would send them along the default route).
    sh(&format!("ip netns exec {ns} ip link set {ns_if} down"));
    agent.wait_for("the link loss noticed", WAIT, |st| {
        module_status(st, "tiny")["error"]
            .as_str()
            .is_some_and(|e| e.contains("unreachable"))
    });
    assert!(serves(&bind));

    sh(&format!("ip netns exec {ns} ip link set {ns_if} up"));
    // Until the neighbour entries recover.
    let back = Instant::now();
    while std::net::TcpStream::connect_timeout(&registry.parse().unwrap(), Duration::from_secs(1))
        .is_err()
    {
        assert!(
            back.elapsed() < Duration::from_secs(30),
            "the link did not come back"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let v2 = publisher.publish("tiny", "stable", "2", Make::Good, 0);
    agent.wait_for("v2 over the restored link", WAIT, |st| {
        running(st, "tiny").as_deref() == Some(&v2)
            && module_status(st, "tiny")["state"] == "running"
    });
    assert!(serves(&bind));
}

/// Every pinned version in the agent's store still hashes right, and the
/// committed state parses.
fn assert_consistent(agent_dir: &Path) -> Value {
    let state: Value =
        serde_json::from_slice(&std::fs::read(agent_dir.join("state.json")).unwrap())
            .expect("state.json parses");
    let store = weft_oci::Store::open(agent_dir.join("store")).unwrap();
    for (tag, _) in store.list().unwrap() {
        if tag.starts_with("weft-agent.local/") {
            weft_module::verify(&store, &tag).unwrap_or_else(|e| panic!("{tag}: {e}"));
        }
    }
    state
}

#[test]
fn kill_9_at_every_step_of_an_update_leaves_a_consistent_device() {
    let Some(s) = setup("max_rate = \"4MiB\"\n") else {
        return;
    };
    let agent_dir = s.tmp.path().join("agent");
    let v1 = s.publisher.publish("tiny", "stable", "1", Make::Good, 0);
    let mut agent = Agent::start(&s.weft, &s.config, &s.status, &[]);
    agent.wait_for("v1 running", WAIT, |st| settled(st, "tiny", &v1));

    // A v2 with a 12 MiB file: three seconds of download at 4 MiB/s.
    let v2 = s.publisher.publish("tiny", "stable", "2", Make::Good, 12);
    // SIGKILL at several moments of the download; every restart serves v1
    // or v2 and the partial download resumes.
    for after in [300, 900, 1500] {
        agent.restart(&[]);
        std::thread::sleep(Duration::from_millis(after));
        agent.kill9();
        let st = assert_consistent(&agent_dir);
        let current = st["modules"]["tiny"]["current"].as_str().map(str::to_owned);
        assert!(
            current == Some(v1.clone()) || current == Some(v2.clone()),
            "{st}"
        );
    }
    agent.restart(&[]);
    agent.wait_for("v2 after interrupted downloads", WAIT, |st| {
        running(st, "tiny").as_deref() == Some(&v2)
            && module_status(st, "tiny")["state"] == "running"
    });
    assert!(serves(&s.bind));

    // Crash at each step of the next update (and of a rollback): after a
    // restart the device runs a version that passed, never a half-made one.
    let mut expect_current = v2.clone();
    for (version, make, point) in [
        ("3", Make::Good, "downloaded"),
        ("4", Make::Good, "staged"),
        ("5", Make::Good, "switched"),
        ("6", Make::Good, "committed"),
        ("7", Make::Flaky, "rolling-back"),
    ] {
        let new = s.publisher.publish("tiny", "stable", version, make, 0);
        agent.restart(&[("WEFT_AGENT_FAILPOINT", point)]);
        let exit = agent
            .wait_exit(WAIT)
            .unwrap_or_else(|| panic!("failpoint {point} never hit:\n{}", agent.log()));
        assert!(!exit.success(), "{point}: {exit:?}");
        let st = assert_consistent(&agent_dir);
        let current = st["modules"]["tiny"]["current"]
            .as_str()
            .unwrap()
            .to_owned();
        // Only a commit moves `current`.
        let committed = point == "committed";
        assert_eq!(
            current,
            if committed {
                new.clone()
            } else {
                expect_current.clone()
            },
            "after {point}: {st}"
        );
        agent.restart(&[]);
        let healthy = !matches!(make, Make::Flaky);
        let want = if healthy {
            new.clone()
        } else {
            expect_current.clone()
        };
        agent.wait_for(
            &format!("the device after a crash at {point}"),
            WAIT,
            |st| {
                running(st, "tiny").as_deref() == Some(&want)
                    && module_status(st, "tiny")["state"] == "running"
                    && (healthy
                        || module_status(st, "tiny")["last_transition"]["kind"] == "rollback")
            },
        );
        assert!(serves(&s.bind), "after {point}");
        if healthy {
            expect_current = new;
        }
    }
    let st = assert_consistent(&agent_dir);
    assert!(
        st["modules"]["tiny"]["previous"].as_array().unwrap().len() <= 2,
        "{st}"
    );
}

#[test]
fn a_full_disk_during_a_download_leaves_the_running_version_alone() {
    if !is_root() {
        skip_or_fail("the full-disk test mounts a tmpfs (needs root)");
        return;
    }
    let Some(s) = setup("") else { return };
    let agent_dir = s.tmp.path().join("agent");
    std::fs::create_dir_all(&agent_dir).unwrap();
    let o = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=40m", "tmpfs"])
        .arg(&agent_dir)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", out(&o));
    struct Unmount(PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        }
    }
    let _u = Unmount(agent_dir.clone());
    let v1 = s.publisher.publish("tiny", "stable", "1", Make::Good, 0);
    let mut agent = Agent::start(&s.weft, &s.config, &s.status, &[]);
    agent.wait_for("v1 running", WAIT, |st| settled(st, "tiny", &v1));
    let before = std::fs::read(agent_dir.join("state.json")).unwrap();

    // 64 MiB does not fit in what the 40 MiB tmpfs has left.
    s.publisher.publish("tiny", "stable", "2", Make::Good, 64);
    let st = agent.wait_for("the full disk reported", WAIT, |st| {
        module_status(st, "tiny")["error"]
            .as_str()
            .is_some_and(|e| e.contains("No space left"))
    });
    assert_eq!(running(&st, "tiny").as_deref(), Some(v1.as_str()));
    assert!(serves(&s.bind));
    assert_eq!(
        std::fs::read(agent_dir.join("state.json")).unwrap(),
        before,
        "state untouched"
    );
    agent.kill9();
    assert_consistent(&agent_dir);
    // And after a restart on the full disk, v1 still comes up.
    agent.restart(&[]);
    agent.wait_for("v1 after a restart on a full disk", WAIT, |st| {
        running(st, "tiny").as_deref() == Some(&v1)
            && module_status(st, "tiny")["state"] == "running"
    });
    assert!(serves(&s.bind));
}

#[test]
fn bad_config_references_and_corrupt_blobs_are_named_and_the_rest_keeps_running() {
    let Some(s) = setup("") else { return };
    let weft = s.weft.clone();
    // A malformed configuration at first start: the agent says what is
    // wrong and exits (it has nothing to fall back on).
    let broken = s.tmp.path().join("broken.toml");
    std::fs::write(
        &broken,
        "[agent]\ndir = \"/tmp/x\"\n[[module]]\nname = \"a\"\nsource = \"a:1\"\n",
    )
    .unwrap();
    let o = Command::new(&weft)
        .args(["agent", "--config"])
        .arg(&broken)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", out(&o));
    assert!(
        out(&o).contains("module 'a': a service needs bind"),
        "{}",
        out(&o)
    );

    let v1 = s.publisher.publish("tiny", "stable", "1", Make::Good, 0);
    // A second module whose reference does not exist.
    let ghost_bind = format!("127.0.0.1:{}", free_port());
    let modules = format!(
        "{}\n[[module]]\nname = \"ghost\"\nsource = \"{}/ghost:1\"\nbind = \"{ghost_bind}\"\n",
        tiny_module(&format!("{}/tiny:stable", s.reg.addr), &s.bind),
        s.reg.addr
    );
    let good = config_text(&s.tmp.path().join("agent"), &s.status, &modules, "");
    std::fs::write(&s.config, &good).unwrap();
    let mut agent = Agent::start(&weft, &s.config, &s.status, &[]);
    let st = agent.wait_for("tiny running and ghost failing", WAIT, |st| {
        running(st, "tiny").as_deref() == Some(&v1)
            && module_status(st, "ghost")["error"]
                .as_str()
                .is_some_and(|e| e.contains("unknown") || e.contains("not found"))
    });
    assert_eq!(module_status(&st, "ghost")["state"], "waiting", "{st}");

    // A broken edit: refused with the reason, everything keeps running.
    std::fs::write(&s.config, format!("{good}\n[[module]]\nname = \"tiny\"\n")).unwrap();
    let st = agent.wait_for("the broken config refused", WAIT, |st| {
        st["agent"]["config_error"].is_string()
    });
    assert!(
        st["agent"]["config_error"]
            .as_str()
            .unwrap()
            .contains("missing field `source`"),
        "{st}"
    );
    assert!(serves(&s.bind));
    // A restart with the broken file runs the last good one.
    agent.restart(&[]);
    // The last good config holds both modules: tiny running again and
    // ghost tried again (whose first attempt may come after tiny's start).
    agent.wait_for("the last good config after a restart", WAIT, |st| {
        running(st, "tiny").as_deref() == Some(&v1)
            && st["agent"]["config_error"].is_string()
            && module_status(st, "ghost").is_object()
    });
    std::fs::write(&s.config, &good).unwrap();
    agent.wait_for("the fixed config accepted", WAIT, |st| {
        st["agent"]["config_error"].is_null()
    });

    // A plain container image under the tag: refused before it runs.
    let layout = s.tmp.path().join("plain");
    std::fs::create_dir_all(&layout).unwrap();
    weft_tests::containerd::image_tar(
        &layout,
        "weft.local/plain:1",
        ("linux", "amd64"),
        &["/bin/true"],
        &[],
    );
    let dir = std::fs::read_dir(&layout)
        .unwrap()
        .flatten()
        .find(|e| e.path().is_dir())
        .unwrap()
        .path();
    let o = Command::new("skopeo")
        .args(["copy", "--dest-tls-verify=false"])
        .arg(format!("oci:{}:weft.local/plain:1", dir.display()))
        .arg(format!("docker://{}/tiny:stable", s.reg.addr))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", out(&o));
    let st = agent.wait_for("the plain image refused", WAIT, |st| {
        module_status(st, "tiny")["error"]
            .as_str()
            .is_some_and(|e| e.contains("not a Weft model module"))
    });
    assert_eq!(running(&st, "tiny").as_deref(), Some(v1.as_str()));
    assert!(serves(&s.bind));

    // Corrupt the running version's module in the store: a restart refuses
    // to run it (digest mismatch) and says so.
    agent.kill9();
    let store = weft_oci::Store::open(s.tmp.path().join("agent/store")).unwrap();
    let pin = format!("weft-agent.local/tiny:sha256-{}", &v1[7..]);
    let art = weft_oci::Artifact::open(&store, &pin).unwrap();
    let blob = store.blob_path(art.module_layer().unwrap().digest());
    let mut bytes = std::fs::read(&blob).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&blob, bytes).unwrap();
    agent.restart(&[]);
    let st = agent.wait_for("the corrupt version not run", WAIT, |st| {
        let t = &module_status(st, "tiny")["last_transition"];
        t["kind"] == "fallback" && t["reason"].as_str().is_some_and(|r| r.contains("digest"))
    });
    assert!(running(&st, "tiny").is_none(), "{st}");
    assert!(
        !blob.exists(),
        "the corrupt blob is removed so a fetch can replace it"
    );

    // The source names v1 again: fetched again, whole, and run.
    s.publisher
        .weft(&["push", "tiny:1", &format!("{}/tiny:stable", s.reg.addr)]);
    agent.wait_for("v1 fetched again after the corruption", WAIT, |st| {
        settled(st, "tiny", &v1)
    });
    assert!(serves(&s.bind));
}

#[test]
fn a_job_runs_each_new_version_and_keeps_the_last_good_one() {
    let Some(s) = setup("") else { return };
    let v1 = s
        .publisher
        .publish("calib", "stable", "1", Make::Command, 0);
    let modules = format!(
        "[[module]]\nname = \"calib\"\nsource = \"{}/calib:stable\"\nkind = \"job\"\nargs = [\"model\", \"--dims\", \"1,4\", \"1\", \"2\", \"3\", \"4\"]\nhealth = {{ stdout = \"3 5 7 9\" }}\n",
        s.reg.addr
    );
    std::fs::write(
        &s.config,
        config_text(&s.tmp.path().join("agent"), &s.status, &modules, ""),
    )
    .unwrap();
    let agent = Agent::start(&s.weft, &s.config, &s.status, &[]);
    let st = agent.wait_for("the job's first run", WAIT, |st| {
        running(st, "calib").as_deref() == Some(&v1)
            && module_status(st, "calib")["last_run"]["ok"] == true
    });
    assert!(
        module_status(&st, "calib")["last_run"]["message"]
            .as_str()
            .unwrap()
            .contains("3 5 7 9"),
        "{st}"
    );
    // A version whose run fails (a serving module has no _start): refused.
    let bad = s.publisher.publish("calib", "stable", "2", Make::Good, 0);
    let st = agent.wait_for("the failing job refused", WAIT, |st| {
        module_status(st, "calib")["last_transition"]["to"] == bad.as_str()
    });
    assert_eq!(
        module_status(&st, "calib")["last_transition"]["kind"],
        "refused"
    );
    assert_eq!(running(&st, "calib").as_deref(), Some(v1.as_str()));
}

/// The cluster as a source, against the in-memory API server
/// (`weft_tests::apiserver`, kube's `tower_test` mock pattern) with the
/// agent in this process: it registers its `EdgeDevice`, heartbeats, runs
/// what the operator assigns from a real registry, reports digest, health
/// and counters, and keeps serving (and restarts) while the API server is
/// gone.
#[test]
fn the_cluster_assigns_modules_and_losing_it_stops_nothing() {
    use weft_tests::apiserver::FakeApi;
    let Some(weft) = weft() else { return };
    let Some(reg) = TestRegistry::start(None) else {
        return;
    };
    let publisher = Publisher::new(&weft, &reg.addr);
    let digest = publisher.publish("tiny", "stable", "1.0.0", Make::Good, 0);
    let tmp = tempfile::tempdir().unwrap();
    let status = format!("127.0.0.1:{}", free_port());
    let port = free_port();
    let bind = format!("127.0.0.1:{port}");
    let config = tmp.path().join("agent.toml");
    let cluster = "[cluster]\nnamespace = \"edge\"\ndevice = \"cam-1\"\nlabels = { site = \"factory-1\" }\nbind = \"127.0.0.1\"\nmemory = \"1GiB\"\ncpus = 2\nmodules = 3\naccelerators = { \"example.com/npu\" = 1 }\nrenew = \"300ms\"\n";
    std::fs::write(
        &config,
        config_text(&tmp.path().join("agent"), &status, cluster, ""),
    )
    .unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (client, api) = {
        let _g = rt.enter();
        FakeApi::start()
    };
    let start = |client: kube::Client| {
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let config = config.clone();
        let task = rt.spawn(async move {
            weft_agent::run_with(
                &config,
                async {
                    let _ = rx.await;
                },
                Some(client),
            )
            .await
        });
        (tx, task)
    };
    let device = "/apis/weft.dev/v1alpha1/namespaces/edge/edgedevices/cam-1";
    let lease = "/apis/coordination.k8s.io/v1/namespaces/edge/leases/weft-edge-cam-1";
    let wait = |what: &str, pred: &dyn Fn() -> bool| {
        let started = Instant::now();
        while !pred() {
            assert!(
                started.elapsed() < WAIT,
                "timed out waiting for {what}; device: {:#?}; agent: {:?}",
                api.get(device),
                http(&status, "GET", "/status", "").map(|r| r.1)
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    let agent_status = || -> Value {
        http(&status, "GET", "/status", "")
            .ok()
            .and_then(|(_, b)| serde_json::from_str(&b).ok())
            .unwrap_or(Value::Null)
    };
    let (stop, task) = start(client.clone());

    // Registration and heartbeat.
    wait("the EdgeDevice", &|| {
        api.get(device)
            .is_some_and(|d| d["status"]["capacity"]["modules"] == 3)
    });
    let d = api.get(device).unwrap();
    assert_eq!(d["metadata"]["labels"]["site"], "factory-1");
    let arch = weft_agent::cluster::architecture();
    assert_eq!(d["status"]["architecture"], arch);
    assert_eq!(d["status"]["capacity"]["memoryBytes"], 1u64 << 30);
    assert_eq!(d["status"]["accelerators"]["example.com/npu"], 1);
    let l = api.get(lease).expect("a Lease");
    assert_eq!(l["spec"]["holderIdentity"], "cam-1");
    assert_eq!(l["spec"]["leaseDurationSeconds"], weft_crd::LEASE_SECONDS);
    let renewed = |api: &FakeApi| api.get(lease).unwrap()["spec"]["renewTime"].clone();
    let first = renewed(&api);
    wait("a renewal", &|| renewed(&api) != first);

    // The operator assigns a module.
    let pinned = format!("{}/tiny@{digest}", reg.addr);
    let mut d = api.get(device).unwrap();
    d["spec"]["assignments"]["tiny-edge"] = serde_json::json!({
        "artifact": pinned, "port": port, "modelName": "tiny", "memory": "64Mi", "deployment": "tiny",
        "health": {"request": REQUEST, "expect": "{\"outputs\":[{\"data\":[3,5,7,9]}]}"}});
    api.put(device, d);
    wait("the assigned module to run", &|| {
        settled(&agent_status(), "tiny-edge", &digest)
    });
    assert!(serves(&bind));
    for _ in 0..3 {
        assert!(serves(&bind));
    }
    wait("the report of the module", &|| {
        api.get(device).is_some_and(|d| {
            let m = &d["status"]["modules"]["tiny-edge"];
            m["digest"] == digest.as_str()
                && m["health"] == "ok"
                && m["requests"].as_u64().unwrap_or(0) >= 4
        })
    });
    assert_eq!(api.get(device).unwrap()["status"]["runningModules"], 1);

    // The API server goes away: the module keeps serving, the agent says
    // it is offline.
    api.set_down(true);
    wait("the agent to notice", &|| {
        agent_status()["agent"]["cluster"]["error"].is_string()
    });
    std::thread::sleep(Duration::from_secs(1));
    assert!(serves(&bind), "losing the API server stops nothing");
    assert!(settled(&agent_status(), "tiny-edge", &digest));

    // Restarted while offline, it runs its cached assignments.
    stop.send(()).unwrap();
    rt.block_on(task).unwrap().unwrap();
    assert!(!serves(&bind), "the agent stopped");
    let (stop, task) = start(client.clone());
    wait("the cached assignment to run again offline", &|| {
        serves(&bind)
    });
    assert!(
        agent_status()["agent"]["cluster"]["last_contact"].is_null(),
        "no contact since the restart"
    );

    // The API server is back: heartbeats resume.
    let before = renewed(&api);
    api.set_down(false);
    wait("the heartbeat to resume", &|| {
        renewed(&api) != before && agent_status()["agent"]["cluster"]["error"].is_null()
    });

    // An assignment it cannot run is named; the rest keeps running.
    let mut d = api.get(device).unwrap();
    d["spec"]["assignments"]["bad-edge"] = serde_json::json!({
        "artifact": format!("{}/tiny:stable", reg.addr), "port": free_port(), "modelName": "tiny"});
    api.put(device, d);
    wait("the refusal", &|| {
        agent_status()["modules"]["bad-edge"]["error"]
            .as_str()
            .is_some_and(|e| e.contains("not pinned to a digest"))
    });
    assert!(serves(&bind));

    // The operator takes the assignment away: the module stops and is no
    // longer reported.
    let mut d = api.get(device).unwrap();
    d["spec"]["assignments"] = serde_json::json!({});
    api.put(device, d);
    wait("the module to stop", &|| !serves(&bind));
    wait("the report to drop it", &|| {
        api.get(device)
            .is_some_and(|d| d["status"]["modules"]["tiny-edge"].is_null())
    });

    // Someone deletes the EdgeDevice: the agent registers it again.
    api.remove(device);
    wait("registration again", &|| api.get(device).is_some());
    stop.send(()).unwrap();
    rt.block_on(task).unwrap().unwrap();
}
