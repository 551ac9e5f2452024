//! What every command starts from: the project, its pipeline.yaml under one profile, and a plan
//! (keys of the wanted nodes) computed through the identity and content-hash memos.

use anyhow::Result;
use std::collections::BTreeSet;
use std::path::Path;

use pgolf_store::hashing::HashCache;

use crate::config::{self, PipelineFile};
use crate::graph::{select_profile, Graph};
use crate::identity::Identities;
use crate::plan::{Plan, Planner};
use crate::project::Project;
use crate::settings::Setting;

pub struct Session {
    pub project: Project,
    pub file: PipelineFile,
    pub graph: Graph,
}

impl Session {
    pub fn open(file: Option<&Path>, profile: Option<&str>) -> Result<Session> {
        let project = Project::locate(file)?;
        let file = config::load(&project)?;
        let profile = select_profile(&file, &project.yaml_display, profile)?;
        let graph = Graph::build(&file, &project.yaml_display, profile.as_deref())?;
        Ok(Session {
            project,
            file,
            graph,
        })
    }

    pub fn profile(&self) -> Option<&str> {
        self.graph.profile.as_deref()
    }

    /// Plans `wanted` (all nodes when `None`) of this session's graph.
    pub fn plan(&self, wanted: Option<&BTreeSet<String>>, settings: &[Setting]) -> Result<Plan> {
        plan_graph(&self.project, &self.graph, wanted, settings)
    }
}

pub fn plan_graph(
    project: &Project,
    graph: &Graph,
    wanted: Option<&BTreeSet<String>>,
    settings: &[Setting],
) -> Result<Plan> {
    let mut identities = Identities::open(&project.identity_cache());
    let hashes = HashCache::open(&project.hash_cache());
    let plan = Planner {
        project,
        graph,
        identities: &mut identities,
        hashes: &hashes,
    }
    .plan(wanted, settings);
    // The memos are only caches: failing to write them slows the next run, nothing more.
    if std::fs::create_dir_all(&project.out).is_ok() {
        let _ = identities.save();
        let _ = hashes.save();
    }
    Ok(plan)
}
