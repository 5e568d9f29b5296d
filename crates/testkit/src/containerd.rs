//! A private, real containerd for the shim's tests and benchmark: its own
//! root, state, socket, compile cache and (with the CRI plugin) CNI bridge
//! network under a temporary directory. Needs root.
//!
//! Two releases: Debian's own containerd (1.6.20, which accepts only tar
//! layers, so the classic image variant) and Debian trixie's 1.7.24, which
//! `scripts/fetch-containerd.sh` unpacks into `target/containerd/` (it
//! stores the Weft artifact's non-tar layers without unpacking them).
//!
//! [`Cri`] drives the CRI plugin as the kubelet does (`RunPodSandbox` with a
//! runtime handler, `CreateContainer`, `StartContainer`, logs), through the
//! `k8s-cri` bindings.

use crate::{repo_root, skip_or_fail};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

pub use k8s_cri::v1 as cri;

/// A containerd release the tests can start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Release {
    /// Debian's package (bookworm: 1.6.20), on `PATH`.
    Debian,
    /// Debian trixie's 1.7.24, unpacked by `scripts/fetch-containerd.sh`.
    V1_7,
}

impl Release {
    /// `(containerd, ctr)`, or `None` (skipped, or failed in CI) when absent.
    pub fn binaries(self) -> Option<(PathBuf, PathBuf)> {
        let found = match self {
            Release::Debian => Command::new("containerd")
                .arg("--version")
                .output()
                .is_ok()
                .then(|| ("containerd".into(), "ctr".into())),
            Release::V1_7 => {
                let bin = repo_root().join("target/containerd/1.7.24/usr/bin");
                bin.join("containerd")
                    .exists()
                    .then(|| (bin.join("containerd"), bin.join("ctr")))
            }
        };
        if found.is_none() {
            skip_or_fail(match self {
                Release::Debian => "containerd is not installed (apt-get install containerd)",
                Release::V1_7 => "containerd 1.7 is not unpacked: run scripts/fetch-containerd.sh",
            });
        }
        found
    }
}

/// How to start containerd.
#[derive(Debug, Clone)]
pub struct Options {
    pub release: Release,
    /// Load the CRI plugin, with a CNI bridge network and the `weft`
    /// runtime handler added by `weft-node-installer`'s block.
    pub cri: bool,
    /// The directory holding `containerd-shim-weft-v1`; it goes first on
    /// containerd's `PATH`, as the installer puts the shim on the node's.
    pub shim_dir: PathBuf,
}

/// The CRI pod sandbox image the tests build and import.
pub const PAUSE_IMAGE: &str = "weft.local/test/pause:1";

/// Whether this process can run containerd at all.
pub fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

static INSTANCES: AtomicU32 = AtomicU32::new(0);

pub struct Containerd {
    dir: tempfile::TempDir,
    child: Child,
    ctr: PathBuf,
    /// The namespace `ctr` calls use (`k8s.io` with CRI, as the kubelet's).
    pub namespace: &'static str,
    bridge: Option<String>,
}

impl Containerd {
    pub fn start(opts: &Options) -> Option<Containerd> {
        if !is_root() {
            skip_or_fail("containerd tests need root");
            return None;
        }
        let (containerd, ctr) = opts.release.binaries()?;
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let n = INSTANCES.fetch_add(1, Ordering::Relaxed);
        let mut config = format!(
            "version = 2\nroot = \"{0}/root\"\nstate = \"{0}/state\"\n\n[grpc]\n  address = \"{0}/containerd.sock\"\n\n",
            d.display()
        );
        if std::env::var_os("WEFT_TEST_CONTAINERD_DEBUG").is_some() {
            config.push_str("[debug]\n  level = \"debug\"\n\n");
        }
        let mut bridge = None;
        if opts.cri {
            // One bridge and subnet per instance: tests run in parallel.
            let tag = (std::process::id() * 7 + n) % 200 + 20;
            let name = format!("weftcni{tag}");
            std::fs::create_dir_all(d.join("cni")).unwrap();
            std::fs::write(
                d.join("cni/10-weft-test.conflist"),
                format!(
                    r#"{{"cniVersion": "1.0.0", "name": "weft-test-{tag}", "plugins": [
  {{"type": "bridge", "bridge": "{name}", "isGateway": true, "ipMasq": false,
    "ipam": {{"type": "host-local", "ranges": [[{{"subnet": "10.231.{tag}.0/24"}}]],
             "dataDir": "{dir}/ipam"}}}}]}}"#,
                    dir = d.display()
                ),
            )
            .unwrap();
            bridge = Some(name);
            config.push_str(&format!(
                r#"[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{PAUSE_IMAGE}"
  # This machine may not lower oom_score_adj (the kubelet's -998 for
  # sandboxes); cap it at containerd's own, as for containerd in a container.
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "{0}/cni"
  [plugins."io.containerd.grpc.v1.cri".registry]
    config_path = "{0}/certs.d"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
"#,
                d.display()
            ));
            // The node installer's block, exactly as it writes it on a node.
            config = weft_node_installer::install(&config).expect("installer block");
        } else {
            config.push_str("disabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n");
        }
        std::fs::write(d.join("config.toml"), &config).unwrap();
        let path = format!(
            "{}:{}",
            opts.shim_dir.display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let log = std::fs::File::create(d.join("containerd.log")).unwrap();
        let child = Command::new(&containerd)
            .arg("--config")
            .arg(d.join("config.toml"))
            .env("PATH", path)
            .env("WEFT_CACHE_DIR", d.join("compiled"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        let c = Containerd {
            dir,
            child,
            ctr,
            namespace: if opts.cri { "k8s.io" } else { "weft-test" },
            bridge,
        };
        let started = Instant::now();
        while c.ctr(&["version"]).status.code() != Some(0) {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "containerd did not start:\n{}",
                c.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Some(c)
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("containerd.sock")
    }

    /// The shim's compile cache (`WEFT_CACHE_DIR` of this containerd).
    pub fn compile_cache(&self) -> PathBuf {
        self.dir.path().join("compiled")
    }

    /// Let the CRI plugin pull from a plain-HTTP registry on loopback.
    pub fn trust_registry(&self, addr: &str) {
        let d = self.dir.path().join("certs.d").join(addr);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(
            d.join("hosts.toml"),
            format!(
                "server = \"http://{addr}\"\n\n[host.\"http://{addr}\"]\n  capabilities = [\"pull\", \"resolve\"]\n"
            ),
        )
        .unwrap();
    }

    pub fn ctr(&self, args: &[&str]) -> Output {
        Command::new(&self.ctr)
            .arg("-a")
            .arg(self.socket())
            .args(["-n", self.namespace])
            .args(args)
            .output()
            .expect("ctr")
    }

    /// `ctr images import` an OCI layout tarball.
    pub fn import(&self, tar: &Path, platform: &str) {
        let o = self.ctr(&[
            "images",
            "import",
            "--platform",
            platform,
            tar.to_str().unwrap(),
        ]);
        assert!(o.status.success(), "import: {}", text(&o));
    }

    /// Wait (30 s at most) until task `id` has stopped or is gone.
    pub fn wait_stopped(&self, id: &str) {
        let started = Instant::now();
        loop {
            let ls = text(&self.ctr(&["task", "ls"]));
            let line = ls.lines().find(|l| l.starts_with(id));
            if line.is_none_or(|l| l.contains("STOPPED")) {
                return;
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "task {id} not stopped: {ls}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// containerd's own log.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("containerd.log")).unwrap_or_default()
    }

    /// A CRI client on this containerd's socket.
    pub fn cri(&self) -> Cri {
        Cri::connect(&self.socket())
    }

    /// Import the pod sandbox image ([`PAUSE_IMAGE`]) for the CRI plugin.
    pub fn import_pause(&self) {
        let dir = self.dir.path().join("pause");
        std::fs::create_dir_all(&dir).unwrap();
        let tar = pause_image(&dir);
        self.import(&tar, &format!("linux/{}", host_arch()));
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        // Pods a failed test left behind: stopping them removes their
        // network namespaces and CNI addresses.
        if self.bridge.is_some()
            && let Some(cri) = Cri::try_connect(&self.socket())
        {
            let mut rt = cri.runtime.clone();
            if let Ok(pods) =
                cri.block(rt.list_pod_sandbox(cri::ListPodSandboxRequest { filter: None }))
            {
                for pod in pods.into_inner().items {
                    let _ = cri.block(rt.stop_pod_sandbox(cri::StopPodSandboxRequest {
                        pod_sandbox_id: pod.id.clone(),
                    }));
                    let _ = cri.block(rt.remove_pod_sandbox(cri::RemovePodSandboxRequest {
                        pod_sandbox_id: pod.id,
                    }));
                }
            }
        }
        let sock = self.socket().display().to_string();
        // Shims outlive containerd by design; these are ours.
        let _ = Command::new("pkill")
            .args(["-KILL", "-f", &format!("containerd-shim.*{sock}")])
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
        // Leave no mounts behind in the temporary root.
        let _ = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "grep -o '{}[^ ]*' /proc/mounts | sort -r | xargs -r -n1 umount -l",
                self.dir.path().display()
            ))
            .status();
        if let Some(b) = &self.bridge {
            let _ = Command::new("ip").args(["link", "del", b]).status();
        }
    }
}

/// stdout and stderr of a finished command.
pub fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// The OCI name of this machine's architecture.
pub fn host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

/// A file in an image built by [`image_tar`].
pub struct ImageFile<'a> {
    pub path: &'a str,
    pub bytes: &'a [u8],
    pub mode: u32,
}

/// An OCI image layout tarball with one uncompressed tar layer, tagged
/// `reference` (a full name, as `ctr images import` wants).
pub fn image_tar(
    dir: &Path,
    reference: &str,
    (os, arch): (&str, &str),
    entrypoint: &[&str],
    files: &[ImageFile],
) -> PathBuf {
    use sha2::{Digest, Sha256};
    let layout = dir.join(format!(
        "layout-{}",
        reference.replace(['/', ':', '.'], "-")
    ));
    let blobs = layout.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).unwrap();
    let put = |bytes: &[u8]| -> (String, usize) {
        let hex = hex::encode(Sha256::digest(bytes));
        std::fs::write(blobs.join(&hex), bytes).unwrap();
        (format!("sha256:{hex}"), bytes.len())
    };
    let mut layer = tar::Builder::new(Vec::new());
    for f in files {
        let mut h = tar::Header::new_gnu();
        h.set_size(f.bytes.len() as u64);
        h.set_mode(f.mode);
        h.set_mtime(0);
        h.set_cksum();
        layer.append_data(&mut h, f.path, f.bytes).unwrap();
    }
    let layer = layer.into_inner().unwrap();
    let (layer_digest, layer_size) = put(&layer);
    let config = serde_json::json!({
        "architecture": arch,
        "os": os,
        "config": {
            "Entrypoint": entrypoint,
            "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
        },
        "rootfs": { "type": "layers", "diff_ids": [layer_digest] },
    });
    let (config_digest, config_size) = put(config.to_string().as_bytes());
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": { "mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config_size },
        "layers": [{ "mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": layer_digest, "size": layer_size }],
    });
    let (manifest_digest, manifest_size) = put(manifest.to_string().as_bytes());
    std::fs::write(
        layout.join("oci-layout"),
        r#"{"imageLayoutVersion":"1.0.0"}"#,
    )
    .unwrap();
    let index = serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": manifest_digest, "size": manifest_size,
            "annotations": { "org.opencontainers.image.ref.name": reference },
        }],
    });
    std::fs::write(layout.join("index.json"), index.to_string()).unwrap();
    let tar_path = layout.with_extension("tar");
    let o = Command::new("tar")
        .arg("-C")
        .arg(&layout)
        .arg("-cf")
        .arg(&tar_path)
        .arg(".")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    tar_path
}

/// Build the pod sandbox image: a static `pause` (what the kubelet's
/// `registry.k8s.io/pause` is) from `tests/data/pause.c`.
pub fn pause_image(dir: &Path) -> PathBuf {
    let bin = dir.join("pause");
    let o = Command::new("cc")
        .args(["-static", "-O2", "-o"])
        .arg(&bin)
        .arg(crate::data("pause.c"))
        .output()
        .expect("cc");
    assert!(o.status.success(), "building pause: {}", text(&o));
    let bytes = std::fs::read(&bin).unwrap();
    image_tar(
        dir,
        PAUSE_IMAGE,
        ("linux", host_arch()),
        &["/pause"],
        &[ImageFile {
            path: "pause",
            bytes: &bytes,
            mode: 0o755,
        }],
    )
}

/// A blocking CRI client (runtime and image services).
pub struct Cri {
    rt: tokio::runtime::Runtime,
    pub runtime: cri::runtime_service_client::RuntimeServiceClient<tonic::transport::Channel>,
    pub images: cri::image_service_client::ImageServiceClient<tonic::transport::Channel>,
}

impl Cri {
    pub fn connect(socket: &Path) -> Cri {
        Self::try_connect(socket).expect("connecting to the CRI socket")
    }

    pub fn try_connect(socket: &Path) -> Option<Cri> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .ok()?;
        let socket = socket.to_owned();
        let channel = rt
            .block_on(
                tonic::transport::Endpoint::try_from("http://[::]")
                    .unwrap()
                    .connect_with_connector(tower::service_fn(move |_| {
                        let socket = socket.clone();
                        async move {
                            Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(
                                tokio::net::UnixStream::connect(socket).await?,
                            ))
                        }
                    })),
            )
            .ok()?;
        Some(Cri {
            rt,
            runtime: cri::runtime_service_client::RuntimeServiceClient::new(channel.clone()),
            images: cri::image_service_client::ImageServiceClient::new(channel),
        })
    }

    /// Run a future on this client's runtime.
    pub fn block<F: std::future::Future>(&self, f: F) -> F::Output {
        self.rt.block_on(f)
    }

    /// Wait until the CRI plugin sees an image (imports reach it through
    /// containerd's events).
    pub fn wait_image(&mut self, image: &str) {
        let started = Instant::now();
        loop {
            let mut images = self.images.clone();
            let status = self.block(images.image_status(cri::ImageStatusRequest {
                image: Some(cri::ImageSpec {
                    image: image.into(),
                    ..Default::default()
                }),
                verbose: false,
            }));
            if status.is_ok_and(|s| s.into_inner().image.is_some()) {
                return;
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "the CRI plugin never saw {image}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `RunPodSandbox` with a runtime handler (what a RuntimeClass sets):
    /// returns the pod's id and IP.
    pub fn run_pod(
        &mut self,
        config: &cri::PodSandboxConfig,
        handler: &str,
    ) -> Result<(String, String), tonic::Status> {
        let mut rt = self.runtime.clone();
        let id = self
            .block(rt.run_pod_sandbox(cri::RunPodSandboxRequest {
                config: Some(config.clone()),
                runtime_handler: handler.into(),
            }))?
            .into_inner()
            .pod_sandbox_id;
        let status = self
            .block(rt.pod_sandbox_status(cri::PodSandboxStatusRequest {
                pod_sandbox_id: id.clone(),
                verbose: false,
            }))?
            .into_inner();
        let ip = status
            .status
            .and_then(|s| s.network)
            .map(|n| n.ip)
            .unwrap_or_default();
        Ok((id, ip))
    }

    /// `CreateContainer` then `StartContainer`; the container's id, or
    /// the error of whichever failed.
    pub fn start_container(
        &mut self,
        pod: &str,
        config: cri::ContainerConfig,
        sandbox: &cri::PodSandboxConfig,
    ) -> Result<String, (Option<String>, tonic::Status)> {
        let mut rt = self.runtime.clone();
        let id = self
            .block(rt.create_container(cri::CreateContainerRequest {
                pod_sandbox_id: pod.into(),
                config: Some(config),
                sandbox_config: Some(sandbox.clone()),
            }))
            .map_err(|e| (None, e))?
            .into_inner()
            .container_id;
        self.block(rt.start_container(cri::StartContainerRequest {
            container_id: id.clone(),
        }))
        .map_err(|e| (Some(id.clone()), e))?;
        Ok(id)
    }

    pub fn container_status(&mut self, id: &str) -> cri::ContainerStatus {
        let mut rt = self.runtime.clone();
        self.block(rt.container_status(cri::ContainerStatusRequest {
            container_id: id.into(),
            verbose: false,
        }))
        .expect("ContainerStatus")
        .into_inner()
        .status
        .expect("a status")
    }

    /// Wait (up to `timeout`) until the container has exited; its status.
    pub fn wait_exited(&mut self, id: &str, timeout: Duration) -> cri::ContainerStatus {
        let started = Instant::now();
        loop {
            let s = self.container_status(id);
            if s.state == cri::ContainerState::ContainerExited as i32 {
                return s;
            }
            assert!(
                started.elapsed() < timeout,
                "container {id} still {:?} after {timeout:?}",
                s.state
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn stop_container(&mut self, id: &str, timeout_s: i64) {
        let mut rt = self.runtime.clone();
        self.block(rt.stop_container(cri::StopContainerRequest {
            container_id: id.into(),
            timeout: timeout_s,
        }))
        .expect("StopContainer");
    }

    pub fn remove_container(&mut self, id: &str) {
        let mut rt = self.runtime.clone();
        self.block(rt.remove_container(cri::RemoveContainerRequest {
            container_id: id.into(),
        }))
        .expect("RemoveContainer");
    }

    /// `StopPodSandbox` and `RemovePodSandbox`.
    pub fn remove_pod(&mut self, id: &str) {
        let mut rt = self.runtime.clone();
        self.block(rt.stop_pod_sandbox(cri::StopPodSandboxRequest {
            pod_sandbox_id: id.into(),
        }))
        .expect("StopPodSandbox");
        self.block(rt.remove_pod_sandbox(cri::RemovePodSandboxRequest {
            pod_sandbox_id: id.into(),
        }))
        .expect("RemovePodSandbox");
    }

    pub fn pull(&mut self, image: &str) -> Result<String, tonic::Status> {
        let mut images = self.images.clone();
        Ok(self
            .block(images.pull_image(cri::PullImageRequest {
                image: Some(cri::ImageSpec {
                    image: image.into(),
                    ..Default::default()
                }),
                auth: None,
                sandbox_config: None,
            }))?
            .into_inner()
            .image_ref)
    }

    pub fn version(&mut self) -> Result<String, tonic::Status> {
        let mut rt = self.runtime.clone();
        Ok(self
            .block(rt.version(cri::VersionRequest {
                version: "v1".into(),
            }))?
            .into_inner()
            .runtime_version)
    }
}

/// What the kubelet sends unless the pod sets `shareProcessNamespace` or
/// `hostNetwork`: the pod's network and IPC, each container its own PIDs.
fn kubelet_namespaces() -> cri::NamespaceOption {
    cri::NamespaceOption {
        network: cri::NamespaceMode::Pod as i32,
        pid: cri::NamespaceMode::Container as i32,
        ipc: cri::NamespaceMode::Pod as i32,
        ..Default::default()
    }
}

/// A pod's configuration as the kubelet writes it, with its logs under
/// `log_dir` and the pod network (not the host's).
pub fn pod_config(name: &str, log_dir: &Path) -> cri::PodSandboxConfig {
    std::fs::create_dir_all(log_dir).unwrap();
    cri::PodSandboxConfig {
        metadata: Some(cri::PodSandboxMetadata {
            name: name.into(),
            uid: format!("uid-{name}-{}", std::process::id()),
            namespace: "default".into(),
            attempt: 0,
        }),
        hostname: name.into(),
        log_directory: log_dir.display().to_string(),
        linux: Some(cri::LinuxPodSandboxConfig {
            security_context: Some(cri::LinuxSandboxSecurityContext {
                namespace_options: Some(kubelet_namespaces()),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// A container's configuration: `image`, its environment, a memory
/// limit, logs at `<pod log dir>/<name>.log`.
pub fn container_config(
    name: &str,
    image: &str,
    env: &[(&str, &str)],
    memory_limit: i64,
) -> cri::ContainerConfig {
    cri::ContainerConfig {
        metadata: Some(cri::ContainerMetadata {
            name: name.into(),
            attempt: 0,
        }),
        image: Some(cri::ImageSpec {
            image: image.into(),
            ..Default::default()
        }),
        envs: env
            .iter()
            .map(|(k, v)| cri::KeyValue {
                key: (*k).into(),
                value: (*v).into(),
            })
            .collect(),
        log_path: format!("{name}.log"),
        linux: Some(cri::LinuxContainerConfig {
            resources: Some(cri::LinuxContainerResources {
                memory_limit_in_bytes: memory_limit,
                ..Default::default()
            }),
            security_context: Some(cri::LinuxContainerSecurityContext {
                namespace_options: Some(kubelet_namespaces()),
                ..Default::default()
            }),
        }),
        ..Default::default()
    }
}

/// The text of a CRI log file (`<time> <stream> <P|F> <line>` per line),
/// lines joined as the kubelet's `kubectl logs` shows them.
pub fn cri_log(path: &Path) -> String {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.splitn(4, ' ').nth(3))
        .collect::<Vec<_>>()
        .join("\n")
}

/// One HTTP/1.1 request over a fresh connection: `(status, body)`.
pub fn http(addr: &str, method: &str, path: &str, body: &str) -> std::io::Result<(u16, String)> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect_timeout(
        &addr.parse().map_err(std::io::Error::other)?,
        Duration::from_secs(2),
    )?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    let status = out
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = out
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Ok((status, body))
}

/// Poll `addr` with `request` until it answers 200 (or `timeout`).
pub fn wait_http_ok(
    addr: &str,
    method: &str,
    path: &str,
    body: &str,
    timeout: Duration,
) -> Option<String> {
    let started = Instant::now();
    while started.elapsed() < timeout {
        if let Ok((200, body)) = http(addr, method, path, body) {
            return Some(body);
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    None
}

/// A TCP port free on loopback right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `weft build --classic` of the package directory `pkg` (whose weft.toml
/// names `reference`), keeping only the classic variant, as an OCI layout
/// tarball for `ctr images import` (containerd 1.6.20 cannot unpack the
/// artifact's non-tar layers).
pub fn classic_image_tar(weft: &Path, pkg: &Path, reference: &str) -> anyhow::Result<PathBuf> {
    let store = pkg.join("store");
    let run = |args: &[&str]| -> anyhow::Result<()> {
        let o = Command::new(weft)
            .args(args)
            .arg("--store")
            .arg(&store)
            .output()?;
        anyhow::ensure!(o.status.success(), "weft {args:?}: {}", text(&o));
        Ok(())
    };
    run(&["build", &pkg.display().to_string(), "--classic"])?;
    run(&["rm", reference])?;
    run(&["gc"])?;
    let tar = pkg.join("image.tar");
    let o = Command::new("tar")
        .arg("-C")
        .arg(&store)
        .arg("-cf")
        .arg(&tar)
        .arg(".")
        .output()?;
    anyhow::ensure!(o.status.success(), "tar: {}", text(&o));
    Ok(tar)
}
