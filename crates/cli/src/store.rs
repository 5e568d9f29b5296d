//! The `--store` option shared by the subcommands that use the local store.

use anyhow::Context;
use clap::Args;
use std::path::PathBuf;
use weft_oci::Store;

#[derive(Args, Clone)]
pub struct StoreArgs {
    /// The local OCI image layout store [default: ~/.local/share/weft/store;
    /// env WEFT_STORE].
    #[arg(long, value_name = "DIR", env = "WEFT_STORE", global = true)]
    pub store: Option<PathBuf>,
}

impl StoreArgs {
    pub fn open(&self) -> anyhow::Result<Store> {
        let root = self
            .store
            .clone()
            .or_else(Store::default_root)
            .context("no data directory on this system; pass --store DIR")?;
        Ok(Store::open(root)?)
    }
}
