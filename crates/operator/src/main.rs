//! `weft-operator`: reconciles `ModelDeployment` objects (see
//! `docs/operator.md`); `/metrics` and `/healthz` on `--metrics-bind`.

use clap_free::Args;
use std::sync::Arc;

mod clap_free {
    /// `--metrics-bind ADDR`, `--plain-http-registries` and
    /// `--insecure-skip-tls-verify`, from the command line or the
    /// environment.
    pub struct Args {
        pub metrics_bind: String,
        pub plain_http: bool,
        pub skip_tls_verify: bool,
        /// Reconcile only while holding the leader Lease (default).
        pub leader_elect: bool,
    }

    impl Args {
        pub fn parse() -> Args {
            let mut a = Args {
                metrics_bind: std::env::var("WEFT_OPERATOR_METRICS")
                    .unwrap_or_else(|_| "0.0.0.0:8080".into()),
                plain_http: std::env::var_os("WEFT_PLAIN_HTTP_REGISTRIES").is_some(),
                skip_tls_verify: std::env::var_os("WEFT_INSECURE_SKIP_TLS_VERIFY").is_some(),
                leader_elect: true,
            };
            let mut it = std::env::args().skip(1);
            while let Some(arg) = it.next() {
                match arg.as_str() {
                    "--metrics-bind" => a.metrics_bind = it.next().unwrap_or_default(),
                    "--plain-http-registries" => a.plain_http = true,
                    "--insecure-skip-tls-verify" => a.skip_tls_verify = true,
                    "--insecure-registries" => {
                        eprintln!(
                            "weft-operator: --insecure-registries was split in two: --plain-http-registries (HTTP registries) and --insecure-skip-tls-verify (untrusted certificates)"
                        );
                        std::process::exit(2);
                    }
                    "--no-leader-elect" => a.leader_elect = false,
                    "--help" | "-h" => {
                        println!(
                            "weft-operator [--metrics-bind ADDR] [--plain-http-registries] [--insecure-skip-tls-verify] [--no-leader-elect]"
                        );
                        std::process::exit(0);
                    }
                    other => {
                        eprintln!("weft-operator: unknown argument {other:?}; see --help");
                        std::process::exit(2);
                    }
                }
            }
            a
        }
    }
}

#[tokio::main]
async fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    if let Err(e) = run(Args::parse()).await {
        eprintln!("weft-operator: {e:#}");
        std::process::exit(1);
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    use anyhow::Context as _;
    let client = kube::Client::try_default()
        .await
        .context("connecting to the Kubernetes API (in-cluster or KUBECONFIG)")?;
    let metrics = Arc::new(weft_operator::metrics::Metrics::default());
    let ctx = Arc::new(weft_operator::controller::Context {
        client: client.clone(),
        resolver: Arc::new(weft_operator::resolve::RegistryResolver {
            plain_http: args.plain_http,
            skip_tls_verify: args.skip_tls_verify,
        }),
        health: Arc::new(weft_operator::health::Observed),
        metrics: metrics.clone(),
        now: Arc::new(k8s_openapi::jiff::Timestamp::now),
        recorder: kube::runtime::events::Recorder::new(
            client.clone(),
            weft_operator::controller::reporter(),
        ),
    });
    let listener = tokio::net::TcpListener::bind(&args.metrics_bind)
        .await
        .with_context(|| format!("binding {}", args.metrics_bind))?;
    let app = axum::Router::new()
        .route("/healthz", axum::routing::get(|| async { "ok\n" }))
        .route(
            "/metrics",
            axum::routing::get(move || {
                let m = metrics.clone();
                async move { m.encode() }
            }),
        );
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    if !args.leader_elect {
        return weft_operator::controller::run(ctx).await;
    }
    // Several replicas may run; the holder of this Lease reconciles.
    let namespace = std::env::var("POD_NAMESPACE").unwrap_or_else(|_| "weft-system".into());
    let identity = std::env::var("POD_NAME").unwrap_or_else(|_| {
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_owned())
            .unwrap_or_else(|_| format!("weft-operator-{}", std::process::id()))
    });
    let elector = weft_operator::leader::Elector {
        api: kube::Api::namespaced(client, &namespace),
        name: "weft-operator".into(),
        identity,
        duration: std::time::Duration::from_secs(15),
        now: Arc::new(k8s_openapi::jiff::Timestamp::now),
    };
    elector.lead(weft_operator::controller::run(ctx)).await
}
