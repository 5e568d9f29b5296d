//! What the container's init process does once youki has set up its
//! namespaces, cgroups and root: exec a Linux program, or run the plan's
//! module in this process.

use crate::plan::Plan;
use libcontainer::workload::default::DefaultExecutor;
use libcontainer::workload::{
    Executor, ExecutorError, ExecutorSetEnvsError, ExecutorValidationError,
};
use oci_spec::runtime::Spec;
use std::collections::HashMap;
use std::sync::Arc;

#[derive(Clone)]
pub struct WeftExecutor(Arc<Plan>);

impl WeftExecutor {
    pub fn new(plan: Arc<Plan>) -> Self {
        Self(plan)
    }
}

impl Executor for WeftExecutor {
    fn exec(&self, spec: &Spec) -> Result<(), ExecutorError> {
        match &*self.0 {
            Plan::Linux => DefaultExecutor {}.exec(spec),
            Plan::Wasm(plan) => std::process::exit(crate::job::run(plan)),
        }
    }

    fn validate(&self, spec: &Spec) -> Result<(), ExecutorValidationError> {
        match &*self.0 {
            // youki's check wants `PATH` set even for an absolute program,
            // which `execvp` does not need (images such as `pause` have
            // none).
            Plan::Linux if absolute_program(spec) => Ok(()),
            Plan::Linux => DefaultExecutor {}.validate(spec),
            // Checked in the shim's process before the container existed.
            Plan::Wasm(_) => Ok(()),
        }
    }

    fn setup_envs(&self, envs: HashMap<String, String>) -> Result<(), ExecutorSetEnvsError> {
        match &*self.0 {
            // A Linux program gets exactly the spec's environment.
            Plan::Linux => DefaultExecutor {}.setup_envs(envs),
            // The module gets the spec's environment through WASI; the
            // host process keeps its own.
            Plan::Wasm(_) => Ok(()),
        }
    }
}

fn absolute_program(spec: &Spec) -> bool {
    spec.process()
        .as_ref()
        .and_then(|p| p.args().as_ref())
        .and_then(|a| a.first())
        .is_some_and(|a| a.starts_with('/'))
}
