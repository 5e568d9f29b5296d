//! Push and pull against a real registry (Debian's docker-registry on
//! 127.0.0.1), with skopeo as an independent client.

use std::path::Path;
use weft_oci::artifact::{self, FileKind, PackFile, Package};
use weft_oci::{Artifact, OciError, Remote, RemoteOptions, Store, parse_reference};
use weft_tests::{Guest, TestRegistry, big_file, data, module};

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// Package tinyrun + tiny.onnx (+ an optional big extra file) as `tiny:1`.
fn package(store: &Store, extra: Option<&Path>) -> String {
    let model = data("tiny.onnx");
    let mut files = vec![PackFile {
        source: &model,
        path: "models/tiny.onnx".into(),
        kind: FileKind::Weights,
        preload: Some("tiny".into()),
    }];
    if let Some(extra) = extra {
        files.push(PackFile {
            source: extra,
            path: "data/big.bin".into(),
            kind: FileKind::Config,
            preload: None,
        });
    }
    let module = module(Guest::P1, "tinyrun");
    let desc = artifact::build(
        store,
        Package {
            name: "tiny".into(),
            version: "1".into(),
            description: None,
            created: "2026-01-01T00:00:00Z".into(),
            module: &module,
            args: vec![],
            files,
            models: vec![],
        },
    )
    .unwrap();
    desc.digest().to_string()
}

fn connect(reference: &str) -> (Remote, weft_oci::registry::Reference) {
    let r = parse_reference(reference).unwrap();
    (Remote::new(&r, RemoteOptions::default()).unwrap(), r)
}

/// A registry holding the tiny artifact, pushed from store `a` as `repo`.
struct Pushed {
    reg: TestRegistry,
    tmp: tempfile::TempDir,
    a: Store,
    digest: String,
    remote: Remote,
    target: weft_oci::registry::Reference,
    rt: tokio::runtime::Runtime,
}

fn pushed(repo: &str) -> Option<Pushed> {
    let reg = TestRegistry::start(None)?;
    let tmp = tempfile::tempdir().unwrap();
    let a = Store::open(tmp.path().join("a")).unwrap();
    let digest = package(&a, None);
    let (remote, target) = connect(&format!("{}/{repo}", reg.addr));
    let rt = rt();
    rt.block_on(remote.push(&a, "tiny:1", &target)).unwrap();
    Some(Pushed {
        reg,
        tmp,
        a,
        digest,
        remote,
        target,
        rt,
    })
}

#[test]
fn push_pull_round_trip_skips_what_is_there() {
    let Some(reg) = TestRegistry::start(None) else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let a = Store::open(tmp.path().join("a")).unwrap();
    let digest = package(&a, None);
    let (remote, target) = connect(&format!("{}/team/tiny:1", reg.addr));
    let rt = rt();
    let pushed = rt.block_on(remote.push(&a, "tiny:1", &target)).unwrap();
    assert_eq!(pushed.manifest_digest, digest);
    assert_eq!((pushed.blobs_transferred, pushed.blobs_skipped), (3, 0));
    let again = rt.block_on(remote.push(&a, "tiny:1", &target)).unwrap();
    assert_eq!((again.blobs_transferred, again.blobs_skipped), (0, 3));

    let b = Store::open(tmp.path().join("b")).unwrap();
    let pulled = rt.block_on(remote.pull(&b, &target)).unwrap();
    assert_eq!(pulled.manifest_digest, digest);
    let art = Artifact::open(&b, &target.whole()).unwrap();
    assert_eq!(art.manifest_digest.to_string(), digest);
    for layer in art.manifest.layers() {
        assert_eq!(
            std::fs::read(b.blob_path(layer.digest())).unwrap(),
            std::fs::read(a.blob_path(layer.digest())).unwrap()
        );
    }
    // Pulling by digest works and verifies the manifest against it.
    let (remote, by_digest) = connect(&format!("{}/team/tiny@{digest}", reg.addr));
    let c = Store::open(tmp.path().join("c")).unwrap();
    rt.block_on(remote.pull(&c, &by_digest)).unwrap();
}

#[test]
fn large_artifact_round_trip() {
    let Some(reg) = TestRegistry::start(None) else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    // 256 MiB of incompressible bytes.
    let big = tmp.path().join("big.bin");
    big_file(&big, 256);
    let a = Store::open(tmp.path().join("a")).unwrap();
    let digest = package(&a, Some(&big));
    let (remote, target) = connect(&format!("{}/big:1", reg.addr));
    let rt = rt();
    rt.block_on(remote.push(&a, "tiny:1", &target)).unwrap();
    let b = Store::open(tmp.path().join("b")).unwrap();
    let report = rt.block_on(remote.pull(&b, &target)).unwrap();
    assert_eq!(report.manifest_digest, digest);
    assert!(report.bytes >= 256 << 20);
    let art = Artifact::open(&b, &target.whole()).unwrap();
    let (_, layer) = art.files().find(|(p, _)| *p == "data/big.bin").unwrap();
    assert_eq!(
        std::fs::metadata(b.blob_path(layer.digest()))
            .unwrap()
            .len(),
        256 << 20
    );
}

#[test]
fn interrupted_download_resumes_with_a_range_request() {
    let Some(Pushed {
        reg: _reg,
        tmp,
        a,
        digest: _,
        remote,
        target,
        rt,
    }) = pushed("tiny:1")
    else {
        return;
    };
    // Leave the first half of the module layer as an interrupted download.
    let art = Artifact::open(&a, "tiny:1").unwrap();
    let layer = art.module_layer().unwrap().clone();
    let whole = std::fs::read(a.blob_path(layer.digest())).unwrap();
    let half = whole.len() / 2;
    let b = Store::open(tmp.path().join("b")).unwrap();
    std::fs::write(b.partial_path(layer.digest()), &whole[..half]).unwrap();
    let report = rt.block_on(remote.pull(&b, &target)).unwrap();
    assert_eq!(report.blobs_resumed, 1);
    let others: u64 = art
        .manifest
        .layers()
        .iter()
        .skip(1)
        .map(|l| l.size())
        .sum::<u64>()
        + art.manifest.config().size();
    assert_eq!(
        report.bytes,
        (whole.len() - half) as u64 + others,
        "only the missing half moved"
    );
    assert_eq!(std::fs::read(b.blob_path(layer.digest())).unwrap(), whole);
    assert!(!b.partial_path(layer.digest()).exists());
}

#[test]
fn corrupted_blob_fails_the_pull_and_stores_nothing() {
    let Some(Pushed {
        reg,
        tmp,
        a,
        digest: _,
        remote,
        target,
        rt,
    }) = pushed("tiny:1")
    else {
        return;
    };
    let art = Artifact::open(&a, "tiny:1").unwrap();
    let layer = art.module_layer().unwrap().clone();
    let on_disk = reg.blob_file(layer.digest().digest());
    let mut bytes = std::fs::read(&on_disk).unwrap();
    bytes[100] ^= 0xff;
    std::fs::write(&on_disk, bytes).unwrap();
    let b = Store::open(tmp.path().join("b")).unwrap();
    let err = rt.block_on(remote.pull(&b, &target)).unwrap_err();
    assert!(
        matches!(&err, OciError::DigestMismatch { .. }) || err.to_string().contains("digest"),
        "{err}"
    );
    assert!(
        !b.has_blob(layer.digest()),
        "a corrupt blob must not be stored"
    );
    assert!(!b.partial_path(layer.digest()).exists());
    assert!(b.list().unwrap().is_empty(), "nothing tagged");
}

#[test]
fn skopeo_sees_the_same_artifact_and_weft_reads_what_skopeo_copied() {
    let Some(reg) = TestRegistry::start(None) else {
        return;
    };
    if !Path::new("/usr/bin/skopeo").exists() {
        weft_tests::skip_or_fail("skopeo is not installed (apt-get install skopeo)");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let a = Store::open(tmp.path().join("a")).unwrap();
    let digest = package(&a, None);
    let (remote, target) = connect(&format!("{}/tiny:1", reg.addr));
    let rt = rt();
    rt.block_on(remote.push(&a, "tiny:1", &target)).unwrap();
    let layout = tmp.path().join("layout");
    let skopeo = |args: &[&str]| {
        let out = std::process::Command::new("skopeo")
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "skopeo {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    };
    let src = format!("docker://{}", target.whole());
    let raw = skopeo(&["inspect", "--tls-verify=false", "--raw", &src]);
    assert_eq!(
        weft_nn::digest(&raw),
        digest,
        "skopeo sees another manifest"
    );
    let dst = format!("oci:{}:tiny:1", layout.display());
    skopeo(&["copy", "-q", "--src-tls-verify=false", &src, &dst]);
    // The skopeo-written layout is a Weft store: same digest, same files.
    let copied = Store::open(&layout).unwrap();
    let art = Artifact::open(&copied, "tiny:1").unwrap();
    assert_eq!(art.manifest_digest.to_string(), digest);
    // And back: skopeo pushes the layout elsewhere, Weft pulls it.
    let back = format!("docker://{}/from-skopeo:1", reg.addr);
    skopeo(&["copy", "-q", "--dest-tls-verify=false", &dst, &back]);
    let (remote, source) = connect(&format!("{}/from-skopeo:1", reg.addr));
    let b = Store::open(tmp.path().join("b")).unwrap();
    let report = rt.block_on(remote.pull(&b, &source)).unwrap();
    assert_eq!(report.manifest_digest, digest);
}

#[test]
fn a_plain_container_image_is_refused_before_any_layer_moves() {
    let Some(reg) = TestRegistry::start(None) else {
        return;
    };
    if !Path::new("/usr/bin/skopeo").exists() {
        weft_tests::skip_or_fail("skopeo is not installed (apt-get install skopeo)");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    // A minimal linux image laid out by hand, pushed by skopeo.
    let layout = Store::open(tmp.path().join("plain")).unwrap();
    let (cd, cs) = layout
        .put_bytes(
            br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#,
        )
        .unwrap();
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd.to_string(), "size": cs},
        "layers": []
    });
    let (md, ms) = layout
        .put_bytes(&serde_json::to_vec(&manifest).unwrap())
        .unwrap();
    layout
        .tag(
            "plain:1",
            &weft_oci::Descriptor::new(oci_spec::image::MediaType::ImageManifest, ms, md),
        )
        .unwrap();
    let out = std::process::Command::new("skopeo")
        .args(["copy", "-q", "--dest-tls-verify=false"])
        .arg(format!("oci:{}:plain:1", layout.root().display()))
        .arg(format!("docker://{}/plain:1", reg.addr))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (remote, source) = connect(&format!("{}/plain:1", reg.addr));
    let b = Store::open(tmp.path().join("b")).unwrap();
    let err = rt().block_on(remote.pull(&b, &source)).unwrap_err();
    assert!(
        err.to_string().contains("is not a Weft model module"),
        "{err}"
    );
    assert!(
        err.to_string()
            .contains("application/vnd.oci.image.config.v1+json"),
        "{err}"
    );
    assert_eq!(
        std::fs::read_dir(tmp.path().join("b/blobs/sha256"))
            .unwrap()
            .count(),
        0
    );
}

#[test]
fn classic_variant_travels_through_a_registry() {
    let Some(reg) = TestRegistry::start(None) else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let a = Store::open(tmp.path().join("a")).unwrap();
    package(&a, None);
    let classic = Artifact::open(&a, "tiny:1")
        .unwrap()
        .build_classic(&a, "tiny:1-classic")
        .unwrap();
    let (remote, target) = connect(&format!("{}/tiny:1-classic", reg.addr));
    let rt = rt();
    let pushed = rt
        .block_on(remote.push(&a, "tiny:1-classic", &target))
        .unwrap();
    assert_eq!(pushed.manifest_digest, classic.digest().to_string());
    let b = Store::open(tmp.path().join("b")).unwrap();
    let pulled = rt.block_on(remote.pull(&b, &target)).unwrap();
    assert_eq!(pulled.manifest_digest, classic.digest().to_string());
    let desc = b.resolve(&target.whole()).unwrap();
    let manifest = b.manifest(&desc).unwrap();
    assert_eq!(
        manifest.layers()[0].media_type().to_string(),
        "application/vnd.oci.image.layer.v1.tar"
    );
}

/// A full disk during a pull: a clear error, and what the store already
/// held is intact and usable.
#[test]
fn full_disk_during_pull_keeps_the_store_consistent() {
    let Some(reg) = TestRegistry::start(None) else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let small = tmp.path().join("small");
    std::fs::create_dir_all(&small).unwrap();
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=24m", "tmpfs"])
        .arg(&small)
        .status()
        .is_ok_and(|s| s.success());
    if !mounted {
        weft_tests::skip_or_fail("cannot mount a small tmpfs (needs root)");
        return;
    }
    struct Unmount<'a>(&'a Path);
    impl Drop for Unmount<'_> {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount").arg(self.0).status();
        }
    }
    let _unmount = Unmount(&small);

    let a = Store::open(tmp.path().join("a")).unwrap();
    let big = tmp.path().join("big.bin");
    big_file(&big, 48);
    package(&a, None);
    let rt = rt();
    let (remote, small_ref) = connect(&format!("{}/small:1", reg.addr));
    rt.block_on(remote.push(&a, "tiny:1", &small_ref)).unwrap();
    let a2 = Store::open(tmp.path().join("a2")).unwrap();
    package(&a2, Some(&big));
    let (remote, big_ref) = connect(&format!("{}/big:1", reg.addr));
    rt.block_on(remote.push(&a2, "tiny:1", &big_ref)).unwrap();

    let store = Store::open(small.join("store")).unwrap();
    rt.block_on(remote.pull(&store, &small_ref)).unwrap();
    let err = rt.block_on(remote.pull(&store, &big_ref)).unwrap_err();
    let mut text = err.to_string();
    let mut source = std::error::Error::source(&err);
    while let Some(cause) = source {
        text.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    assert!(
        text.to_lowercase().contains("no space left"),
        "the error should say the disk is full: {text}"
    );
    // The earlier artifact is still complete and verified; nothing new is tagged.
    let tags: Vec<String> = store.list().unwrap().into_iter().map(|(r, _)| r).collect();
    assert_eq!(tags, [small_ref.whole()]);
    let art = Artifact::open(&store, &small_ref.whole()).unwrap();
    for layer in art.manifest.layers() {
        store.read_blob(layer.digest()).unwrap();
    }
}

/// The tag moves to another artifact while a pull is under way: the pull
/// finishes with exactly the manifest it started with, never a mix.
#[test]
fn tag_moving_during_a_pull_gives_the_version_it_started_with() {
    let Some(reg) = TestRegistry::start(None) else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let big = tmp.path().join("big.bin");
    big_file(&big, 96);
    let v1 = Store::open(tmp.path().join("v1")).unwrap();
    let v1_digest = package(&v1, Some(&big));
    let v2 = Store::open(tmp.path().join("v2")).unwrap();
    let v2_digest = package(&v2, None);
    assert_ne!(v1_digest, v2_digest);
    let (remote, tag) = connect(&format!("{}/moving:stable", reg.addr));
    let rt = rt();
    rt.block_on(remote.push(&v1, "tiny:1", &tag)).unwrap();

    let dest = Store::open(tmp.path().join("dest")).unwrap();
    let report = std::thread::scope(|s| {
        let puller = s.spawn(|| rt.block_on(remote.pull(&dest, &tag)));
        // Move the tag once the big layer is on its way.
        let blobs = tmp.path().join("dest/blobs/sha256");
        let started = std::time::Instant::now();
        loop {
            let downloading = std::fs::read_dir(&blobs)
                .into_iter()
                .flatten()
                .flatten()
                .any(|e| e.file_name().to_string_lossy().contains("partial"));
            if downloading {
                break;
            }
            assert!(
                !puller.is_finished(),
                "the pull ended before the tag could move"
            );
            assert!(started.elapsed().as_secs() < 30, "the pull never started");
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        let (mover, tag2) = connect(&tag.whole());
        let mover_rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        mover_rt.block_on(mover.push(&v2, "tiny:1", &tag2)).unwrap();
        puller.join().unwrap()
    })
    .unwrap();
    assert_eq!(report.manifest_digest, v1_digest);
    let art = Artifact::open(&dest, &tag.whole()).unwrap();
    assert_eq!(art.manifest_digest.to_string(), v1_digest);
    for layer in art.manifest.layers() {
        dest.read_blob(layer.digest()).unwrap();
    }
    // The next pull sees the moved tag.
    let again = rt.block_on(remote.pull(&dest, &tag)).unwrap();
    assert_eq!(again.manifest_digest, v2_digest);
}

/// The progress hook sees every byte of every blob it is told about.
#[test]
fn progress_reports_every_byte() {
    use std::sync::Mutex;
    #[derive(Default)]
    struct Count(Mutex<(usize, u64, usize)>);
    impl weft_oci::Progress for Count {
        fn started(&self, _: &str, _: u64, done: u64) {
            let mut c = self.0.lock().unwrap();
            c.0 += 1;
            c.1 += done;
        }
        fn advanced(&self, _: &str, bytes: u64) {
            self.0.lock().unwrap().1 += bytes;
        }
        fn finished(&self, _: &str) {
            self.0.lock().unwrap().2 += 1;
        }
    }
    let Some(reg) = TestRegistry::start(None) else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let a = Store::open(tmp.path().join("a")).unwrap();
    package(&a, None);
    let art = Artifact::open(&a, "tiny:1").unwrap();
    let total: u64 =
        art.manifest.layers().iter().map(|l| l.size()).sum::<u64>() + art.manifest.config().size();
    let target = parse_reference(&format!("{}/tiny:1", reg.addr)).unwrap();
    let rt = rt();
    for direction in ["push", "pull"] {
        let count = std::sync::Arc::new(Count::default());
        let remote = Remote::new(
            &target,
            RemoteOptions {
                progress: Some(count.clone()),
                ..Default::default()
            },
        )
        .unwrap();
        if direction == "push" {
            rt.block_on(remote.push(&a, "tiny:1", &target)).unwrap();
        } else {
            let b = Store::open(tmp.path().join("b")).unwrap();
            rt.block_on(remote.pull(&b, &target)).unwrap();
        }
        let (started, bytes, finished) = *count.0.lock().unwrap();
        assert_eq!((started, finished), (3, 3), "{direction}");
        assert_eq!(bytes, total, "{direction}");
    }
}

/// Within one registry a copy mounts blobs across repositories instead of
/// moving them, and the copy pulls like the original.
#[test]
fn copy_within_a_registry_mounts_blobs() {
    let Some(Pushed {
        reg,
        tmp,
        a: _,
        digest,
        remote,
        target: source,
        rt,
    }) = pushed("team-a/tiny:1")
    else {
        return;
    };
    let target = parse_reference(&format!("{}/team-b/tiny:1", reg.addr)).unwrap();
    let report = rt.block_on(remote.copy_within(&source, &target)).unwrap();
    assert_eq!(report.manifest_digest, digest);
    assert_eq!(
        (report.blobs_mounted, report.blobs_skipped, report.bytes),
        (3, 0, 0)
    );
    let b = Store::open(tmp.path().join("b")).unwrap();
    assert_eq!(
        rt.block_on(remote.pull(&b, &target))
            .unwrap()
            .manifest_digest,
        digest
    );
}

#[test]
fn unreachable_registry_and_missing_layer_are_named() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(tmp.path().join("s")).unwrap();
    let rt = rt();
    // Nothing listens on this port.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let (remote, nowhere) = connect(&format!("127.0.0.1:{port}/tiny:1"));
    let err = rt
        .block_on(remote.pull(&store, &nowhere))
        .unwrap_err()
        .to_string();
    assert!(err.contains(&format!("127.0.0.1:{port}")), "{err}");
    assert!(
        err.to_lowercase().contains("connect"),
        "the cause should be named: {err}"
    );

    let Some(reg) = TestRegistry::start(None) else {
        return;
    };
    let a = Store::open(tmp.path().join("a")).unwrap();
    package(&a, None);
    let (remote, target) = connect(&format!("{}/tiny:1", reg.addr));
    rt.block_on(remote.push(&a, "tiny:1", &target)).unwrap();
    // The registry loses the module layer.
    let art = Artifact::open(&a, "tiny:1").unwrap();
    let layer = art.module_layer().unwrap();
    std::fs::remove_file(reg.blob_file(layer.digest().digest())).unwrap();
    let err = rt
        .block_on(remote.pull(&store, &target))
        .unwrap_err()
        .to_string();
    assert!(err.contains(&format!("{}/tiny:1", reg.addr)), "{err}");
    assert!(store.list().unwrap().is_empty(), "nothing may be tagged");
    assert!(!store.has_blob(layer.digest()));
}

/// `max_rate` caps a pull: 4 MiB at 1 MiB/s cannot finish in much under
/// three seconds (the first second's allowance aside), and still arrives
/// whole. Only a lower bound is asserted, so a slow machine cannot fail it.
#[test]
fn a_rate_limited_pull_takes_as_long_as_its_rate_says() {
    let Some(reg) = TestRegistry::start(None) else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let big = tmp.path().join("big.bin");
    big_file(&big, 4);
    let a = Store::open(tmp.path().join("a")).unwrap();
    let digest = package(&a, Some(&big));
    let (remote, target) = connect(&format!("{}/slow:1", reg.addr));
    let rt = rt();
    rt.block_on(remote.push(&a, "tiny:1", &target)).unwrap();
    let slow = Remote::new(
        &target,
        RemoteOptions {
            max_rate: Some(1 << 20),
            ..Default::default()
        },
    )
    .unwrap();
    let b = Store::open(tmp.path().join("b")).unwrap();
    let started = std::time::Instant::now();
    let report = rt.block_on(slow.pull(&b, &target)).unwrap();
    let took = started.elapsed();
    assert_eq!(report.manifest_digest, digest);
    assert!(
        took >= std::time::Duration::from_millis(2500),
        "4 MiB at 1 MiB/s took only {took:?}"
    );
}

/// Issue 21: a registry that sends more than a blob's descriptor says was
/// read to the end before the digest check failed. Now the download stops
/// as soon as it runs past the size, and nothing is stored.
#[test]
fn a_blob_longer_than_its_descriptor_is_stopped_at_once() {
    let Some(Pushed {
        reg,
        tmp,
        a,
        remote,
        target,
        rt,
        ..
    }) = pushed("tiny:1")
    else {
        return;
    };
    let art = Artifact::open(&a, "tiny:1").unwrap();
    let layer = art.module_layer().unwrap().clone();
    let on_disk = reg.blob_file(layer.digest().digest());
    let mut bytes = std::fs::read(&on_disk).unwrap();
    bytes.extend(std::iter::repeat_n(0u8, 8 << 20));
    std::fs::write(&on_disk, bytes).unwrap();
    let b = Store::open(tmp.path().join("b")).unwrap();
    let err = rt.block_on(remote.pull(&b, &target)).unwrap_err();
    assert!(matches!(err, OciError::Oversized { .. }), "{err}");
    assert!(!b.has_blob(layer.digest()));
    assert!(!b.partial_path(layer.digest()).exists());
    assert!(b.list().unwrap().is_empty(), "nothing tagged");
}

/// A registry that answers every manifest request with an endless body
/// (no real registry sends one: distribution refuses manifests over 4 MiB
/// on push, so this hostile one is a few lines of std). With
/// `length`, it announces that size first.
fn endless_registry(length: Option<u64>) -> (String, std::thread::JoinHandle<u64>) {
    use std::io::{BufRead, BufReader, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let handle = std::thread::spawn(move || {
        let mut sent = 0u64;
        for stream in listener.incoming().take(4) {
            let Ok(mut stream) = stream else { break };
            let mut line = String::new();
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            reader.read_line(&mut line).unwrap();
            loop {
                let mut h = String::new();
                if reader.read_line(&mut h).unwrap() == 0 || h == "\r\n" {
                    break;
                }
            }
            if !line.contains("/manifests/") {
                let _ = stream.write_all(
                    b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}",
                );
                continue;
            }
            let mut head = String::from(
                "HTTP/1.1 200 OK\r\nContent-Type: application/vnd.oci.image.manifest.v1+json\r\nConnection: close\r\n",
            );
            if let Some(n) = length {
                head.push_str(&format!("Content-Length: {n}\r\n"));
            }
            head.push_str("\r\n{\"schemaVersion\":2");
            let _ = stream.write_all(head.as_bytes());
            let chunk = vec![b' '; 1 << 16];
            // Stops when the client hangs up (or after 1 GiB).
            while sent < 1 << 30 && stream.write_all(&chunk).is_ok() {
                sent += chunk.len() as u64;
            }
            break;
        }
        sent
    });
    (addr, handle)
}

/// Issue 21: manifests were read whole, however large. Now a manifest past
/// the cap is refused while it arrives: announced too large, or running
/// past the cap without announcing, the client stops reading.
#[test]
fn a_manifest_over_the_cap_is_refused_while_it_arrives() {
    let tmp = tempfile::tempdir().unwrap();
    let b = Store::open(tmp.path().join("b")).unwrap();
    for length in [None, Some(1u64 << 30)] {
        let (addr, server) = endless_registry(length);
        let (remote, source) = connect(&format!("{addr}/x:1"));
        let err = rt().block_on(remote.pull(&b, &source)).unwrap_err();
        assert!(err.to_string().contains("are refused"), "{err}");
        drop(remote);
        let sent = server.join().unwrap();
        assert!(
            sent < 256 << 20,
            "the client read {sent} bytes before stopping"
        );
    }
    assert!(b.list().unwrap().is_empty());
}

/// Issue 21: two layers with the same bytes (the same digest at two paths)
/// were downloaded at once into one partial file, and uploaded at once to
/// the registry. Now each digest moves once each way, and every path is
/// there.
#[test]
fn identical_layers_are_downloaded_once() {
    let Some(reg) = TestRegistry::start(None) else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let a = Store::open(tmp.path().join("a")).unwrap();
    let big = tmp.path().join("big.bin");
    big_file(&big, 4);
    let module = module(Guest::P1, "tinyrun");
    let files = ["data/one.bin", "data/two.bin", "data/three.bin"]
        .into_iter()
        .map(|p| PackFile {
            source: &big,
            path: p.into(),
            kind: FileKind::Config,
            preload: None,
        })
        .collect();
    artifact::build(
        &a,
        Package {
            name: "same".into(),
            version: "1".into(),
            description: None,
            created: "2026-01-01T00:00:00Z".into(),
            module: &module,
            args: vec![],
            files,
            models: vec![],
        },
    )
    .unwrap();
    let (remote, target) = connect(&format!("{}/same:1", reg.addr));
    let rt = rt();
    // Uploads race the same way: the registry answered one of three
    // concurrent uploads of one digest with a 500.
    let pushed = rt.block_on(remote.push(&a, "same:1", &target)).unwrap();
    assert_eq!(pushed.blobs_transferred, 3, "{pushed:?}");
    assert!(
        pushed.bytes < 5 << 20,
        "the 4 MiB blob went up more than once: {pushed:?}"
    );
    let b = Store::open(tmp.path().join("b")).unwrap();
    let report = rt.block_on(remote.pull(&b, &target)).unwrap();
    // Config, module, and the one big blob.
    assert_eq!(report.blobs_transferred, 3, "{report:?}");
    assert!(
        report.bytes < 5 << 20,
        "the 4 MiB blob moved more than once: {report:?}"
    );
    let art = Artifact::open(&b, &target.whole()).unwrap();
    let bundle = art.materialize(&b).unwrap();
    for p in ["data/one.bin", "data/two.bin", "data/three.bin"] {
        assert_eq!(std::fs::metadata(bundle.join(p)).unwrap().len(), 4 << 20);
    }
    b.verify_blob(art.manifest.layers()[1].digest()).unwrap();
}

/// Issue 21: `--insecure` sent credentials over plain HTTP to any host.
/// Plain HTTP and skipped certificate checks are separate options now, and
/// credentials cross plain HTTP to another host only when asked.
#[test]
fn credentials_never_cross_plain_http_to_another_host_unasked() {
    let auth = weft_oci::RegistryAuth::Basic("me".into(), "secret".into());
    let remote = |registry: &str, credentials: bool| {
        let r = parse_reference(&format!("{registry}/x:1")).unwrap();
        Remote::new(
            &r,
            RemoteOptions {
                plain_http: true,
                plain_http_credentials: credentials,
                auth: auth.clone(),
                ..Default::default()
            },
        )
    };
    let e = remote("registry.example:5000", false).err().unwrap();
    assert!(
        e.to_string().contains("refusing to send credentials"),
        "{e}"
    );
    assert!(remote("registry.example:5000", true).is_ok());
    assert!(
        remote("127.0.0.1:5000", false).is_ok(),
        "loopback stays on the machine"
    );
    // Without credentials there is nothing to leak.
    let r = parse_reference("registry.example:5000/x:1").unwrap();
    assert!(
        Remote::new(
            &r,
            RemoteOptions {
                plain_http: true,
                ..Default::default()
            }
        )
        .is_ok()
    );
}
