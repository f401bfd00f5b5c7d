//! A node's whole play planned against given facts and state, touching no
//! node: for fixture tests and explanations.

use super::instances::{instances, Inst};
use super::segment::{plan_one, Planned};
use super::{NodeJob, Shared};
use crate::facts::Facts;
use crate::setup::context::with_facts;
use crate::setup::modules::Change;
use crate::setup::state::{NodeState, Probe};

/// A task's planned outcome, computed without touching any node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Preview {
    Ok,
    Skip(String),
    Fail(String),
    Changes(Vec<Change>),
}

/// Plan a node's whole play (handlers aside) against given facts and
/// state, as if every change succeeded; anything the state does not tell
/// counts as missing. For fixture tests and explanations.
pub fn preview(sh: &Shared, job: &NodeJob, facts: &Facts, state: &NodeState) -> Vec<(String, Preview)> {
    let ctx = with_facts(job.ctx.clone(), facts);
    let insts: Vec<Inst> = job.tasks.iter().flat_map(|t| instances(sh, t, &ctx)).collect();
    let mut st = state.clone();
    for i in &insts {
        if let Inst::Run { args, .. } = i {
            for p in args.probes() {
                if st.has(&p) {
                    continue;
                }
                match p {
                    Probe::File(f) => {
                        st.files.insert(f, None);
                    }
                    Probe::User(u) => {
                        st.users.insert(u, None);
                    }
                    Probe::Service(s) => {
                        st.services.insert(s, Default::default());
                    }
                    Probe::Daemon(p) => {
                        st.daemons.insert(p, false);
                    }
                }
            }
        }
    }
    let homes: Vec<String> =
        st.users.values().flatten().map(|u| u.home.trim_end_matches('/').to_string()).collect();
    for h in homes {
        for f in [format!("{h}/.ssh"), format!("{h}/.ssh/authorized_keys")] {
            st.files.entry(f).or_insert(None);
        }
    }
    insts
        .into_iter()
        .filter_map(|i| match i {
            Inst::Flush | Inst::Wait => None,
            Inst::Skip { name, reason, .. } => Some((name, Preview::Skip(reason))),
            Inst::Fail { name, error, .. } => Some((name, Preview::Fail(error.to_string()))),
            Inst::Run { name, args, .. } => Some((
                name,
                match plan_one(&args, &mut st) {
                    Planned::Skip(why) => Preview::Skip(why),
                    Planned::Ok => Preview::Ok,
                    Planned::Changes(c) => Preview::Changes(c),
                    Planned::Fail(e) => Preview::Fail(e.to_string()),
                },
            )),
        })
        .collect()
}
