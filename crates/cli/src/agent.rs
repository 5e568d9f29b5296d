//! `weft agent`: the edge device agent (`weft-agent`), and `weft agent
//! status` to ask a running one.

use anyhow::Context;
use clap::{Args, Subcommand};
use std::path::PathBuf;

/// Keep this device's model modules current: from a registry or the local
/// store, offline-first, verified, with health-gated rollback.
#[derive(Args)]
#[command(
    args_conflicts_with_subcommands = true,
    after_help = "The configuration (TOML) lists the modules and where they come from; see docs/agent.md.\n\nExamples:\n  weft agent --config /etc/weft/agent.toml\n  weft agent status\n  weft agent status --json --addr 127.0.0.1:9400"
)]
pub struct AgentArgs {
    #[command(subcommand)]
    pub command: Option<AgentCommand>,
    /// The agent's configuration file.
    #[arg(long, value_name = "FILE", env = "WEFT_AGENT_CONFIG")]
    pub config: Option<PathBuf>,

    #[command(flatten)]
    pub gpu: crate::run::GpuArgs,
}

#[derive(Subcommand)]
pub enum AgentCommand {
    /// Show what a running agent runs: per module the desired and running
    /// version, health, the last transition and its reason.
    Status(StatusArgs),
}

#[derive(Args)]
pub struct StatusArgs {
    /// The agent's status address (`[agent] status` in its configuration).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:9400")]
    pub addr: String,
    /// Print the status document as JSON.
    #[arg(long)]
    pub json: bool,
}

pub fn exec(a: AgentArgs) -> anyhow::Result<i32> {
    match a.command {
        Some(AgentCommand::Status(s)) => {
            let doc = crate::remote::runtime()?.block_on(weft_agent::fetch_status(&s.addr))?;
            if s.json {
                outln!("{}", serde_json::to_string_pretty(&doc)?);
            } else {
                outln!("{}", weft_agent::render(&doc).trim_end());
            }
            Ok(0)
        }
        None => {
            // The agent builds its runtime from its configuration file,
            // which has no engine choice yet: refuse rather than ignore.
            anyhow::ensure!(
                a.gpu.cpu.engine() == weft_nn::CpuEngine::Tract,
                "weft agent runs ONNX graphs on tract; --cpu-engine onnxruntime (WEFT_CPU_ENGINE) is for weft run, serve and train"
            );
            a.gpu.apply();
            let config = a.config.context(
                "no configuration: weft agent --config FILE (or WEFT_AGENT_CONFIG); see docs/agent.md",
            )?;
            crate::remote::runtime()?
                .block_on(weft_agent::run(&config, crate::serve::shutdown_signal()))?;
            Ok(0)
        }
    }
}
