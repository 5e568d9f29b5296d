//! `weft login` / `weft logout`: credentials in the docker configuration,
//! so `docker login` and `weft login` share them.

use crate::remote::RemoteArgs;
use anyhow::{Context, bail};
use base64::Engine as _;
use clap::Args;
use std::io::{Read, Write};
use std::path::PathBuf;

/// Log in to a registry: check the credentials against it and store them in
/// $DOCKER_CONFIG/config.json (default ~/.docker/config.json) as `docker
/// login` does, for weft and docker alike.
#[derive(Args)]
pub struct LoginArgs {
    /// Registry host[:port].
    pub registry: String,
    /// User name.
    #[arg(long, short = 'u')]
    pub username: String,
    /// Read the password from standard input (keeps it out of the shell
    /// history and the process list).
    #[arg(long, required = true)]
    pub password_stdin: bool,
    #[command(flatten)]
    pub remote: RemoteArgs,
}

/// Forget the stored credentials of a registry.
#[derive(Args)]
pub struct LogoutArgs {
    /// Registry host[:port].
    pub registry: String,
}

fn config_path() -> anyhow::Result<PathBuf> {
    if let Some(dir) = std::env::var_os("DOCKER_CONFIG") {
        return Ok(PathBuf::from(dir).join("config.json"));
    }
    let home = dirs::home_dir().context("no home directory; set DOCKER_CONFIG")?;
    Ok(home.join(".docker").join("config.json"))
}

fn read_config(path: &PathBuf) -> anyhow::Result<serde_json::Value> {
    match std::fs::read_to_string(path) {
        Ok(text) => serde_json::from_str(&text)
            .with_context(|| format!("{} is not valid JSON; fix or remove it", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(serde_json::json!({})),
        Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
}

/// Replace the file atomically, readable by its owner only.
fn write_config(path: &PathBuf, value: &serde_json::Value) -> anyhow::Result<()> {
    let dir = path.parent().context("config path has no parent")?;
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    tmp.write_all(serde_json::to_string_pretty(value)?.as_bytes())?;
    tmp.as_file().sync_all()?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        tmp.as_file()
            .set_permissions(std::fs::Permissions::from_mode(0o600))?;
    }
    tmp.persist(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

pub fn login(a: LoginArgs) -> anyhow::Result<i32> {
    let mut password = String::new();
    std::io::stdin()
        .read_to_string(&mut password)
        .context("reading the password from standard input")?;
    let password = password.trim_end_matches(['\r', '\n']).to_string();
    if password.is_empty() {
        bail!(
            "no password on standard input; pipe it in: echo \"$PASSWORD\" | weft login {} -u {} --password-stdin",
            a.registry,
            a.username
        );
    }
    let probe = weft_oci::parse_reference(&format!("{}/weft-login-probe:none", a.registry))?;
    let options = a.remote.options(weft_oci::RegistryAuth::Basic(
        a.username.clone(),
        password.clone(),
    ))?;
    let remote = weft_oci::Remote::new(&probe, options)
        .map_err(|e| crate::remote::hint_http_credentials(e.into()))?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(remote.check_credentials(&probe))
        .with_context(|| format!("logging in to {}", a.registry))?;
    let path = config_path()?;
    let mut config = read_config(&path)?;
    let auth =
        base64::engine::general_purpose::STANDARD.encode(format!("{}:{password}", a.username));
    config
        .as_object_mut()
        .context("docker config is not a JSON object")?
        .entry("auths")
        .or_insert_with(|| serde_json::json!({}))
        .as_object_mut()
        .context("`auths` in the docker config is not an object")?
        .insert(a.registry.clone(), serde_json::json!({ "auth": auth }));
    write_config(&path, &config)?;
    outln!(
        "logged in to {} (credentials in {})",
        a.registry,
        path.display()
    );
    Ok(0)
}

pub fn logout(a: LogoutArgs) -> anyhow::Result<i32> {
    let path = config_path()?;
    let mut config = read_config(&path)?;
    let removed = config
        .get_mut("auths")
        .and_then(|a| a.as_object_mut())
        .and_then(|auths| auths.remove(&a.registry))
        .is_some();
    if !removed {
        bail!(
            "not logged in to {} (no entry in {})",
            a.registry,
            path.display()
        );
    }
    write_config(&path, &config)?;
    outln!("logged out of {}", a.registry);
    Ok(0)
}
