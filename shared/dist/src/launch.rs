//! torchrun's environment contract, and the [`Collective`] a process gets from it.
//!
//! A rank reads `RANK`, `WORLD_SIZE`, `LOCAL_RANK`, `LOCAL_WORLD_SIZE`, `MASTER_ADDR` and
//! `MASTER_PORT` (what `torchrun` and [`crate::spawn_ranks`] set) and joins the group through a
//! TCPStore at `MASTER_ADDR:MASTER_PORT`, as `torch.distributed.init_process_group("env://")`
//! does: under `TORCHELASTIC_USE_AGENT_STORE=True` the launcher hosts the store and every rank is
//! a client (keys under `/worker/attempt_<TORCHELASTIC_RESTART_COUNT>`); otherwise rank 0 hosts
//! it. Without `WORLD_SIZE` the process runs alone ([`Single`]) unless `PGOLF_DIST=c10d` asks for
//! a real group of one (world size 1 through Gloo or NCCL, to check it against [`Single`]).
//!
//! Knobs: `PGOLF_DIST_TIMEOUT_S` (each collective, default 60 s), `PGOLF_DIST_RENDEZVOUS_TIMEOUT_S`
//! (joining the store, default 300 s), `PGOLF_DIST_BACKEND` (gloo|nccl, default from the device).

use anyhow::{bail, Context, Result};
use pgolf_optim::{Collective, Single};
use std::time::Duration;
use tch::Device;

use crate::ffi::{Store, StoreRole};
use crate::group::{Backend, ProcessGroup};

pub const DEFAULT_TIMEOUT_S: f64 = 60.0;
pub const DEFAULT_RENDEZVOUS_TIMEOUT_S: f64 = 300.0;

/// Where this process sits in a launch (torchrun's variables).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Launch {
    pub rank: usize,
    pub world_size: usize,
    pub local_rank: usize,
    pub local_world_size: usize,
    pub master_addr: String,
    pub master_port: u16,
    /// The launcher hosts the store (torchrun's agent, [`crate::spawn_ranks`]); the value is the
    /// restart count that prefixes the keys.
    pub agent_store: Option<String>,
}

fn var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

fn parse<T: std::str::FromStr>(name: &str, value: &str) -> Result<T>
where
    T::Err: std::fmt::Display,
{
    value
        .trim()
        .parse()
        .map_err(|e| anyhow::anyhow!("{name}={value:?}: {e}"))
}

fn seconds(name: &str, default: f64) -> Result<Duration> {
    match var(name) {
        None => Ok(Duration::from_secs_f64(default)),
        Some(v) => {
            let s: f64 = parse(name, &v)?;
            if !(s > 0.0 && s.is_finite()) {
                bail!("{name}={v:?}: want a positive number of seconds");
            }
            Ok(Duration::from_secs_f64(s))
        }
    }
}

/// The collective timeout (`PGOLF_DIST_TIMEOUT_S`).
pub fn timeout_from_env() -> Result<Duration> {
    seconds("PGOLF_DIST_TIMEOUT_S", DEFAULT_TIMEOUT_S)
}

impl Launch {
    /// The launch described by the environment; `None` when `WORLD_SIZE` is not set.
    pub fn from_env() -> Result<Option<Launch>> {
        Launch::from_vars(var)
    }

    /// The launch described by the variables `var` returns (tests pass their own).
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Result<Option<Launch>> {
        let var = |name: &str| var(name).filter(|v| !v.trim().is_empty());
        let Some(world) = var("WORLD_SIZE") else {
            return Ok(None);
        };
        let world_size: usize = parse("WORLD_SIZE", &world)?;
        let get =
            |name: &str| var(name).with_context(|| format!("WORLD_SIZE is set but {name} is not"));
        let rank: usize = parse("RANK", &get("RANK")?)?;
        let local_rank: usize = match var("LOCAL_RANK") {
            Some(v) => parse("LOCAL_RANK", &v)?,
            None => rank,
        };
        let local_world_size: usize = match var("LOCAL_WORLD_SIZE") {
            Some(v) => parse("LOCAL_WORLD_SIZE", &v)?,
            None => world_size,
        };
        let agent_store = match var("TORCHELASTIC_USE_AGENT_STORE").as_deref() {
            Some("True") => Some(var("TORCHELASTIC_RESTART_COUNT").unwrap_or_else(|| "0".into())),
            _ => None,
        };
        let launch = Launch {
            rank,
            world_size,
            local_rank,
            local_world_size,
            master_addr: get("MASTER_ADDR")?,
            master_port: parse("MASTER_PORT", &get("MASTER_PORT")?)?,
            agent_store,
        };
        launch.check()?;
        Ok(Some(launch))
    }

    /// A world of one on this host (for `PGOLF_DIST=c10d`): rank 0 hosts a store on a free port.
    pub fn alone() -> Launch {
        Launch {
            rank: 0,
            world_size: 1,
            local_rank: 0,
            local_world_size: 1,
            master_addr: "127.0.0.1".into(),
            master_port: 0,
            agent_store: None,
        }
    }

    fn check(&self) -> Result<()> {
        if self.world_size == 0 || self.rank >= self.world_size {
            bail!("RANK={} with WORLD_SIZE={}", self.rank, self.world_size);
        }
        if self.local_world_size == 0 || self.local_rank >= self.local_world_size {
            bail!(
                "LOCAL_RANK={} with LOCAL_WORLD_SIZE={}",
                self.local_rank,
                self.local_world_size
            );
        }
        Ok(())
    }

    /// This rank's device for a run asked to use `device`: CUDA runs use GPU `LOCAL_RANK`.
    pub fn device(&self, device: Device) -> Device {
        match device {
            Device::Cuda(_) => Device::Cuda(self.local_rank),
            other => other,
        }
    }

    /// Rendezvous: the store, then the `backend` group (for NCCL on GPU `LOCAL_RANK`).
    pub fn join(&self, backend: Backend, timeout: Duration) -> Result<ProcessGroup> {
        let rendezvous = seconds(
            "PGOLF_DIST_RENDEZVOUS_TIMEOUT_S",
            DEFAULT_RENDEZVOUS_TIMEOUT_S,
        )?;
        let (role, prefix) = match &self.agent_store {
            Some(attempt) => (
                StoreRole::Client {
                    world: self.world_size,
                },
                format!("/worker/attempt_{attempt}/"),
            ),
            None if self.rank == 0 => (
                StoreRole::Server {
                    wait_for: self.world_size,
                },
                String::new(),
            ),
            None => (
                StoreRole::Client {
                    world: self.world_size,
                },
                String::new(),
            ),
        };
        let store = Store::tcp(
            &self.master_addr,
            self.master_port,
            role,
            rendezvous,
            &prefix,
        )
        .with_context(|| {
            format!(
                "rank {} of {}: rendezvous at MASTER_ADDR:MASTER_PORT",
                self.rank, self.world_size
            )
        })?;
        ProcessGroup::new(
            store,
            self.rank,
            self.world_size,
            backend,
            self.local_rank,
            timeout,
        )
    }
}

/// A process's place in a run and its collective.
pub struct Dist {
    pub comm: Box<dyn Collective>,
    /// The launch (a world of one when the process runs alone).
    pub launch: Launch,
    /// This rank's device (CUDA: GPU `LOCAL_RANK`).
    pub device: Device,
}

impl Dist {
    pub fn is_leader(&self) -> bool {
        self.comm.rank() == 0
    }
}

/// A `Dist` is its collective (so `&dist` goes wherever a `&dyn Collective` does).
impl Collective for Dist {
    fn rank(&self) -> usize {
        self.comm.rank()
    }
    fn world_size(&self) -> usize {
        self.comm.world_size()
    }
    fn backend(&self) -> &str {
        self.comm.backend()
    }
    fn all_reduce_sum(&self, t: &mut tch::Tensor) -> Result<()> {
        self.comm.all_reduce_sum(t)
    }
    fn all_reduce_avg(&self, t: &mut tch::Tensor) -> Result<()> {
        self.comm.all_reduce_avg(t)
    }
    fn all_reduce_max(&self, t: &mut tch::Tensor) -> Result<()> {
        self.comm.all_reduce_max(t)
    }
    fn broadcast(&self, t: &mut tch::Tensor, root: usize) -> Result<()> {
        self.comm.broadcast(t, root)
    }
    fn all_gather(&self, t: &tch::Tensor) -> Result<tch::Tensor> {
        self.comm.all_gather(t)
    }
    fn reduce_scatter_sum(&self, t: &tch::Tensor) -> Result<tch::Tensor> {
        self.comm.reduce_scatter_sum(t)
    }
    fn barrier(&self) -> Result<()> {
        self.comm.barrier()
    }
}

/// The collective for a run on `device` under the environment's launch (module docs): a c10d
/// group when `WORLD_SIZE` is set (or `PGOLF_DIST=c10d`), else [`Single`].
pub fn from_env(device: Device) -> Result<Dist> {
    let forced = match var("PGOLF_DIST").as_deref() {
        None | Some("auto") => false,
        Some("c10d") => true,
        Some(other) => bail!("PGOLF_DIST={other:?}: want c10d or auto"),
    };
    let launch = match Launch::from_env()? {
        Some(l) => l,
        None if forced => Launch::alone(),
        None => {
            return Ok(Dist {
                comm: Box::new(Single),
                launch: Launch::alone(),
                device,
            })
        }
    };
    let device = launch.device(device);
    let backend = match var("PGOLF_DIST_BACKEND") {
        Some(b) => Backend::parse(&b)?,
        None => Backend::for_device(device),
    };
    if backend == Backend::Nccl && !device.is_cuda() {
        bail!("the NCCL backend needs a CUDA device (this run uses {device:?})");
    }
    let group = launch.join(backend, timeout_from_env()?)?;
    Ok(Dist {
        comm: Box::new(group),
        launch,
        device,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn vars(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |name| map.get(name).cloned()
    }

    const TORCHRUN: &[(&str, &str)] = &[
        ("RANK", "5"),
        ("WORLD_SIZE", "16"),
        ("LOCAL_RANK", "1"),
        ("LOCAL_WORLD_SIZE", "8"),
        ("MASTER_ADDR", "node0"),
        ("MASTER_PORT", "29500"),
    ];

    #[test]
    fn reads_torchruns_contract() -> Result<()> {
        let l = Launch::from_vars(vars(TORCHRUN))?.expect("a launch");
        assert_eq!(
            l,
            Launch {
                rank: 5,
                world_size: 16,
                local_rank: 1,
                local_world_size: 8,
                master_addr: "node0".into(),
                master_port: 29500,
                agent_store: None,
            }
        );
        assert_eq!(l.device(Device::Cuda(0)), Device::Cuda(1));
        assert_eq!(l.device(Device::Cpu), Device::Cpu);
        let mut agent = TORCHRUN.to_vec();
        agent.push(("TORCHELASTIC_USE_AGENT_STORE", "True"));
        agent.push(("TORCHELASTIC_RESTART_COUNT", "2"));
        let l = Launch::from_vars(vars(&agent))?.expect("a launch");
        assert_eq!(l.agent_store.as_deref(), Some("2"));
        Ok(())
    }

    #[test]
    fn no_world_size_is_no_launch_and_bad_values_are_errors() -> Result<()> {
        assert_eq!(Launch::from_vars(vars(&[("RANK", "0")]))?, None);
        fn without(name: &str) -> Vec<(&'static str, &'static str)> {
            TORCHRUN
                .iter()
                .copied()
                .filter(|(k, _)| *k != name)
                .collect()
        }
        for missing in ["RANK", "MASTER_ADDR", "MASTER_PORT"] {
            let err = Launch::from_vars(vars(&without(missing))).unwrap_err();
            assert!(format!("{err}").contains(missing), "{err}");
        }
        fn with(name: &'static str, value: &'static str) -> Vec<(&'static str, &'static str)> {
            let mut v = without(name);
            v.push((name, value));
            v
        }
        for (name, value) in [
            ("RANK", "16"),
            ("RANK", "-1"),
            ("WORLD_SIZE", "0"),
            ("LOCAL_RANK", "8"),
            ("MASTER_PORT", "70000"),
        ] {
            assert!(
                Launch::from_vars(vars(&with(name, value))).is_err(),
                "{name}={value} accepted"
            );
        }
        // Without LOCAL_*, one node holds every rank.
        let l = Launch::from_vars(vars(&without("LOCAL_RANK")))?.unwrap();
        assert_eq!(l.local_rank, 5);
        Ok(())
    }
}
